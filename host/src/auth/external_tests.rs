//! Unit tests of the external provider: token types, key parsing, the redirect
//! policy, bounded fetches and the key cache, against a stand-in provider on
//! loopback whose behaviour each test sets.

use std::net::SocketAddr;
use std::sync::Mutex as StdMutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const ISS: &str = "https://idp.example";
const AUD: &str = "https://mcp.example/mcp";

/// A 2048-bit RSA key made for these tests only (`openssl genpkey`).
const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDLrxkXjGk+7muR\n\
4FgrM/8KUjnupc0kwDC9ArLDJ0DSsvUNUZijAu1GgdccmQ4Wx58ubRB7VZrNh4nD\n\
gcH83P0l4YPfHCo6BmSYstFgYp9NnHRcPA2z+JUcp6w3gF9t7JReDIGQ536m3VSY\n\
ERqb1rxpEi95XTf5bKHfpveLmpTCHtPno6dV7b6+l8bn65DCZqvuyXepOD3Z74fE\n\
MoLprspO8nET5t611z/ys3P3pLAuoRJbIswUOwVfbS+HrXQ+HyCwY0FMyecMHXON\n\
uqTIjEyAm3A5zi3uqvMpMV40/XSA2xHuXjaCs8dotIb34up6AsR+5/9DQSRz3KS7\n\
rk/UFav1AgMBAAECggEAMB3rNY7sBfvY2Zs/+OTNqSiHmwL8FWR5nw0WIdgSDjRM\n\
g5r1Df1RBEkEAjN+Co+Z4SPOsvQkH82XE+KBazThcKN3vasvpomAFjqYD8b8jx8Y\n\
tflR22QsBZruqiXfZV5wJk+aBBtL5it/InVX7dyqob+0C12kLX4mN2mALTCVV834\n\
UcFh1DXpSb0jUFGpmd+mBBeLigrUWb38FW1CABfKzv8+M2zCOWD1p2btjnt8EWbN\n\
VuJYJTWiizBJ1K9fukXzMdbdLFr+kaYl72qFV5OTp2LMJYnDCnuPzrC1BQ5lML8W\n\
UTOYBWKCQDbj8bK+LwkUy6LAgw0vjmInG+aa5CIWQQKBgQD3U7BLUySjXnTRSymf\n\
KWpdv1xCFKQ42Swby1LInIZP0EPlKp1E5k8XXEIZzC3hvLxvqOasZ9+NIlkJGALw\n\
rfoaqbWqBArvCKyY29Yn9/kOTH+BK9e6nAPF+N3+uLPsRP2+8pzxY1E4Ch73LKnM\n\
ZR8NnlEUtu3NIhSSJ8GD0Pl1PQKBgQDS053Ydmen7n+sEnkXI/X9oSF7y9VLZqYG\n\
WxJV1+0RlOeKYQU/46b/E/gqW/6eWHKHjOc/VEsz95VfmWoV355m09B/MEVaSe+F\n\
lAWtjy3k5ZeGz212VAgzd9DhhfQbR7t5q9uS9Grd5nxb9l50y+oqewEBI38d2Yqa\n\
RBBmo2utGQKBgQC+mx2Tf3kN+n6WyZFDGzzhENf+CUBim2P166VZ+9865Wtd0pCv\n\
h7rOawh6LzPw825Zs1ZK6iaL8zug2YNyjvHf2IirhUAT5aB2kX2jAeVMEsJ0/x/b\n\
rd7ulJQpeZkX7jeMEBfJpFv0j0A8B4y4e/oJmcgs6ams3KXz2XW2q7eElQKBgC05\n\
/lOQWv44eKUGNXnUWhH1vgQbnv8U3yrf4JgPwSiTY/RYidLB2HJB62vS3lVDrhYM\n\
EROR1qwoQaAHfi2BEi8G42RVi5sp3zstnOY1n+fJpO7jkpzeu/+mhWXL4aj0g3A/\n\
gNQOoNpHdogX2v19PRet2XJQFhXmNAiR717FUfUJAoGAd2EOxU+iWvt5LY8+L6MK\n\
tqch9Ko83nb/YGMAjJUUmhh2xOq7f6LrB3qLo2/U15V0F9tg6VmbGwHobJ41exuF\n\
Q7E11HW4rb8Z4AFdGP6oAjjjMA3S4ZyxXnK4ISpxowIHH48noc85srK1NVgT1w7L\n\
MBGxbEFmRP8q7emlDIUWAW0=\n\
-----END PRIVATE KEY-----";

// ---- stand-in provider --------------------------------------------------------

#[derive(Clone, Debug)]
enum Mode {
    /// 200 with the published set.
    Serve,
    /// Reads the request and never answers.
    Hang,
    /// A status without a body.
    Status(u16),
    /// 302 to this location.
    Redirect(String),
    /// 200 without a length, then this many bytes (connection closes at the end).
    Huge(usize),
    /// 200 declaring this length, then silence.
    Declare(u64),
}

struct Stand {
    mode: Mode,
    jwks: String,
    hits: usize,
    written: usize,
    cut_short: bool,
}

struct Provider {
    state: Arc<StdMutex<Stand>>,
    url: String,
}

impl Provider {
    async fn start(jwks: Value) -> Provider {
        let state = Arc::new(StdMutex::new(Stand {
            mode: Mode::Serve,
            jwks: jwks.to_string(),
            hits: 0,
            written: 0,
            cut_short: false,
        }));
        let addr = serve(state.clone()).await;
        Provider {
            state,
            url: format!("http://{addr}/jwks.json"),
        }
    }
    fn mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }
    fn publish(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks.to_string();
    }
    fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }
}

async fn serve(state: Arc<StdMutex<Stand>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let (mode, jwks) = {
                    let mut st = state.lock().unwrap();
                    st.hits += 1;
                    (st.mode.clone(), st.jwks.clone())
                };
                match mode {
                    Mode::Serve => {
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                            jwks.len()
                        );
                        let _ = s.write_all(r.as_bytes()).await;
                    }
                    Mode::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    Mode::Status(code) => {
                        let r = format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = s.write_all(r.as_bytes()).await;
                    }
                    Mode::Redirect(to) => {
                        let r = format!(
                            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = s.write_all(r.as_bytes()).await;
                    }
                    Mode::Huge(total) => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"keys\":[";
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b' '; 16 << 10];
                        let mut sent = 0;
                        while sent < total {
                            if s.write_all(&chunk).await.is_err() {
                                state.lock().unwrap().cut_short = true;
                                break;
                            }
                            sent += chunk.len();
                            state.lock().unwrap().written = sent;
                        }
                    }
                    Mode::Declare(len) => {
                        let r = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                        let _ = s.write_all(r.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            });
        }
    });
    addr
}

// ---- keys and tokens ------------------------------------------------------------

struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn signer(kid: &str, alg: Algorithm, key: EncodingKey) -> Signer {
    install_crypto();
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    Signer {
        kid: kid.into(),
        alg,
        key,
        jwk,
    }
}

fn install_crypto() {
    super::super::keys::install_crypto_provider();
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).unwrap();
    b[0] = 1;
    b
}

fn es256(kid: &str) -> Signer {
    let k = p256::SecretKey::from_slice(&random32()).unwrap();
    let der = k.to_pkcs8_der().unwrap();
    signer(
        kid,
        Algorithm::ES256,
        EncodingKey::from_ec_der(der.as_bytes()),
    )
}

fn ed25519(kid: &str) -> Signer {
    // PKCS#8 for Ed25519: a fixed 16-byte prefix, then the 32-byte seed.
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(&random32());
    signer(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(&der))
}

fn rs256(kid: &str) -> Signer {
    signer(
        kid,
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 300, "scope": "mcp"})
}

fn token_as(s: &Signer, kid: &str, typ: Option<&str>) -> String {
    let mut h = Header::new(s.alg);
    h.kid = Some(kid.into());
    h.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&h, &claims(), &s.key).unwrap()
}

fn token(s: &Signer) -> String {
    token_as(s, &s.kid, Some("JWT"))
}

fn set(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()})
}

fn idp(url: &str, timing: Timing) -> ExternalIdp {
    ExternalIdp::with_timing(ISS.into(), AUD.into(), url.into(), timing).unwrap()
}

const QUICK: Timing = Timing {
    refresh_after: Duration::from_secs(600),
    max_stale: Duration::from_secs(3600),
    min_refetch: Duration::from_millis(500),
    fetch_timeout: Duration::from_secs(2),
    max_wait: Duration::from_secs(2),
};

// ---- token types ------------------------------------------------------------------

#[test]
fn token_types() {
    for ok in [
        None,
        Some("JWT"),
        Some("jwt"),
        Some("at+jwt"),
        Some("AT+JWT"),
        Some("application/at+jwt"),
        Some("Application/JWT"),
    ] {
        assert!(type_accepted(ok), "{ok:?}");
    }
    for refused in [
        "dpop+jwt",
        "logout+jwt",
        "secevent+jwt",
        "JOSE",
        "id_token",
        "",
        "application/",
        "application/dpop+jwt",
        "at+jwt ",
        "xapplication/jwt",
    ] {
        assert!(!type_accepted(Some(refused)), "{refused:?}");
    }
}

#[tokio::test]
async fn a_typ_other_than_an_access_token_is_refused() {
    let s = es256("k1");
    let p = Provider::start(set(&[&s])).await;
    let idp = idp(&p.url, QUICK);
    for typ in [
        None,
        Some("JWT"),
        Some("at+jwt"),
        Some("application/at+jwt"),
    ] {
        let who = idp.validate(&token_as(&s, "k1", typ)).await;
        assert_eq!(who.map(|p| p.subject).as_deref(), Ok("alice"), "{typ:?}");
    }
    for typ in ["dpop+jwt", "logout+jwt", "JOSE+JSON"] {
        assert_eq!(
            idp.validate(&token_as(&s, "k1", Some(typ))).await.err(),
            Some(TokenRejection::Claims),
            "{typ}"
        );
    }
}

// ---- keys as providers publish them -----------------------------------------------

#[tokio::test]
async fn rsa_ec_and_ed25519_keys_verify_their_own_algorithms() {
    let (rsa, ec, ed) = (rs256("rsa"), es256("ec"), ed25519("ed"));
    // One key without `alg` (used for every algorithm of its type).
    let mut ec_no_alg = ec.jwk.clone();
    ec_no_alg.as_object_mut().unwrap().remove("alg");
    let p = Provider::start(json!({"keys": [rsa.jwk, ec_no_alg, ed.jwk]})).await;
    let idp = idp(&p.url, QUICK);
    for s in [&rsa, &ec, &ed] {
        let who = idp.validate(&token(s)).await.unwrap();
        assert_eq!(who.subject, "alice");
        assert_eq!(who.scopes, vec!["mcp".to_owned()]);
    }
    // The RSA key is published for RS256: a PS256 token naming it is refused.
    let ps = {
        let mut h = Header::new(Algorithm::PS256);
        h.kid = Some("rsa".into());
        jsonwebtoken::encode(&h, &claims(), &rsa.key).unwrap()
    };
    assert_eq!(
        idp.validate(&ps).await.err(),
        Some(TokenRejection::Algorithm)
    );
    // Without `kid`, the keys that can verify the algorithm are tried.
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = None;
    let no_kid = jsonwebtoken::encode(&h, &claims(), &ed.key).unwrap();
    assert!(idp.validate(&no_kid).await.is_ok());
}

#[test]
fn odd_keys_are_skipped_one_by_one() {
    let ec = es256("good");
    let rsa = rs256("rsa");
    let mut enc = rsa.jwk.clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc");
    let mut oaep = rsa.jwk.clone();
    oaep["alg"] = json!("RSA-OAEP");
    let mut verify_ops = rsa.jwk.clone();
    verify_ops["key_ops"] = json!(["verify"]);
    let mut sign_ops = rsa.jwk.clone();
    sign_ops["key_ops"] = json!(["sign"]);
    let mut wrong_alg = ec.jwk.clone();
    wrong_alg["alg"] = json!("RS256");
    let body = json!({"keys": [
        ec.jwk,
        {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
        {"kty": "oct", "kid": "hmac", "k": B64.encode(b"secret")},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": B64.encode([7u8; 32])},
        {"kty": "weird"},
        "not even an object",
        enc, oaep, verify_ops, sign_ops, wrong_alg,
    ]});
    let (keys, skipped) = parse_jwks(body.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["good", "rsa"]);
    assert_eq!(keys[1].algorithms, [Algorithm::RS256]);
    assert_eq!(skipped, 9);
    assert!(matches!(
        parse_jwks(b"{\"nokeys\": 1}"),
        Err(FetchError::NotJwks(_))
    ));
}

// ---- redirects ---------------------------------------------------------------------

#[test]
fn redirect_policy() {
    let u = |s: &str| url::Url::parse(s).unwrap();
    let https = u("https://idp.example/certs");
    let loopback = u("http://127.0.0.1:8080/certs");
    assert_eq!(
        check_redirect(std::slice::from_ref(&https), &u("https://cdn.example/k")),
        Ok(())
    );
    assert_eq!(
        check_redirect(std::slice::from_ref(&loopback), &u("http://localhost/k")),
        Ok(())
    );
    assert_eq!(
        check_redirect(std::slice::from_ref(&loopback), &https),
        Ok(())
    );
    assert!(matches!(
        check_redirect(std::slice::from_ref(&https), &u("http://idp.example/certs")),
        Err(RedirectRefusal::Downgrade { .. })
    ));
    // Down to http even on loopback, even later in the chain.
    assert!(matches!(
        check_redirect(std::slice::from_ref(&https), &loopback),
        Err(RedirectRefusal::Downgrade { .. })
    ));
    assert!(matches!(
        check_redirect(&[loopback.clone(), https.clone()], &loopback),
        Err(RedirectRefusal::Downgrade { .. })
    ));
    assert!(matches!(
        check_redirect(
            std::slice::from_ref(&loopback),
            &u("http://idp.example/certs")
        ),
        Err(RedirectRefusal::Insecure { .. })
    ));
    assert!(matches!(
        check_redirect(std::slice::from_ref(&loopback), &u("ftp://127.0.0.1/certs")),
        Err(RedirectRefusal::Insecure { .. })
    ));
    let chain = vec![https.clone(); 3];
    assert_eq!(check_redirect(&chain, &https), Ok(()));
    let chain = vec![https.clone(); 4];
    assert_eq!(
        check_redirect(&chain, &https),
        Err(RedirectRefusal::TooMany(3))
    );
}

#[tokio::test]
async fn the_client_applies_the_redirect_policy() {
    let s = es256("k1");
    let target = Provider::start(set(&[&s])).await;
    let p = Provider::start(json!({"keys": []})).await;
    let idp = idp(&p.url, QUICK);
    let http = &idp.keys.http;
    let t = QUICK.fetch_timeout;

    // Same scheme, loopback: followed.
    p.mode(Mode::Redirect(target.url.clone()));
    let (keys, _) = fetch_jwks(http, &p.url, t).await.unwrap();
    assert_eq!(keys.len(), 1);
    // To plain http elsewhere: refused before any connection.
    p.mode(Mode::Redirect("http://jwks.example.invalid/certs".into()));
    let e = fetch_jwks(http, &p.url, t).await.err().unwrap().to_string();
    assert!(e.contains("refused: only https"), "{e}");
    // A loop: at most three.
    p.mode(Mode::Redirect(p.url.clone()));
    let before = p.hits();
    let e = fetch_jwks(http, &p.url, t).await.err().unwrap().to_string();
    assert!(e.contains("more than 3 redirects"), "{e}");
    assert_eq!(p.hits() - before, 4);
}

// ---- bounded fetches --------------------------------------------------------------

#[tokio::test]
async fn a_huge_body_is_abandoned_at_the_limit() {
    let p = Provider::start(json!({})).await;
    p.mode(Mode::Huge(256 << 20));
    let http = reqwest::Client::new();
    let e = fetch_body(&http, &p.url, QUICK.fetch_timeout, MAX_JWKS_BYTES)
        .await
        .err()
        .unwrap();
    let FetchError::TooLarge { limit, read } = e else {
        panic!("{e}")
    };
    assert_eq!(limit, MAX_JWKS_BYTES);
    assert!(
        read > MAX_JWKS_BYTES && read <= 2 * MAX_JWKS_BYTES,
        "{read}"
    );
    // The connection is closed: the provider's writes fail long before 256 MiB.
    let start = Instant::now();
    while !p.state.lock().unwrap().cut_short && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = p.state.lock().unwrap();
    assert!(
        st.cut_short,
        "the provider kept writing: {} bytes",
        st.written
    );
    assert!(st.written < 64 << 20, "{} bytes written", st.written);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_not_read() {
    let p = Provider::start(json!({})).await;
    p.mode(Mode::Declare(MAX_JWKS_BYTES as u64 + 1));
    let http = reqwest::Client::new();
    let start = Instant::now();
    let e = fetch_body(&http, &p.url, QUICK.fetch_timeout, MAX_JWKS_BYTES)
        .await
        .err()
        .unwrap();
    // Refused on the header: the (never sent) body is not waited for.
    assert!(matches!(e, FetchError::Declared { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(e.to_string().contains("larger than 1024 KiB"), "{e}");
}

#[tokio::test]
async fn a_hanging_provider_times_out() {
    let p = Provider::start(json!({})).await;
    p.mode(Mode::Hang);
    let timing = Timing {
        fetch_timeout: Duration::from_millis(300),
        max_wait: Duration::from_millis(300),
        ..QUICK
    };
    let idp = idp(&p.url, timing);
    let start = Instant::now();
    let e = fetch_jwks(&idp.keys.http, &p.url, timing.fetch_timeout)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, FetchError::Timeout(_)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

// ---- the cache ---------------------------------------------------------------------

/// While a refresh hangs, tokens with a known `kid` are answered from the
/// cache at once, and only one fetch is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_keys_never_wait_for_a_fetch() {
    let s = es256("k1");
    let p = Provider::start(set(&[&s])).await;
    let timing = Timing {
        refresh_after: Duration::ZERO,
        min_refetch: Duration::ZERO,
        fetch_timeout: Duration::from_secs(3),
        max_wait: Duration::from_secs(3),
        ..QUICK
    };
    let idp = idp(&p.url, timing);
    idp.validate(&token(&s)).await.unwrap();
    // (That request may have started a refresh already: let it end.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = p.hits();
    p.mode(Mode::Hang);
    for _ in 0..20 {
        let start = Instant::now();
        idp.validate(&token(&s)).await.unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }
    // The set was due for a refresh on every request: one fetch started, and
    // it is still hanging.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.hits(), before + 1);
}

/// The cached set outlives the provider for `max_stale`, then every token is
/// refused until a fetch succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_set_outlives_the_provider_then_fails_closed() {
    let s = es256("k1");
    let p = Provider::start(set(&[&s])).await;
    let timing = Timing {
        refresh_after: Duration::from_millis(100),
        max_stale: Duration::from_millis(800),
        min_refetch: Duration::from_millis(50),
        fetch_timeout: Duration::from_millis(300),
        max_wait: Duration::from_millis(300),
    };
    let idp = idp(&p.url, timing);
    idp.validate(&token(&s)).await.unwrap();
    let fetched = Instant::now();
    p.mode(Mode::Status(503));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Due for a refresh that fails: still served.
    idp.validate(&token(&s)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    idp.validate(&token(&s)).await.unwrap();
    assert!(p.hits() >= 2, "a refresh was tried");
    tokio::time::sleep(Duration::from_millis(900).saturating_sub(fetched.elapsed())).await;
    assert_eq!(
        idp.validate(&token(&s)).await.err(),
        Some(TokenRejection::KeysUnavailable)
    );
    // The provider is back: the next fetch restores service.
    p.mode(Mode::Serve);
    tokio::time::sleep(Duration::from_millis(100)).await;
    idp.validate(&token(&s)).await.unwrap();
}

/// An unknown `kid` starts one fetch that concurrent requests share; within
/// `min_refetch` of an attempt, unknown kids are refused without a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_share_one_rate_limited_fetch() {
    let (old, new) = (es256("old"), es256("new"));
    let p = Provider::start(set(&[&old])).await;
    let timing = Timing {
        min_refetch: Duration::from_millis(700),
        ..QUICK
    };
    let idp = Arc::new(idp(&p.url, timing));
    idp.validate(&token(&old)).await.unwrap();
    assert_eq!(p.hits(), 1);
    // The provider rotates; too soon for another fetch.
    p.publish(set(&[&old, &new]));
    assert_eq!(
        idp.validate(&token(&new)).await.err(),
        Some(TokenRejection::UnknownKey)
    );
    assert_eq!(p.hits(), 1);
    tokio::time::sleep(timing.min_refetch).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (idp, t) = (idp.clone(), token(&new));
        tasks.push(tokio::spawn(async move { idp.validate(&t).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().subject, "alice");
    }
    assert_eq!(p.hits(), 2, "one fetch for all of them");
    // Made-up kids right after: refused, no fetch.
    for i in 0..20 {
        let start = Instant::now();
        assert_eq!(
            idp.validate(&token_as(&new, &format!("made-up-{i}"), None))
                .await
                .err(),
            Some(TokenRejection::UnknownKey)
        );
        assert!(start.elapsed() < Duration::from_millis(100));
    }
    assert_eq!(p.hits(), 2);
}

/// With no key set and a hanging provider, requests wait together for the
/// one fetch, at most `max_wait`, instead of queueing one fetch each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_do_not_queue_behind_a_hanging_fetch() {
    let s = es256("k1");
    let p = Provider::start(set(&[&s])).await;
    p.mode(Mode::Hang);
    let timing = Timing {
        fetch_timeout: Duration::from_millis(600),
        max_wait: Duration::from_millis(600),
        min_refetch: Duration::from_secs(10),
        ..QUICK
    };
    let idp = Arc::new(idp(&p.url, timing));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (idp, t) = (idp.clone(), token(&s));
        tasks.push(tokio::spawn(async move { idp.validate(&t).await }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().err(),
            Some(TokenRejection::KeysUnavailable)
        );
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(p.hits(), 1);
}
