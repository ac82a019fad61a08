//! End-to-end: attacks on the authorization server and the `/mcp` gate of the
//! real binary. Each is answered with the right status and an audit line, and
//! the host keeps running.

mod common;
mod oauth;

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{HostBuilder, bundled};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth::{
    Oauth, REDIRECT, assert_audited, audit_mark, audit_text, audited_since, initialize, tokens,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with the host's own key (read from its data directory), so that
/// only the claim under test is wrong.
fn sign_with_host_key(data: &Path, claims: &Value) -> String {
    let pem = std::fs::read(data.join("keys/es256.pem")).unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

/// The claims of an operator token of family `fam` (`"id client"`: the
/// family's id and its client, which the gate checks against each other).
fn claims(base: &str, fam: &str) -> Value {
    let (fam, client) = fam.split_once(' ').unwrap_or((fam, "c"));
    json!({
        "iss": base, "sub": "operator", "aud": format!("{base}/mcp"),
        "exp": now() + 600, "iat": now(), "jti": "x", "client_id": client, "scope": "mcp", "fam": fam,
    })
}

fn assert_invalid_token(r: &oauth::Resp, base: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.contains(&format!(
            "resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""
        )),
        "{www}"
    );
    assert!(www.contains("error=\"invalid_token\""), "{www}");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_replay_revokes_the_family() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let client_id = o.register().await;
    let (code, verifier) = o.login(&client_id, PASSWORD).await;
    let t = tokens(&o.exchange(&client_id, &code, &verifier).await);
    assert_eq!(
        o.mcp(Some(&t.access), &initialize()).await.status,
        StatusCode::OK
    );

    let r = o.exchange(&client_id, &code, &verifier).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_audited(
        &host.data_dir(),
        "reuse_detected",
        &[("kind", "authorization_code"), ("client_id", &client_id)],
    );
    assert_audited(
        &host.data_dir(),
        "token_revoked",
        &[("reason", "authorization code replayed")],
    );
    // What the code issued is dead: access and refresh token.
    assert_invalid_token(&o.mcp(Some(&t.access), &initialize()).await, &o.base);
    assert_eq!(
        o.refresh(&client_id, &t.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn pkce_is_required_and_checked() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let client_id = o.register().await;

    // Wrong verifier: refused, and the code is spent.
    let (code, verifier) = o.login(&client_id, PASSWORD).await;
    let (other_verifier, _) = oauth::pkce();
    let r = o.exchange(&client_id, &code, &other_verifier).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "PKCE code_verifier does not match")],
    );
    assert_eq!(
        o.exchange(&client_id, &code, &verifier).await.status,
        StatusCode::BAD_REQUEST
    );
    // No verifier at all.
    let (code, _) = o.login(&client_id, PASSWORD).await;
    let r = o
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &client_id),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_request");

    // No challenge, or `plain`: redirected back with an error (the redirect URI is valid).
    let (_, challenge) = oauth::pkce();
    for (extra, why) in [
        (vec![("code_challenge", "")], "code_challenge is missing"),
        (vec![("code_challenge_method", "plain")], "must be S256"),
        (vec![("code_challenge_method", "")], "must be S256"),
    ] {
        let r = o
            .authorize(&o.authorize_query(&client_id, &challenge, "st", &extra))
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{extra:?}");
        assert!(r.header("location").unwrap().starts_with(REDIRECT));
        assert_eq!(
            r.location_param("error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(
            r.location_param("state").as_deref(),
            Some("st"),
            "state echoed on errors"
        );
        assert_audited(
            &data,
            "request_denied",
            &[("path", "/authorize"), ("reason", why)],
        );
    }
    // Other redirected errors.
    let r = o
        .authorize(&o.authorize_query(&client_id, &challenge, "st", &[("response_type", "token")]))
        .await;
    assert_eq!(
        r.location_param("error").as_deref(),
        Some("unsupported_response_type")
    );
    let r = o
        .authorize(&o.authorize_query(&client_id, &challenge, "st", &[("scope", "root")]))
        .await;
    assert_eq!(r.location_param("error").as_deref(), Some("invalid_scope"));
    let r = o
        .authorize(&o.authorize_query(
            &client_id,
            &challenge,
            "st",
            &[("resource", "https://other.example/mcp")],
        ))
        .await;
    assert_eq!(r.location_param("error").as_deref(), Some("invalid_target"));
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_uris_are_exact_and_never_open_redirects() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let client_id = o.register().await;
    let (_, challenge) = oauth::pkce();

    for evil in [
        "https://evil.example/cb",
        "http://127.0.0.1:45678/callback/extra",
        "http://127.0.0.1:45679/callback",
        "http://127.0.0.1:45678/callback?x=1",
        "http://localhost:45678/callback",
    ] {
        let r = o
            .authorize(&o.authorize_query(&client_id, &challenge, "st", &[("redirect_uri", evil)]))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{evil}");
        assert!(r.header("location").is_none(), "never redirected to {evil}");
        assert!(
            r.body.contains("redirect_uri is not one of the URIs"),
            "{}",
            r.body
        );
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    }
    assert_audited(
        &data,
        "request_denied",
        &[
            ("path", "/authorize"),
            ("reason", "redirect_uri is not one of"),
        ],
    );
    // Unknown client with an attacker's redirect URI: a page, no redirect.
    let r = o
        .authorize(&o.authorize_query(
            "stk_nobody",
            &challenge,
            "st",
            &[("redirect_uri", "https://evil.example/cb")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.header("location").is_none());
    assert_audited(&data, "request_denied", &[("reason", "unknown client_id")]);
    // Even a broken request with a bad redirect URI is not redirected.
    let r = o
        .authorize(&o.authorize_query(
            &client_id,
            "",
            "st",
            &[
                ("redirect_uri", "https://evil.example/cb"),
                ("response_type", "token"),
            ],
        ))
        .await;
    assert!(r.header("location").is_none());
    // Markup is escaped on the page that echoes it (issue 23.5): the client's
    // registered name on the login page is shown escaped, so the check cannot
    // pass by omission; the error page for a refused redirect URI echoes
    // nothing of it.
    let r = o
        .authorize(&o.authorize_query(&client_id, &challenge, "st", &[]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("Test &lt;Client&gt;"),
        "the name is shown: {}",
        r.body
    );
    assert!(!r.body.contains("Test <Client>"), "{}", r.body);
    let r = o
        .authorize(&o.authorize_query(
            &client_id,
            &challenge,
            "st",
            &[(
                "redirect_uri",
                "http://127.0.0.1:9/cb?<script>alert(1)</script>",
            )],
        ))
        .await;
    assert!(r.header("location").is_none());
    assert!(
        r.body.contains("redirect_uri is not one of the URIs"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("<script>alert") && !r.body.contains("alert(1)"),
        "{}",
        r.body
    );

    // Registration refuses bad redirect URIs.
    for bad in [
        "http://evil.example/cb",
        "https://a.example/cb#frag",
        "javascript:alert(1)",
        "not a uri",
    ] {
        let r = o.register_raw(&[bad]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json()["error"], "invalid_redirect_uri");
    }
    assert_audited(
        &data,
        "request_denied",
        &[("path", "/register"), ("reason", "plain http")],
    );
    let r = o.post_json("/register", &json!({"client_name": "x"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The token request's redirect_uri must equal the one at /authorize.
    let reg = o
        .register_raw(&[REDIRECT, "http://127.0.0.1:45678/other"])
        .await;
    let two = reg.json()["client_id"].as_str().unwrap().to_owned();
    let (code, verifier) = o.login(&two, PASSWORD).await;
    let r = o
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("client_id", &two),
                ("redirect_uri", "http://127.0.0.1:45678/other"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "redirect_uri differs")],
    );
    // Named at /authorize, so required at /token (RFC 6749 §4.1.3).
    let (code, verifier) = o.login(&two, PASSWORD).await;
    let r = o
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("client_id", &two),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_audited(
        &data,
        "request_denied",
        &[(
            "reason",
            "redirect_uri missing (it was given at /authorize)",
        )],
    );
    // A code is bound to its client.
    let (code, verifier) = o.login(&two, PASSWORD).await;
    let r = o.exchange(&client_id, &code, &verifier).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "code issued to another client")],
    );
    // Client ID Metadata Documents on private addresses are refused.
    let r = o
        .authorize(&o.authorize_query("https://127.0.0.1:9/client.json", &challenge, "st", &[]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("non-public"), "{}", r.body);
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "client metadata document refused")],
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_token_reuse_revokes_the_family() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let (client_id, t1) = o.full_login(PASSWORD).await;
    let t2 = tokens(&o.refresh(&client_id, &t1.refresh).await);
    let t3 = tokens(&o.refresh(&client_id, &t2.refresh).await);
    assert_eq!(
        o.mcp(Some(&t3.access), &initialize()).await.status,
        StatusCode::OK
    );

    // Someone replays the first refresh token.
    let r = o.refresh(&client_id, &t1.refresh).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_audited(
        &host.data_dir(),
        "reuse_detected",
        &[("kind", "refresh_token"), ("client_id", &client_id)],
    );
    assert_audited(
        &host.data_dir(),
        "token_revoked",
        &[("reason", "refresh token reused")],
    );
    // The whole family is gone: the live refresh token and the access tokens.
    assert_eq!(
        o.refresh(&client_id, &t3.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_invalid_token(&o.mcp(Some(&t3.access), &initialize()).await, &o.base);
    // Another family of the same client is unaffected.
    let (code, verifier) = o.login(&client_id, PASSWORD).await;
    let fresh = tokens(&o.exchange(&client_id, &code, &verifier).await);
    assert_eq!(
        o.mcp(Some(&fresh.access), &initialize()).await.status,
        StatusCode::OK
    );
    // A refresh token presented by another client is refused and changes nothing.
    let other = o.register().await;
    assert_eq!(
        o.refresh(&other, &fresh.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        o.refresh(&client_id, &fresh.refresh).await.status,
        StatusCode::OK
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_the_same_way() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();
    let (_, t) = o.full_login(PASSWORD).await;
    let fam = {
        let c = jwt_part(&t.access, 1);
        // The family and its client: a token of that family names both.
        format!(
            "{} {}",
            c["fam"].as_str().unwrap(),
            c["client_id"].as_str().unwrap()
        )
    };
    // Sanity: a token signed with the host key and correct claims passes.
    assert_eq!(
        o.mcp(
            Some(&sign_with_host_key(&data, &claims(&base, &fam))),
            &initialize()
        )
        .await
        .status,
        StatusCode::OK
    );

    let mut expired = claims(&base, &fam);
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = claims(&base, &fam);
    wrong_aud["aud"] = json!("https://other.example/mcp");
    let mut wrong_iss = claims(&base, &fam);
    wrong_iss["iss"] = json!("https://other.example");
    let unknown_family = claims(&base, "no-such-family");
    let payload = B64.encode(serde_json::to_vec(&claims(&base, &fam)).unwrap());
    let alg_none = format!(
        "{}.{payload}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let jwks = o.get("/jwks.json").await.body;
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&base, &fam),
        &EncodingKey::from_secret(jwks.as_bytes()),
    )
    .unwrap();
    let other_key = {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).unwrap();
        bytes[0] = 1; // well below the group order
        let k = p256::SecretKey::from_slice(&bytes).unwrap();
        use p256::pkcs8::EncodePrivateKey;
        let pem = k.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims(&base, &fam),
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let mut tampered: Vec<String> = t.access.split('.').map(str::to_owned).collect();
    let mut c = claims(&base, &fam);
    c["scope"] = json!("mcp admin");
    tampered[1] = B64.encode(serde_json::to_vec(&c).unwrap());
    let tampered = tampered.join(".");

    for (token, reason) in [
        (sign_with_host_key(&data, &expired), "expired"),
        (sign_with_host_key(&data, &wrong_aud), "wrong audience"),
        (sign_with_host_key(&data, &wrong_iss), "wrong issuer"),
        (sign_with_host_key(&data, &unknown_family), "revoked"),
        (alg_none, "algorithm not accepted"),
        (hs256, "algorithm not accepted"),
        (other_key, "bad signature"),
        (tampered, "bad signature"),
        ("garbage".to_owned(), "malformed"),
    ] {
        // Some tokens share a reason: each check reads only the lines its
        // own request wrote (issue 23), never an earlier token's.
        let mark = audit_mark(&data);
        let r = o.mcp(Some(&token), &initialize()).await;
        assert_invalid_token(&r, &base);
        audited_since(
            &data,
            mark,
            "request_denied",
            &[
                ("reason", &format!("invalid token: {reason}")),
                ("status", "401"),
            ],
        );
    }
    // Not a bearer scheme.
    let r = o
        .http
        .post(format!("{base}/mcp"))
        .header("authorization", format!("Basic {}", t.access))
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Tokens only in the Authorization header: the query string is refused.
    for q in ["access_token", "token"] {
        let r = o
            .http
            .post(format!("{base}/mcp?{q}={}", t.access))
            .json(&initialize())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("resource_metadata")
        );
    }
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "token in the query string")],
    );
    let log = host.log();
    let audit = audit_text(&data);
    assert!(
        !log.contains(&t.access) && !audit.contains(&t.access),
        "tokens in the query string are not logged"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn brute_force_logins_are_locked_out() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let client_id = o.register().await;
    let (_, challenge) = oauth::pkce();
    let mut page = o
        .authorize(&o.authorize_query(&client_id, &challenge, "st", &[]))
        .await;
    for i in 0..5 {
        let r = o.submit_login(&page, &format!("guess-number-{i}")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(r.body.contains("Wrong password"));
        page = r;
    }
    assert_audited(
        &data,
        "login_failed",
        &[("reason", "locked out for 30s"), ("client_id", &client_id)],
    );
    // Locked out now: even the right password is not checked.
    let r = o.submit_login(&page, PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(r.header("location").is_none());
    assert_audited(
        &data,
        "login_failed",
        &[("reason", "locked out after repeated failures")],
    );
    // A forged or reused CSRF token is refused.
    let r = o
        .post_form("/authorize", &[("csrf", "forged"), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_audited(&data, "request_denied", &[("reason", "CSRF token unknown")]);
    let audit = audit_text(&data);
    assert!(
        !audit.contains("guess-number") && !host.log().contains("guess-number"),
        "attempted passwords are not logged"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_malformed_requests() {
    let mut host = HostBuilder::new()
        .password(PASSWORD)
        .config("max_body_kib = 8\n")
        .start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();
    let (client_id, t) = o.full_login(PASSWORD).await;
    let big = "x".repeat(9 * 1024);

    // Declared too large: refused before anything reads it, on every route.
    for path in ["/mcp", "/token", "/register", "/authorize", "/revoke"] {
        let r = o
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(&t.access)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
    assert_audited(
        &data,
        "request_denied",
        &[("status", "413"), ("path", "/mcp")],
    );
    // Chunked (no Content-Length) and too large: the gate counts.
    let status = chunked_post(host.addr, "/mcp", &t.access, big.as_bytes()).await;
    assert_eq!(status, 413);
    assert_audited(
        &data,
        "request_denied",
        &[
            ("status", "413"),
            ("reason", "request body too large"),
            ("subject", "operator"),
        ],
    );

    // Malformed JSON-RPC: 400 with a JSON error.
    let r = o
        .http
        .post(format!("{base}/mcp"))
        .bearer_auth(&t.access)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700);
    assert_audited(
        &data,
        "request_denied",
        &[("status", "400"), ("reason", "malformed JSON-RPC")],
    );
    // Malformed OAuth requests: 400 with a JSON error.
    let r = o.post_form("/token", &[("client_id", &client_id)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_request");
    let r = o
        .http
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&grant_type=authorization_code&client_id=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = o
        .post_form(
            "/token",
            &[("grant_type", "password"), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = o
        .post_form(
            "/token",
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    let r = o
        .http
        .post(format!("{base}/register"))
        .header("content-type", "application/json")
        .body("[1,2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert_audited(
        &data,
        "request_denied",
        &[("path", "/register"), ("reason", "malformed JSON")],
    );
    let r = o.authorize("client_id=a&client_id=b").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(host.is_running());
    // Still serving.
    assert_eq!(
        o.mcp(Some(&t.access), &initialize()).await.status,
        StatusCode::OK
    );
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no length declared) over a raw
/// connection; returns the status code.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, token: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1024) {
        let _ = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = s.write_all(chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_origins_and_hosts_are_refused() {
    let mut host = HostBuilder::new()
        .password(PASSWORD)
        .config("[auth]\nallowed_origins = [\"https://app.example.com\"]\n")
        .start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();
    let (_, t) = o.full_login(PASSWORD).await;
    let post = |origin: &str| {
        o.http
            .post(format!("{base}/mcp"))
            .bearer_auth(&t.access)
            .header("origin", origin)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize())
            .send()
    };
    let r = post("https://evil.example").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_audited(
        &data,
        "request_denied",
        &[
            ("status", "403"),
            ("reason", "origin `https://evil.example` not allowed"),
        ],
    );
    assert_eq!(post("null").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        post("https://app.example.com").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        post(&base).await.unwrap().status(),
        StatusCode::OK,
        "the host's own origin is allowed"
    );
    // DNS rebinding: a foreign Host header.
    let r = o
        .http
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = o
        .http
        .post(format!("{base}/mcp"))
        .header("host", format!("evil.example:{}", host.addr.port()))
        .bearer_auth(&t.access)
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_audited(&data, "request_denied", &[("reason", "Host `evil.example")]);
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn per_subject_rate_limit_answers_429_with_headers() {
    let mut host = HostBuilder::new()
        .password(PASSWORD)
        .config("[auth]\nrate_limit_per_minute = 3\n")
        .start();
    let o = Oauth::new(&host.base_url());
    let (_, t) = o.full_login(PASSWORD).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = o.mcp(Some(&t.access), &initialize()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some("\"mcp\";q=3;w=60")
        );
        remaining.push(r.header("ratelimit").unwrap());
    }
    assert!(remaining[2].starts_with("\"mcp\";r=0;"), "{remaining:?}");
    let r = o.mcp(Some(&t.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("ratelimit").unwrap().starts_with("\"mcp\";r=0;t="));
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"mcp\";q=3;w=60")
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // Issue 19: a JSON-RPC error answering this very request, with Stockade's
    // own code (outside the range JSON-RPC and MCP reserve).
    let body = r.json();
    assert_eq!(body["id"], initialize()["id"], "{body}");
    assert_eq!(body["error"]["code"], -31429, "{body}");
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[
            ("status", "429"),
            ("subject", "operator"),
            ("reason", "rate limit"),
        ],
    );
    assert!(host.is_running());
}

const ALICE_PW: &str = "alice-has-a-long-password";
const BOB_PW: &str = "bob-has-another-long-password";

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_session_belongs_to_the_user_and_client_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let users = oauth::users_file(
        dir.path(),
        &[("alice", ALICE_PW, &["mcp"]), ("bob", BOB_PW, &["mcp"])],
    );
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .auth(Some("builtin"))
        .arg("--users-file")
        .arg(users.to_str().unwrap())
        .start();
    let o = Oauth::new(&host.base_url());
    let (_, alice) = o.full_login_as("alice", ALICE_PW, "").await;
    let (_, bob) = o.full_login_as("bob", BOB_PW, "").await;
    let init = o.mcp(Some(&alice.access), &initialize()).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let sid = init.header("mcp-session-id").expect("a session id");
    let r = o
        .in_session(
            Method::POST,
            &alice.access,
            &sid,
            Some(&oauth::initialized()),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    // Bob, with his own valid token and alice's session id: as if it did not exist.
    let list = oauth::tools_list();
    for (method, body) in [
        (Method::POST, Some(&list)),
        (Method::GET, None),
        (Method::DELETE, None),
    ] {
        let r = o.in_session(method.clone(), &bob.access, &sid, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.body);
        if method == Method::POST {
            // Issue 19: a JSON-RPC error answering the request.
            let e = r.json();
            assert_eq!(
                (e["id"].clone(), e["error"]["code"].clone()),
                (list["id"].clone(), json!(-32600)),
                "{e}"
            );
        }
    }
    // Issue 19: a 2026-07-28 request stands alone; a session id it carries is
    // ignored (bob is served as himself, statelessly), never used.
    let mut modern = list.clone();
    modern["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let r = reqwest::Client::new()
        .post(format!("{}/mcp", o.base))
        .bearer_auth(&bob.access)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .json(&modern)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("mcp-session-id").is_none(), "no session");
    let body = r.text().await.unwrap();
    assert!(body.contains("greet"), "{body}");
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[
            ("status", "404"),
            ("subject", "bob"),
            ("reason", "MCP session belongs to another user or client"),
        ],
    );
    // The same user through another client is someone else too.
    let (_, alice_elsewhere) = o.full_login_as("alice", ALICE_PW, "").await;
    let r = o
        .in_session(Method::POST, &alice_elsewhere.access, &sid, Some(&list))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Alice's session was neither used nor ended by them.
    let r = o
        .in_session(Method::POST, &alice.access, &sid, Some(&list))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("greet"), "{}", r.body);
    // She ends it herself; then it is gone for her too.
    let r = o
        .in_session(Method::DELETE, &alice.access, &sid, None)
        .await;
    assert!(r.status.is_success(), "{}: {}", r.status, r.body);
    let r = o
        .in_session(Method::POST, &alice.access, &sid, Some(&list))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_flooding_the_login_page_does_not_lock_out_another() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let base = host.base_url();
    let flooder = Oauth::from_address(&base, "127.0.0.2");
    let client_id = flooder.register().await;
    let (_, challenge) = oauth::pkce();
    let query = flooder.authorize_query(&client_id, &challenge, "st", &[]);
    let first = flooder.authorize(&query).await;
    assert_eq!(first.status, StatusCode::OK);
    let mut refused = None;
    for _ in 0..60 {
        let r = flooder.authorize(&query).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = refused.expect("GET /authorize is rate limited per address");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.body.contains("Too many login requests"), "{}", r.body);
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[
            ("status", "429"),
            ("ip", "127.0.0.2"),
            ("reason", "too many login pages"),
        ],
    );
    // The flooder's own later forms pushed out its first one (a bounded share).
    let r = flooder.submit_login(&first, PASSWORD).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // Someone at another address logs in as usual.
    let other = Oauth::from_address(&base, "127.0.0.3");
    let (_, t) = other.full_login(PASSWORD).await;
    assert_eq!(
        other.mcp(Some(&t.access), &initialize()).await.status,
        StatusCode::OK
    );
    assert!(host.is_running());
}

/// Part `i` of a JWT, unverified: 0 the header, 1 the claims.
fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// Issue 18.1: someone who holds a signing key and saw a family id (say, on a
/// plaintext database link) cannot mint a token for another user or client
/// around that family: the gate checks the token's `sub` and `client_id`
/// against the family's.
#[tokio::test(flavor = "multi_thread")]
async fn a_stolen_key_and_family_id_do_not_impersonate() {
    let dir = tempfile::tempdir().unwrap();
    let users = oauth::users_file(
        dir.path(),
        &[("alice", ALICE_PW, &["mcp"]), ("bob", BOB_PW, &["mcp"])],
    );
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .auth(Some("builtin"))
        .arg("--users-file")
        .arg(users.to_str().unwrap())
        .start();
    let o = Oauth::new(&host.base_url());
    let base = o.base.clone();
    let (_, bob) = o.full_login_as("bob", BOB_PW, "").await;
    let real = jwt_part(&bob.access, 1);
    let fam = real["fam"].as_str().unwrap().to_owned();
    let client = real["client_id"].as_str().unwrap().to_owned();
    // Positive control: a token minted with bob's own claims is served.
    let mut same = real.clone();
    same["jti"] = json!("minted-1");
    let minted = sign_with_host_key(&host.data_dir(), &same);
    assert_eq!(
        o.mcp(Some(&minted), &initialize()).await.status,
        StatusCode::OK
    );
    // Another user around bob's family: refused.
    let mut as_alice = real.clone();
    as_alice["sub"] = json!("alice");
    as_alice["jti"] = json!("minted-2");
    let forged = sign_with_host_key(&host.data_dir(), &as_alice);
    assert_invalid_token(&o.mcp(Some(&forged), &initialize()).await, &base);
    // Bob through another client's id around his family: refused.
    let mut other_client = real.clone();
    other_client["client_id"] = json!(format!("{client}-other"));
    other_client["jti"] = json!("minted-3");
    let forged = sign_with_host_key(&host.data_dir(), &other_client);
    assert_invalid_token(&o.mcp(Some(&forged), &initialize()).await, &base);
    // Bob's own claims, living longer than this server ever issues: refused
    // (a token minted with a stolen key, not one this server signed).
    let mut long_lived = real.clone();
    long_lived["exp"] = json!(now() + 30 * 86_400);
    long_lived["jti"] = json!("minted-4");
    let forged = sign_with_host_key(&host.data_dir(), &long_lived);
    assert_invalid_token(&o.mcp(Some(&forged), &initialize()).await, &base);
    assert!(!fam.is_empty());
    assert!(host.is_running());
}

/// Issue 18.6: `stockade keys rotate --retire-now` answers a compromise: the
/// old key stops verifying (cached verifications included) and leaves the
/// JWKS within seconds; new logins work with the new key.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_retired_at_once_stops_its_tokens() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .start();
    let o = Oauth::new(&host.base_url());
    let base = o.base.clone();
    let (_, old) = o.full_login(PASSWORD).await;
    let old_kid = jwt_part(&old.access, 0)["kid"].as_str().unwrap().to_owned();
    // Served, and cached.
    for _ in 0..3 {
        assert_eq!(
            o.mcp(Some(&old.access), &initialize()).await.status,
            StatusCode::OK
        );
    }
    let dir = host.dir.path().to_owned();
    let (ok, out) =
        common::run_stockade(&["keys", "rotate", "--retire-now", "--data", "data"], &dir);
    assert!(ok && out.contains("retired"), "{out}");
    let started = std::time::Instant::now();
    loop {
        let r = o.mcp(Some(&old.access), &initialize()).await;
        if r.status == StatusCode::UNAUTHORIZED {
            assert_invalid_token(&r, &base);
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "a token of the retired key is still served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let jwks = o.get("/jwks.json").await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "{jwks}");
    assert_ne!(kids[0], old_kid);
    let (_, new) = o.full_login(PASSWORD).await;
    assert_eq!(
        o.mcp(Some(&new.access), &initialize()).await.status,
        StatusCode::OK
    );
    assert!(host.is_running());
}

/// Issue 18.6: `/metrics` on its own loopback listener answers only requests
/// naming that address (a page on a rebinding domain cannot read it); a
/// wrong scrape token is audited and, past a few a minute, throttled; a
/// separate listener reachable from other machines needs the token.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_refuse_foreign_hosts_and_throttle_wrong_tokens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = tempfile::tempdir().unwrap();
    let token_file = secret.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-token-0123456789\n").unwrap();
    let mut host = HostBuilder::new()
        .password(PASSWORD)
        .config(&format!(
            "[prometheus]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ))
        .start();
    let http = reqwest::Client::new();
    let separate = format!("http://127.0.0.1:{port}/metrics");
    // Its own name: served (no token needed on loopback).
    assert_eq!(http.get(&separate).send().await.unwrap().status(), 200);
    let r = http
        .get(&separate)
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A rebinding domain that resolves to 127.0.0.1: refused, audited.
    let r = http
        .get(&separate)
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_audited(
        &host.data_dir(),
        "request_denied",
        &[
            ("reason", "metrics: Host `evil.example:"),
            ("path", "/metrics"),
        ],
    );

    // The main listener: wrong tokens are audited, then throttled.
    let main = format!("{}/metrics", host.base_url());
    let good = http
        .get(&main)
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = http
            .get(&main)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429, 429], "{statuses:?}");
    let denied = audit_text(&host.data_dir())
        .lines()
        .filter(|l| l.contains("metrics: wrong or missing scrape token"))
        .count();
    assert_eq!(denied, 10, "each failure before the throttle is audited");
    assert!(host.is_running());

    // A separate listener on every interface without a token: refused at start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("open.toml"),
        "[prometheus]\nlisten = \"0.0.0.0:9464\"\n",
    )
    .unwrap();
    let err = common::serve_must_fail(
        dir.path(),
        &[
            "--config",
            "open.toml",
            "--listen",
            "127.0.0.1:0",
            "--plugins",
            "plugins",
            "--data",
            "data",
            "--auth",
            "none",
        ],
        &[],
    );
    assert!(
        err.contains("prometheus.listen: 0.0.0.0:9464 is reachable from other machines"),
        "{err}"
    );
}

/// Sends `rq` with one `X-Forwarded-For` header line per entry of `xff`, in
/// order; reads the response whole.
async fn with_xff(mut rq: reqwest::RequestBuilder, xff: &[String]) -> oauth::Resp {
    for v in xff {
        rq = rq.header("x-forwarded-for", v);
    }
    let r = rq.send().await.unwrap();
    oauth::Resp {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// `GET /authorize?query` with `X-Forwarded-For` lines `xff`.
async fn page_with_xff(o: &Oauth, query: &str, xff: &[String]) -> oauth::Resp {
    with_xff(o.http.get(format!("{}/authorize?{query}", o.base)), xff).await
}

/// Submits the login form of `page` with `password` and `X-Forwarded-For`
/// lines `xff`.
async fn login_with_xff(
    o: &Oauth,
    page: &oauth::Resp,
    password: &str,
    xff: &[String],
) -> oauth::Resp {
    let csrf = oauth::csrf_of(&page.body);
    let rq = o
        .http
        .post(format!("{}/authorize", o.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(oauth::form(&[
            ("csrf", &csrf),
            ("password", password),
            ("action", "approve"),
        ]));
    with_xff(rq, xff).await
}

/// GETs the login page with `xff(i)` for i = 0, 1, … until it is refused
/// (at most 60 times); returns the refusal.
async fn flood_login_page(
    o: &Oauth,
    query: &str,
    xff: impl Fn(usize) -> Vec<String>,
) -> oauth::Resp {
    for i in 0..60 {
        let r = page_with_xff(o, query, &xff(i)).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            assert!(r.body.contains("Too many login requests"), "{}", r.body);
            return r;
        }
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
    }
    panic!("60 login pages from one address were all served");
}

/// Issue 23: without `auth.trust_forwarded_for` (the default) the
/// `X-Forwarded-For` header is ignored: a client putting a new made-up
/// address in it on every request is still locked out after five wrong
/// passwords (even the right one is then refused) and still runs out of
/// login pages, because its real address counts; the audit log names that
/// address and none of the made-up ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_forwarded_for_is_ignored_unless_trusted() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let client_id = o.register().await;
    let (_, challenge) = oauth::pkce();
    let query = o.authorize_query(&client_id, &challenge, "st", &[]);
    let spoof = |i: usize| vec![format!("198.51.100.{}", i + 1)];

    let mut page = page_with_xff(&o, &query, &spoof(0)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for i in 0..5 {
        let r = login_with_xff(&o, &page, &format!("guess-{i}"), &spoof(i + 1)).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            r.body
        );
        page = r;
    }
    assert_audited(
        &data,
        "login_failed",
        &[("reason", "locked out for 30s"), ("ip", "127.0.0.1")],
    );
    let r = login_with_xff(&o, &page, PASSWORD, &spoof(77)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("location").is_none());
    assert_audited(
        &data,
        "login_failed",
        &[
            ("reason", "locked out after repeated failures"),
            ("ip", "127.0.0.1"),
        ],
    );

    // The login-page quota holds too.
    let mark = audit_mark(&data);
    flood_login_page(&o, &query, |i| vec![format!("203.0.113.{}", i % 250)]).await;
    audited_since(
        &data,
        mark,
        "request_denied",
        &[
            ("status", "429"),
            ("ip", "127.0.0.1"),
            ("reason", "too many login pages"),
        ],
    );
    let audit = audit_text(&data);
    assert!(
        !audit.contains("198.51.100.") && !audit.contains("203.0.113."),
        "a made-up address reached the audit log"
    );
    assert!(host.is_running());
}

/// Issue 23: behind a proxy (`auth.trust_forwarded_for = true`) a client's
/// address is the last `X-Forwarded-For` entry (the one the proxy appends):
/// two clients behind the same proxy are throttled apart, and a client that
/// puts made-up entries in front of its own (in the same line or in an
/// earlier header line) dodges neither its lockout nor its login-page quota.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_forwarded_for_counts_its_last_entry_only() {
    let mut host = HostBuilder::new()
        .password(PASSWORD)
        .config("[auth]\ntrust_forwarded_for = true\n")
        .start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let client_id = o.register().await;
    let (_, challenge) = oauth::pkce();
    let query = o.authorize_query(&client_id, &challenge, "st", &[]);
    let real = "203.0.113.7";
    let spoofed = |i: usize| vec![format!("198.51.100.{}, {real}", i + 1)];

    let mut page = page_with_xff(&o, &query, &spoofed(0)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for i in 0..5 {
        let r = login_with_xff(&o, &page, &format!("guess-{i}"), &spoofed(i + 1)).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            r.body
        );
        page = r;
    }
    assert_audited(
        &data,
        "login_failed",
        &[("reason", "locked out for 30s"), ("ip", real)],
    );
    // Locked out: new entries in front of the proxy's change nothing.
    for xff in [
        vec![format!("10.1.2.3, 198.51.100.99, {real}")],
        vec!["198.51.100.98".to_owned(), real.to_owned()],
    ] {
        let mark = audit_mark(&data);
        let r = login_with_xff(&o, &page, PASSWORD, &xff).await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{xff:?}: {}",
            r.body
        );
        assert!(r.header("location").is_none());
        audited_since(
            &data,
            mark,
            "login_failed",
            &[
                ("reason", "locked out after repeated failures"),
                ("ip", real),
            ],
        );
        page = r;
    }
    // Another client behind the same proxy logs in: its own address counts,
    // not the proxy's.
    let other = "203.0.113.8";
    let page = page_with_xff(&o, &query, &[format!("198.51.100.1, {other}")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let r = login_with_xff(&o, &page, PASSWORD, &[other.to_owned()]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(r.location_param("code").is_some());
    assert_audited(
        &data,
        "login_succeeded",
        &[("client_id", &client_id), ("ip", other)],
    );

    // The login-page quota per forwarded address, made-up entries rotating.
    let flooder = "203.0.113.9";
    let mark = audit_mark(&data);
    flood_login_page(&o, &query, |i| {
        vec![format!("10.0.{}.{}, {flooder}", i / 250, i % 250)]
    })
    .await;
    audited_since(
        &data,
        mark,
        "request_denied",
        &[
            ("status", "429"),
            ("ip", flooder),
            ("reason", "too many login pages"),
        ],
    );
    // Meanwhile another address behind the proxy still gets its page.
    let r = page_with_xff(&o, &query, &["203.0.113.10".to_owned()]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let audit = audit_text(&data);
    assert!(
        !audit.contains("198.51.100.") && !audit.contains("\"ip\":\"10."),
        "a made-up entry was taken for the address"
    );
    assert!(host.is_running());
}

/// Issue 23: a client presenting another client's token at `/revoke` (RFC
/// 7009 §2.1: a client may revoke only its own tokens) gets the same 200 as
/// for an unknown token, so it learns nothing; the attempt is audited as
/// ignored, nothing is revoked, and the owner's access and refresh tokens
/// keep working. A confidential client authenticated with its secret is
/// ignored the same way.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_another_clients_token_changes_nothing() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let (victim, v) = o.full_login(PASSWORD).await;
    let attacker = o.register().await;
    let reg = o
        .post_json(
            "/register",
            &json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post"}),
        )
        .await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
    let confidential = reg.json()["client_id"].as_str().unwrap().to_owned();
    let secret = reg.json()["client_secret"].as_str().unwrap().to_owned();

    for token in [&v.refresh, &v.access] {
        for by in [
            vec![("token", token.as_str()), ("client_id", attacker.as_str())],
            vec![
                ("token", token.as_str()),
                ("client_id", confidential.as_str()),
                ("client_secret", secret.as_str()),
            ],
        ] {
            let mark = audit_mark(&data);
            let r = o.post_form("/revoke", &by).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(r.body, "");
            audited_since(
                &data,
                mark,
                "request_denied",
                &[
                    ("status", "200"),
                    ("path", "/revoke"),
                    (
                        "reason",
                        "revoke: token belongs to another client (ignored)",
                    ),
                ],
            );
        }
    }
    assert!(
        !oauth::audit(&data)
            .iter()
            .any(|l| l["event"] == "token_revoked"),
        "nothing was revoked"
    );
    // The owner's tokens still work.
    assert_eq!(
        o.mcp(Some(&v.access), &initialize()).await.status,
        StatusCode::OK
    );
    let r = o.refresh(&victim, &v.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v2 = tokens(&r);
    assert_eq!(
        o.mcp(Some(&v2.access), &initialize()).await.status,
        StatusCode::OK
    );
    assert!(host.is_running());
}
