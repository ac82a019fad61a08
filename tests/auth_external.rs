//! End-to-end: external identity provider mode. A stand-in provider (key pairs
//! and a JWKS served over HTTP on loopback by this test) signs tokens; the real
//! binary validates them with the key set it fetches. The stand-in can be made
//! to hang, to redirect, or to send an endless body, to show how the host copes
//! with a provider that is down or hostile.

mod common;
mod oauth;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Host, HostBuilder};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth::{Oauth, assert_audited, audited_since, initialize};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://sso.example.com/realms/team";
const AUDIENCE: &str = "stockade-prod";

/// A 2048-bit RSA key made for this test only (`openssl genpkey`).
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

/// What the stand-in provider does with a request (any path but `/old-certs`,
/// which always redirects to `/jwks.json`).
#[derive(Clone, Debug)]
enum Mode {
    /// 200 with the published key set.
    Serve,
    /// Reads the request and never answers (a provider that is down but still
    /// accepts connections: the worst case for a client).
    Hang,
    /// 302 to this location.
    Redirect(String),
    /// 200 with no length and this many bytes of body.
    Huge(usize),
}

/// The stand-in provider's state, shared with its server task.
struct Stand {
    mode: Mode,
    jwks: Value,
    /// Requests received.
    hits: usize,
    /// Body bytes written (huge mode).
    written: usize,
    /// A write failed: the host closed the connection mid-body (huge mode).
    cut_short: bool,
}

struct Idp {
    key: EncodingKey,
    jwks_url: String,
    state: Arc<Mutex<Stand>>,
}

impl Idp {
    fn mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }
    fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }
    fn publish(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }
    fn config(&self) -> String {
        config(&self.jwks_url)
    }
}

fn config(jwks_url: &str) -> String {
    format!(
        "[auth]\nmode = \"external\"\nissuer = \"{ISSUER}\"\njwks_url = \"{jwks_url}\"\naudience = \"{AUDIENCE}\"\n"
    )
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

fn ec_jwk(k: &p256::SecretKey, kid: &str) -> Value {
    let point = k.public_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap()),
    })
}

/// The public JWK of `key`, as a provider publishes it.
fn jwk_of(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let mut v = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    v
}

fn ed25519() -> EncodingKey {
    // PKCS#8 for Ed25519: a fixed 16-byte prefix, then the 32-byte seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    der.extend_from_slice(&seed);
    EncodingKey::from_ed_der(&der)
}

/// Serves the stand-in provider on an ephemeral loopback port, forever.
async fn serve(state: Arc<Mutex<Stand>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (mode, body) = {
                    let mut st = state.lock().unwrap();
                    st.hits += 1;
                    (st.mode.clone(), st.jwks.to_string())
                };
                let mode = if request.starts_with("GET /old-certs ") {
                    Mode::Redirect("/jwks.json".into())
                } else {
                    mode
                };
                match mode {
                    Mode::Serve => {
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                    Mode::Hang => tokio::time::sleep(Duration::from_secs(120)).await,
                    Mode::Redirect(to) => {
                        let resp = format!(
                            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                    Mode::Huge(total) => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"keys\":[";
                        if s.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b' '; 64 << 10];
                        let mut sent = 0;
                        while sent < total {
                            if s.write_all(&chunk).await.is_err() {
                                state.lock().unwrap().cut_short = true;
                                return;
                            }
                            sent += chunk.len();
                            state.lock().unwrap().written = sent;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A stand-in provider with one ES256 key (`idp-1`) that answers `mode`.
async fn idp_with(mode: Mode) -> Idp {
    let (k, key) = key();
    let state = Arc::new(Mutex::new(Stand {
        mode,
        jwks: json!({"keys": [ec_jwk(&k, "idp-1")]}),
        hits: 0,
        written: 0,
        cut_short: false,
    }));
    let addr = serve(state.clone()).await;
    Idp {
        key,
        jwks_url: format!("http://{addr}/jwks.json"),
        state,
    }
}

async fn idp() -> Idp {
    idp_with(Mode::Serve).await
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn good_claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com", "exp": now() + 300,
           "iat": now(), "azp": "claude", "scope": "mcp"})
}

fn sign(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    sign_typed(key, Algorithm::ES256, kid, Some("JWT"), claims)
}

fn sign_typed(
    key: &EncodingKey,
    alg: Algorithm,
    kid: &str,
    typ: Option<&str>,
    claims: &Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// POSTs `initialize` with `token`; returns the status and how long it took.
async fn timed(base: &str, token: &str) -> (StatusCode, Duration) {
    let start = Instant::now();
    let r = Oauth::new(base).mcp(Some(token), &initialize()).await;
    (r.status, start.elapsed())
}

fn wait_fetch_log(host: &Host, needle: &str) {
    assert!(
        host.wait_log(needle, Duration::from_secs(30)),
        "no `{needle}` in the log:\n{}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn external_idp_tokens_are_validated_with_its_jwks() {
    let idp = idp().await;
    // Providers publish RSA and Ed25519 keys too; each verifies its own tokens.
    let rsa = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
    let ed = ed25519();
    {
        let mut st = idp.state.lock().unwrap();
        let keys = st.jwks["keys"].as_array_mut().unwrap();
        keys.push(jwk_of(&rsa, Algorithm::RS256, "idp-rsa"));
        keys.push(jwk_of(&ed, Algorithm::EdDSA, "idp-ed"));
    }
    // The configured URL redirects (same scheme, loopback) to the key set.
    let config = config(&idp.jwks_url.replace("/jwks.json", "/old-certs"));
    let mut host = HostBuilder::new().auth(None).config(&config).start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();

    // Discovery points at the provider; the built-in server is not mounted.
    let prm = o
        .get("/.well-known/oauth-protected-resource/mcp")
        .await
        .json();
    assert_eq!(prm["authorization_servers"], json!([ISSUER]));
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

    let good = good_claims();
    let r = o
        .mcp(Some(&sign(&idp.key, "idp-1", &good)), &initialize())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An audience array containing ours is fine too.
    let mut multi = good.clone();
    multi["aud"] = json!(["account", AUDIENCE]);
    assert_eq!(
        o.mcp(Some(&sign(&idp.key, "idp-1", &multi)), &initialize())
            .await
            .status,
        StatusCode::OK
    );
    // RS256 and EdDSA keys as the provider publishes them; access-token types
    // (RFC 9068) and tokens without `typ` are accepted.
    for (key, alg, kid, typ) in [
        (&rsa, Algorithm::RS256, "idp-rsa", Some("JWT")),
        (&ed, Algorithm::EdDSA, "idp-ed", Some("JWT")),
        (&idp.key, Algorithm::ES256, "idp-1", Some("at+jwt")),
        (
            &idp.key,
            Algorithm::ES256,
            "idp-1",
            Some("application/at+jwt"),
        ),
        (&idp.key, Algorithm::ES256, "idp-1", None),
    ] {
        let r = o
            .mcp(Some(&sign_typed(key, alg, kid, typ, &good)), &initialize())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{alg:?} {typ:?}: {}", r.body);
    }

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
    let typed = |typ: &str| sign_typed(&idp.key, Algorithm::ES256, "idp-1", Some(typ), &good);
    for (token, reason) in [
        (sign(&idp.key, "idp-1", &wrong_iss), "wrong issuer"),
        (sign(&idp.key, "idp-1", &wrong_aud), "wrong audience"),
        (sign(&idp.key, "idp-1", &expired), "expired"),
        (sign(&idp.key, "idp-1", &not_yet), "not yet valid"),
        (sign(&other_key, "idp-1", &good), "bad signature"),
        (sign(&other_key, "unknown-kid", &good), "unknown key id"),
        (alg_none, "algorithm not accepted"),
        (hs256, "algorithm not accepted"),
        // Not an access token: a DPoP proof, a logout token.
        (typed("dpop+jwt"), "missing or invalid claims"),
        (typed("logout+jwt"), "missing or invalid claims"),
    ] {
        // Some tokens share a reason: each check reads only the lines its
        // own request wrote (issue 23), never an earlier token's.
        let mark = oauth::audit_mark(&data);
        let r = o.mcp(Some(&token), &initialize()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        audited_since(
            &data,
            mark,
            "request_denied",
            &[("reason", &format!("invalid token: {reason}"))],
        );
    }
    assert!(host.is_running());
}

/// (a) The provider goes down after the first fetch: tokens with a known key
/// are still served, each at once, while an unknown key's refetch hangs; the
/// refetch is one for all, then rate limited; service resumes with the
/// provider.
#[tokio::test(flavor = "multi_thread")]
async fn external_idp_down_known_keys_are_served_without_waiting() {
    let idp = idp().await;
    let mut host = HostBuilder::new().auth(None).config(&idp.config()).start();
    let base = host.base_url();
    wait_fetch_log(&host, "fetched the identity provider's JWKS");
    let good = sign(&idp.key, "idp-1", &good_claims());
    assert_eq!(timed(&base, &good).await.0, StatusCode::OK);
    assert_eq!(idp.hits(), 1);

    idp.mode(Mode::Hang);
    // Past the refetch interval (10 s) since the start-up fetch.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let (new_k, new_key) = key();
    let rotated = sign(&new_key, "idp-2", &good_claims());
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let (base, t) = (base.clone(), rotated.clone());
            tokio::spawn(async move { timed(&base, &t).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let (status, took) = timed(&base, &good).await;
        assert_eq!(status, StatusCode::OK);
        assert!(took < Duration::from_secs(1), "a known key waited {took:?}");
    }
    for w in waiting {
        let (status, took) = w.await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            took < Duration::from_secs(7),
            "an unknown key waited {took:?}"
        );
    }
    assert_eq!(
        idp.hits(),
        2,
        "one refetch for the three unknown-key requests"
    );
    wait_fetch_log(&host, "timed out");
    // Right after that attempt: refused at once, no fetch.
    for _ in 0..3 {
        let (status, took) = timed(&base, &rotated).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(idp.hits(), 2);
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[("reason", "invalid token: unknown key id")],
    );

    // The provider is back, with the new key.
    idp.publish(json!({"keys": [ec_jwk(&new_k, "idp-2")]}));
    idp.mode(Mode::Serve);
    until_served(&base, &rotated).await;
    assert_eq!(idp.hits(), 3);
    assert!(host.is_running());
}

/// Sends `token` to `/mcp` every 500 ms until it is served (within 20 s); no
/// answer may take 7 s or more on the way.
async fn until_served(base: &str, token: &str) {
    let start = Instant::now();
    loop {
        let (status, took) = timed(base, token).await;
        assert!(took < Duration::from_secs(7), "waited {took:?}");
        if status == StatusCode::OK {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never recovered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A provider hanging from the start: requests share the one fetch in flight
/// (each waits at most its timeout) instead of queueing a fetch each.
#[tokio::test(flavor = "multi_thread")]
async fn external_idp_hanging_at_start_does_not_queue_requests() {
    let idp = idp_with(Mode::Hang).await;
    let mut host = HostBuilder::new().auth(None).config(&idp.config()).start();
    let base = host.base_url();
    let good = sign(&idp.key, "idp-1", &good_claims());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (base, t) = (base.clone(), good.clone());
            tokio::spawn(async move { timed(&base, &t).await })
        })
        .collect();
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(took < Duration::from_secs(7), "waited {took:?}");
    }
    assert_eq!(idp.hits(), 1, "one fetch, not one per request");
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[("reason", "invalid token: key set unavailable")],
    );
    wait_fetch_log(&host, "cannot fetch the identity provider's JWKS");

    idp.mode(Mode::Serve);
    until_served(&base, &good).await;
    assert_eq!(idp.hits(), 2);
    assert!(host.is_running());
}

/// (b) An endless key set: the host stops reading at 1 MiB, closes the
/// connection, says so, and refuses tokens (no key set) while it keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn external_idp_huge_jwks_is_cut_short() {
    let idp = idp_with(Mode::Huge(512 << 20)).await;
    let mut host = HostBuilder::new().auth(None).config(&idp.config()).start();
    wait_fetch_log(&host, "key set larger than 1024 KiB; stopped reading");
    let start = Instant::now();
    while !idp.state.lock().unwrap().cut_short && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let st = idp.state.lock().unwrap();
        assert!(st.cut_short, "the host kept reading: {} bytes", st.written);
        assert!(st.written < 64 << 20, "{} bytes written", st.written);
    }
    let peak_kib = common::proc_status(host.pid(), "VmHWM");
    assert!(peak_kib < 400 << 10, "peak memory {peak_kib} kB");
    let good = sign(&idp.key, "idp-1", &good_claims());
    let r = Oauth::new(&host.base_url())
        .mcp(Some(&good), &initialize())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[("reason", "invalid token: key set unavailable")],
    );
    assert!(host.is_running());
}

/// (c) A redirect off https-or-loopback is not followed. (Loopback here has no
/// TLS, so https → http itself is covered by the unit tests of
/// `auth::external::check_redirect`, the policy this client runs.)
#[tokio::test(flavor = "multi_thread")]
async fn external_idp_insecure_redirect_is_not_followed() {
    let idp = idp_with(Mode::Redirect("http://jwks.example.invalid/certs".into())).await;
    let mut host = HostBuilder::new().auth(None).config(&idp.config()).start();
    wait_fetch_log(&host, "refused: only https (or http on a loopback host)");
    let good = sign(&idp.key, "idp-1", &good_claims());
    let r = Oauth::new(&host.base_url())
        .mcp(Some(&good), &initialize())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[("reason", "invalid token: key set unavailable")],
    );
    assert_eq!(idp.hits(), 1);
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

/// Lists the tools `token` sees through the rmcp client and, when `greet` is
/// among them, calls it: (tool names, the call's text or `None`).
async fn list_and_greet(url: &str, token: &str) -> (Vec<String>, Option<String>) {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    let client = ().serve(transport).await.expect("MCP client connects with a bearer token");
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    let mut text = None;
    if names.iter().any(|n| n == "greet") {
        let args = json!({"name": "Ada"}).as_object().unwrap().clone();
        let r = client
            .call_tool(
                rmcp::model::CallToolRequestParams::new("greet".to_owned()).with_arguments(args),
            )
            .await
            .unwrap();
        text = Some(common::result_text(&r));
    }
    client.cancel().await.ok();
    (names, text)
}

/// Issue 23: in external mode the provider's scope claim meets plugin scopes
/// as built-in tokens do (tests/auth_flow.rs
/// `plugin_scopes_are_enforced_with_a_403_challenge`): with `[plugins.template]
/// scope = "admin"`, a token whose `scope` (or `scp`, a list or a string, as
/// some providers send it) lacks `admin`, or that has no scope claim, does
/// not see the plugin's tool and is refused it with 403 `insufficient_scope`
/// naming the scopes to ask for (audited with the provider's subject); a
/// token carrying `admin` in any of those forms lists and calls it.
#[tokio::test(flavor = "multi_thread")]
async fn external_idp_scope_claims_meet_plugin_scopes() {
    let idp = idp().await;
    let config = format!(
        "{}scopes_supported = [\"mcp\", \"admin\"]\n[plugins.template]\nscope = \"admin\"\n",
        idp.config()
    );
    let mut host = HostBuilder::new()
        .plugin(&common::bundled("template"), "template")
        .auth(None)
        .config(&config)
        .start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();
    let with = |claim: &str, value: Value| {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("scope");
        if !claim.is_empty() {
            c[claim] = value;
        }
        sign(&idp.key, "idp-1", &c)
    };

    for (token, asked, what) in [
        (with("scope", json!("mcp")), "mcp admin", "scope mcp"),
        (with("scp", json!(["mcp"])), "mcp admin", "scp [mcp]"),
        (
            with("scope", json!("mcp administrator")),
            "mcp administrator admin",
            "a longer name",
        ),
        (with("", Value::Null), "admin", "no scope claim"),
    ] {
        let mark = oauth::audit_mark(&data);
        let r = o.mcp(Some(&token), &oauth::tools_call("greet")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "insufficient_scope", "{what}");
        let www = r.header("www-authenticate").unwrap();
        assert!(
            www.starts_with(&format!(
                "Bearer error=\"insufficient_scope\", scope=\"{asked}\", resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""
            )),
            "{what}: {www}"
        );
        audited_since(
            &data,
            mark,
            "request_denied",
            &[
                ("status", "403"),
                ("subject", "alice@example.com"),
                ("reason", "tool `greet` needs scope `admin`"),
            ],
        );
        let (names, text) = list_and_greet(&host.mcp_url(), &token).await;
        assert!(!names.iter().any(|n| n == "greet"), "{what}: {names:?}");
        assert_eq!(text, None);
    }

    for (token, what) in [
        (with("scope", json!("mcp admin")), "scope"),
        (with("scp", json!(["mcp", "admin"])), "scp list"),
        (with("scp", json!("admin mcp")), "scp string"),
    ] {
        let (names, text) = list_and_greet(&host.mcp_url(), &token).await;
        assert!(names.iter().any(|n| n == "greet"), "{what}: {names:?}");
        let text = text.unwrap();
        assert!(text.contains("Hello, Ada"), "{what}: {text}");
    }
    assert_audited(
        &data,
        "tool_call",
        &[
            ("subject", "alice@example.com"),
            ("client_id", "claude"),
            ("target", "greet"),
            ("outcome", "ok"),
        ],
    );
    let calls = oauth::audit(&data)
        .into_iter()
        .filter(|l| l["event"] == "tool_call" && l["target"] == "greet")
        .count();
    assert_eq!(calls, 3, "one call per token carrying `admin`");
    assert!(host.is_running());
}
