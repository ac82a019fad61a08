//! End-to-end: external identity provider mode. A stand-in provider (a key pair
//! and a JWKS served over HTTP on loopback by this test) signs tokens; the real
//! binary validates them with the key set it fetches.

mod common;
mod oauth;

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::HostBuilder;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth::{Oauth, assert_audited, initialize};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Idp {
    key: EncodingKey,
    jwks_url: String,
}

fn key() -> (p256::SecretKey, EncodingKey) {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes[0] = 1;
    let k = p256::SecretKey::from_slice(&bytes).unwrap();
    let pem = k.to_pkcs8_pem(LineEnding::LF).unwrap();
    let enc = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    (k, enc)
}

/// Serves `jwks` at `/jwks.json` on an ephemeral loopback port, forever.
async fn serve_jwks(jwks: Value) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = jwks.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn idp() -> Idp {
    let (k, key) = key();
    let point = k.public_key().to_encoded_point(false);
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "idp-1", "alg": "ES256", "use": "sig",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap()),
    }]});
    let addr = serve_jwks(jwks).await;
    Idp {
        key,
        jwks_url: format!("http://{addr}/jwks.json"),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn external_idp_tokens_are_validated_with_its_jwks() {
    let idp = idp().await;
    let issuer = "https://sso.example.com/realms/team";
    let audience = "stockade-prod";
    let config = format!(
        "[auth]\nmode = \"external\"\nissuer = \"{issuer}\"\njwks_url = \"{}\"\naudience = \"{audience}\"\n",
        idp.jwks_url
    );
    let mut host = HostBuilder::new().auth(None).config(&config).start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();

    // Discovery points at the provider; the built-in server is not mounted.
    let prm = o
        .get("/.well-known/oauth-protected-resource/mcp")
        .await
        .json();
    assert_eq!(prm["authorization_servers"], json!([issuer]));
    assert_eq!(prm["resource"], format!("{base}/mcp"));
    for path in [
        "/authorize",
        "/.well-known/oauth-authorization-server",
        "/jwks.json",
    ] {
        assert_eq!(o.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        o.post_form("/token", &[("grant_type", "x")]).await.status,
        StatusCode::NOT_FOUND
    );
    let r = o.mcp(None, &initialize()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("resource_metadata=")
    );

    let good = json!({"iss": issuer, "aud": audience, "sub": "alice@example.com", "exp": now() + 300,
                      "iat": now(), "azp": "claude", "scope": "mcp"});
    let r = o
        .mcp(Some(&sign(&idp.key, "idp-1", &good)), &initialize())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An audience array containing ours is fine too.
    let mut multi = good.clone();
    multi["aud"] = json!(["account", audience]);
    assert_eq!(
        o.mcp(Some(&sign(&idp.key, "idp-1", &multi)), &initialize())
            .await
            .status,
        StatusCode::OK
    );

    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("another-api");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let mut not_yet = good.clone();
    not_yet["nbf"] = json!(now() + 3600);
    let (_, other_key) = key();
    let alg_none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","kid":"idp-1"}"#),
        B64.encode(good.to_string())
    );
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("idp-1".into());
        jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(b"guess")).unwrap()
    };
    for (token, reason) in [
        (sign(&idp.key, "idp-1", &wrong_iss), "wrong issuer"),
        (sign(&idp.key, "idp-1", &wrong_aud), "wrong audience"),
        (sign(&idp.key, "idp-1", &expired), "expired"),
        (sign(&idp.key, "idp-1", &not_yet), "not yet valid"),
        (sign(&other_key, "idp-1", &good), "bad signature"),
        (sign(&other_key, "unknown-kid", &good), "unknown key id"),
        (alg_none, "algorithm not accepted"),
        (hs256, "algorithm not accepted"),
    ] {
        let r = o.mcp(Some(&token), &initialize()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        assert_audited(
            &data,
            "request_denied",
            &[("reason", &format!("invalid token: {reason}"))],
        );
    }
    assert!(host.is_running());
}

#[test]
fn external_mode_needs_issuer_and_jwks_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[auth]\nmode = \"external\"\njwks_url = \"http://example.com/jwks\"\n",
    )
    .unwrap();
    let (ok, out) = common::run_stockade_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--plugins",
            "plugins",
            "--data",
            "data",
            "--config",
            "c.toml",
        ],
        dir.path(),
        &[],
    );
    assert!(!ok);
    assert!(
        out.contains("auth.issuer") && out.contains("auth.jwks_url"),
        "all problems at once: {out}"
    );
}
