use super::*;

const ISS: &str = "http://127.0.0.1:8080";
const AUD: &str = "http://127.0.0.1:8080/mcp";

fn claims(exp_offset: i64) -> AccessClaims {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    AccessClaims {
        iss: ISS.into(),
        sub: "operator".into(),
        aud: AUD.into(),
        exp: (now + exp_offset) as u64,
        iat: now as u64,
        jti: "j".into(),
        client_id: "c".into(),
        scope: "mcp".into(),
        fam: "f".into(),
    }
}

fn b64(v: &serde_json::Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn signs_and_verifies() {
    let key = SigningKey::generate();
    let expected = claims(600);
    let token = key.sign(&expected);
    let got = key.verify(&token, ISS, AUD).unwrap();
    assert_eq!(got, expected);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(key.kid()));
    assert_eq!(key.jwks()["keys"][0]["kid"], key.kid());
}

#[test]
fn refuses_alg_none() {
    let key = SigningKey::generate();
    let c = serde_json::to_value(claims(600)).unwrap();
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    assert_eq!(key.verify(&token, ISS, AUD), Err(TokenRejection::Algorithm));
    let token = format!("{}.{}.sig", b64(&json!({"alg": "none"})), b64(&c));
    assert_eq!(key.verify(&token, ISS, AUD), Err(TokenRejection::Algorithm));
}

#[test]
fn refuses_hs256_even_keyed_with_the_public_key() {
    let key = SigningKey::generate();
    // The classic confusion attack: HMAC keyed with the published public key.
    let secret = serde_json::to_vec(&key.jwks()).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(600),
        &EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert_eq!(key.verify(&token, ISS, AUD), Err(TokenRejection::Algorithm));
}

#[test]
fn refuses_another_key() {
    let key = SigningKey::generate();
    let other = SigningKey::generate();
    let token = other.sign(&claims(600));
    assert_eq!(
        key.verify(&token, ISS, AUD),
        Err(TokenRejection::UnknownKey)
    );
    // Same kid forged onto another key's signature.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid().to_owned());
    let forged = jsonwebtoken::encode(&header, &claims(600), &other.encoding).unwrap();
    assert_eq!(
        key.verify(&forged, ISS, AUD),
        Err(TokenRejection::Signature)
    );
}

#[test]
fn refuses_tampered_payload() {
    let key = SigningKey::generate();
    let token = key.sign(&claims(600));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut c = serde_json::to_value(claims(600)).unwrap();
    c["scope"] = json!("mcp admin");
    parts[1] = b64(&c);
    assert_eq!(
        key.verify(&parts.join("."), ISS, AUD),
        Err(TokenRejection::Signature)
    );
}

#[test]
fn refuses_expired_wrong_audience_wrong_issuer() {
    let key = SigningKey::generate();
    assert_eq!(
        key.verify(&key.sign(&claims(-120)), ISS, AUD),
        Err(TokenRejection::Expired)
    );
    // Within the leeway it still passes.
    assert!(key.verify(&key.sign(&claims(-5)), ISS, AUD).is_ok());
    assert!(
        key.verify_ignoring_expiry(&key.sign(&claims(-120)), ISS, AUD)
            .is_ok()
    );
    let token = key.sign(&claims(600));
    assert_eq!(
        key.verify(&token, ISS, "http://other/mcp"),
        Err(TokenRejection::Audience)
    );
    assert_eq!(
        key.verify(&token, "http://other", AUD),
        Err(TokenRejection::Issuer)
    );
    assert_eq!(
        key.verify("not-a-jwt", ISS, AUD),
        Err(TokenRejection::Malformed)
    );
}

#[test]
fn key_is_created_once_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let a = SigningKey::load_or_create(&keys).unwrap();
    let b = SigningKey::load_or_create(&keys).unwrap();
    assert_eq!(a.kid(), b.kid());
    let token = a.sign(&claims(600));
    assert!(
        b.verify(&token, ISS, AUD).is_ok(),
        "a reloaded key verifies earlier tokens"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("es256.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    std::fs::write(keys.join("es256.pem"), "garbage").unwrap();
    assert!(matches!(
        SigningKey::load_or_create(&keys),
        Err(KeyError::Invalid { .. })
    ));
}

#[test]
fn refuses_a_token_not_yet_valid() {
    let key = SigningKey::generate();
    let now = jsonwebtoken::get_current_timestamp();
    let mut v = serde_json::to_value(claims(600)).unwrap();
    v["nbf"] = serde_json::json!(now + 3600);
    let early = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &v, &key.encoding).unwrap();
    assert_eq!(
        key.verify(&early, ISS, AUD),
        Err(TokenRejection::NotYetValid)
    );
    v["nbf"] = serde_json::json!(now - 10);
    let ready = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &v, &key.encoding).unwrap();
    assert!(key.verify(&ready, ISS, AUD).is_ok());
}
