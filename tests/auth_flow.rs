//! End-to-end: the built-in OAuth 2.1 server of the real binary, driven like a
//! browser plus an MCP client would: discovery, registration, the login page,
//! PKCE, tokens, a tool call with the rmcp client, refresh, revocation, restart.

mod common;
mod oauth;

use common::{HostBuilder, bundled};
use oauth::{
    Oauth, REDIRECT, assert_audited, audit_mark, audit_text, audited_since, initialize, tokens,
};
use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple";

async fn greet_with(url: &str, token: &str) -> String {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    let client = ().serve(transport).await.expect("MCP client connects with a bearer token");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "greet"), "{tools:?}");
    let args = json!({"name": "Ada"}).as_object().unwrap().clone();
    let r = client
        .call_tool(CallToolRequestParams::new("greet".to_owned()).with_arguments(args))
        .await
        .unwrap();
    client.cancel().await.ok();
    r.content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_login_tool_call_refresh_revoke() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();

    // 1. No token: 401 pointing at the protected-resource metadata.
    let r = o.mcp(None, &initialize()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let www = r.header("www-authenticate").unwrap();
    assert_eq!(
        www,
        format!(
            "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\""
        )
    );
    assert_audited(
        &data,
        "request_denied",
        &[
            ("reason", "no bearer token"),
            ("path", "/mcp"),
            ("status", "401"),
        ],
    );

    // 2. Discovery.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let prm = o.get(path).await.json();
        assert_eq!(prm["resource"], format!("{base}/mcp"));
        assert_eq!(prm["authorization_servers"], json!([base]));
        assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
    }
    let asm = o
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert_eq!(asm["issuer"], base);
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(asm["client_id_metadata_document_supported"], json!(true));
    assert_eq!(asm["registration_endpoint"], format!("{base}/register"));
    assert_eq!(asm["token_endpoint"], format!("{base}/token"));
    assert_eq!(asm["revocation_endpoint"], format!("{base}/revoke"));
    assert_eq!(
        o.get("/.well-known/openid-configuration").await.json()["issuer"],
        base
    );
    let jwks = o.get("/jwks.json").await.json();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert!(jwks["keys"][0]["kid"].is_string());
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private part in the JWKS"
    );
    assert_eq!(
        o.get("/health").await.status,
        StatusCode::OK,
        "/health stays open"
    );
    assert_eq!(
        o.get("/no-such-page").await.status,
        StatusCode::NOT_FOUND,
        "the gate guards /mcp only"
    );

    // 3. Registration.
    let reg = o.register_raw(&[REDIRECT]).await;
    assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
    let client_id = reg.json()["client_id"].as_str().unwrap().to_owned();
    assert_eq!(reg.json()["token_endpoint_auth_method"], "none");
    assert!(reg.json().get("client_secret").is_none());
    assert_audited(
        &data,
        "client_registered",
        &[("client_id", &client_id), ("redirect_uris", REDIRECT)],
    );

    // 4. The login page: client name (escaped), redirect host, anti-framing.
    let (verifier, challenge) = oauth::pkce();
    let page = o
        .authorize(&o.authorize_query(&client_id, &challenge, "xyz", &[]))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Test &lt;Client&gt;"), "{}", page.body);
    assert!(!page.body.contains("<Client>"));
    assert!(page.body.contains("127.0.0.1:45678"));
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert_eq!(
        page.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    let done = o.submit_login(&page, PASSWORD).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.header("location").unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(done.location_param("state").as_deref(), Some("xyz"));
    let code = done.location_param("code").unwrap();
    assert_audited(
        &data,
        "login_succeeded",
        &[("subject", "operator"), ("client_id", &client_id)],
    );
    // The form's CSRF token was single use.
    let again = o.submit_login(&page, PASSWORD).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.header("location").is_none());

    // 5. Token.
    let r = o.exchange(&client_id, &code, &verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("pragma").as_deref(), Some("no-cache"));
    let t = tokens(&r);
    assert_eq!(t.body["token_type"], "Bearer");
    assert_eq!(t.body["scope"], "mcp");
    assert!(t.body["expires_in"].as_u64().unwrap() <= 900);
    assert_audited(
        &data,
        "token_issued",
        &[
            ("subject", "operator"),
            ("client_id", &client_id),
            ("audience", &format!("{base}/mcp")),
        ],
    );

    // 6. MCP with the token: the rmcp client lists and calls tools.
    let text = greet_with(&host.mcp_url(), &t.access).await;
    assert!(text.contains("Hello, Ada"), "{text}");
    // Allowed responses carry the rate-limit headers.
    let r = o.mcp(Some(&t.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("ratelimit").unwrap().starts_with("\"mcp\";r="));
    assert!(r.header("ratelimit-policy").unwrap().contains("q=600"));

    // 7. Refresh: a new pair; the new access token works.
    let r = o.refresh(&client_id, &t.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let t2 = tokens(&r);
    assert_ne!(t2.refresh, t.refresh, "refresh tokens rotate");
    assert_eq!(
        o.mcp(Some(&t2.access), &initialize()).await.status,
        StatusCode::OK
    );
    assert_audited(&data, "token_refreshed", &[("client_id", &client_id)]);

    // 8. Revocation (RFC 7009): the family dies, access tokens included.
    let r = o
        .post_form(
            "/revoke",
            &[("token", &t2.refresh), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_audited(
        &data,
        "token_revoked",
        &[("client_id", &client_id), ("reason", "/revoke")],
    );
    let r = o.mcp(Some(&t2.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "invalid token: revoked")],
    );
    assert_eq!(
        o.refresh(&client_id, &t2.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    // Unknown tokens: still 200.
    assert_eq!(
        o.post_form("/revoke", &[("token", "no-such-token")])
            .await
            .status,
        StatusCode::OK
    );

    // Nothing secret was ever logged or audited.
    let log = host.log();
    let audit = audit_text(&data);
    for secret in [
        PASSWORD,
        &code,
        &t.access,
        &t.refresh,
        &t2.access,
        &t2.refresh,
        &verifier,
    ] {
        assert!(!log.contains(secret), "a secret reached the host's log");
        assert!(!audit.contains(secret), "a secret reached the audit log");
    }
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_and_refresh_tokens_survive_a_restart() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let o = Oauth::new(&host.base_url());
    let (client_id, t) = o.full_login(PASSWORD).await;
    let jwks_before = o.get("/jwks.json").await.json();

    host.restart();
    let o = Oauth::new(&host.base_url());
    assert_eq!(
        o.get("/jwks.json").await.json(),
        jwks_before,
        "the signing key is kept"
    );
    // The access token issued before the restart is still valid.
    assert_eq!(
        o.mcp(Some(&t.access), &initialize()).await.status,
        StatusCode::OK
    );
    // The refresh token still works, and rotates.
    let r = o.refresh(&client_id, &t.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t2 = tokens(&r);
    assert_eq!(
        o.mcp(Some(&t2.access), &initialize()).await.status,
        StatusCode::OK
    );
    // The registered client can log in again without registering.
    let (code, verifier) = o.login(&client_id, PASSWORD).await;
    assert_eq!(
        o.exchange(&client_id, &code, &verifier).await.status,
        StatusCode::OK
    );

    // Reuse detection survives the restart too: the spent token kills the family.
    host.restart();
    let o = Oauth::new(&host.base_url());
    assert_eq!(
        o.refresh(&client_id, &t.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        o.refresh(&client_id, &t2.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_audited(
        &host.data_dir(),
        "reuse_detected",
        &[("kind", "refresh_token"), ("client_id", &client_id)],
    );
    assert!(host.is_running());
}

async fn tool_names_with(url: &str, token: &str) -> Vec<String> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    let client = ().serve(transport).await.expect("MCP client connects with a bearer token");
    let tools = client.list_all_tools().await.unwrap();
    client.cancel().await.ok();
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_scopes_are_enforced_with_a_403_challenge() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .config("[auth]\nscopes_supported = [\"mcp\", \"admin\"]\n[plugins.template]\nscope = \"admin\"\n")
        .start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();

    // The default scope is `mcp` only.
    let (client_id, t) = o.full_login(PASSWORD).await;
    assert_eq!(t.body["scope"], "mcp");
    let r = o.mcp(Some(&t.access), &oauth::tools_call("greet")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer error=\"insufficient_scope\""),
        "{www}"
    );
    assert!(www.contains("scope=\"mcp admin\""), "{www}");
    assert!(
        www.contains(&format!(
            "resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""
        )),
        "{www}"
    );
    assert_audited(
        &data,
        "request_denied",
        &[
            ("status", "403"),
            ("reason", "tool `greet` needs scope `admin`"),
            ("subject", "operator"),
        ],
    );
    // A refresh may not widen the scope, and asking leaves the token usable.
    let r = o
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t.refresh),
                ("client_id", &client_id),
                ("scope", "mcp admin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_scope");
    let r = o.refresh(&client_id, &t.refresh).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the refused refresh spent nothing: {}",
        r.body
    );
    assert_eq!(tokens(&r).body["scope"], "mcp");
    // In a batch too.
    let batch = json!([oauth::initialize(), oauth::tools_call("greet")]);
    assert_eq!(
        o.mcp(Some(&t.access), &batch).await.status,
        StatusCode::FORBIDDEN
    );
    // Other methods pass the gate.
    assert_eq!(
        o.mcp(Some(&t.access), &initialize()).await.status,
        StatusCode::OK
    );

    // Tools the token may not call are not even listed to it.
    let names = tool_names_with(&host.mcp_url(), &t.access).await;
    assert!(
        !names.iter().any(|n| n == "greet"),
        "hidden without `admin`: {names:?}"
    );

    // Step up: ask for `admin` as well.
    let (verifier, challenge) = oauth::pkce();
    let page = o
        .authorize(&o.authorize_query(&client_id, &challenge, "s", &[("scope", "mcp admin")]))
        .await;
    assert!(page.body.contains("mcp, admin"), "{}", page.body);
    let done = o.submit_login(&page, PASSWORD).await;
    let code = done.location_param("code").unwrap();
    let r = o.exchange(&client_id, &code, &verifier).await;
    let t2 = tokens(&r);
    assert_eq!(t2.body["scope"], "mcp admin");
    let text = greet_with(&host.mcp_url(), &t2.access).await;
    assert!(text.contains("Hello, Ada"), "{text}");
    // The tool call's audit record names who called it, and through which client.
    assert_audited(
        &data,
        "tool_call",
        &[
            ("subject", "operator"),
            ("client_id", client_id.as_str()),
            ("target", "greet"),
            ("outcome", "ok"),
        ],
    );
    // A refresh may narrow the scope but never widen it.
    let r = o
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t2.refresh),
                ("client_id", &client_id),
                ("scope", "mcp"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let t3 = tokens(&r);
    assert_eq!(t3.body["scope"], "mcp");
    assert_eq!(
        o.mcp(Some(&t3.access), &oauth::tools_call("greet"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert!(host.is_running());
}

/// An operator typing `stockade hash-password` in a terminal (a pseudo-terminal
/// from util-linux `script`): asked twice, and the password never appears on
/// the screen.
#[test]
fn hash_password_on_a_terminal_does_not_echo() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let password = "typed-on-a-terminal-12345";
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{} hash-password", env!("CARGO_BIN_EXE_stockade")),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` (package bsdutils) runs the command on a pseudo-terminal");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let shown = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            shown
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    // Type each answer only once its prompt is on the screen.
    for prompt in ["Password (not shown):", "Again, to confirm:"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !screen.lock().unwrap().contains(prompt) {
            assert!(
                std::time::Instant::now() < deadline,
                "no `{prompt}` prompt; the screen: {}",
                screen.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // rpassword turns echo off just after printing its prompt: type as a
        // person would, a moment after the prompt shows (a clean-clone run
        // typed into that gap and saw its own echo).
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let screen = screen.lock().unwrap().clone();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("$argon2id$"), "{screen}");
    assert!(
        !screen.contains(password),
        "the password was echoed: {screen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_file_logins_carry_per_user_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let alice_pw = "alice-has-a-long-password";
    let hash = {
        let (ok, out) =
            common::run_stockade_stdin(&["hash-password"], dir.path(), &format!("{alice_pw}\n"));
        assert!(ok, "{out}");
        out.trim().to_owned()
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"alice\"\npassword_hash = '{hash}'\nscopes = [\"mcp\"]\n"),
    )
    .unwrap();
    let mut host = HostBuilder::new()
        .auth(Some("builtin"))
        .arg("--users-file")
        .arg(users.to_str().unwrap())
        .config("[auth]\nscopes_supported = [\"mcp\", \"admin\"]\n")
        .start();
    let o = Oauth::new(&host.base_url());
    let client_id = o.register().await;
    let (verifier, challenge) = oauth::pkce();
    let page = o
        .authorize(&o.authorize_query(&client_id, &challenge, "s", &[("scope", "mcp admin")]))
        .await;
    assert!(
        page.body.contains("name=username"),
        "a users file adds the user name field"
    );
    let csrf = oauth::csrf_of(&page.body);
    let r = o
        .post_form(
            "/authorize",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wrong password here"),
                ("action", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_audited(
        &host.data_dir(),
        "login_failed",
        &[("subject", "alice"), ("reason", "wrong credentials")],
    );
    let csrf = oauth::csrf_of(&r.body);
    let r = o
        .post_form(
            "/authorize",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", alice_pw),
                ("action", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let t = tokens(
        &o.exchange(&client_id, &r.location_param("code").unwrap(), &verifier)
            .await,
    );
    assert_eq!(t.body["scope"], "mcp", "alice is not granted admin");
    assert_audited(
        &host.data_dir(),
        "token_issued",
        &[("subject", "alice"), ("scope", "mcp")],
    );
    assert!(!host.log().contains(alice_pw) && !audit_text(&host.data_dir()).contains(alice_pw));
    assert!(host.is_running());
}

/// Opens an MCP session with `token` and calls `tool` (`{"name": "Ada"}`) in
/// it; returns the call's response.
async fn call_in_session(o: &Oauth, token: &str, tool: &str) -> oauth::Resp {
    let init = o.mcp(Some(token), &initialize()).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let sid = init.header("mcp-session-id").expect("a session id");
    let r = o
        .in_session(
            reqwest::Method::POST,
            token,
            &sid,
            Some(&oauth::initialized()),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    o.in_session(
        reqwest::Method::POST,
        token,
        &sid,
        Some(&oauth::tools_call(tool)),
    )
    .await
}

const ALICE_PW: &str = "alice-has-a-long-password";
const BOB_PW: &str = "bob-has-another-long-password";
const CAROL_PW: &str = "carol-has-a-third-long-password";

#[tokio::test(flavor = "multi_thread")]
async fn removed_demoted_and_revoked_users_lose_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let everyone: [(&str, &str, &[&str]); 3] = [
        ("alice", ALICE_PW, &["mcp"]),
        ("bob", BOB_PW, &["mcp", "admin"]),
        ("carol", CAROL_PW, &["mcp"]),
    ];
    let users = oauth::users_file(dir.path(), &everyone);
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .auth(Some("builtin"))
        .arg("--users-file")
        .arg(users.to_str().unwrap())
        .config("[auth]\nscopes_supported = [\"mcp\", \"admin\"]\n[plugins.template]\nscope = \"admin\"\n")
        .start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let (alice_client, alice) = o.full_login_as("alice", ALICE_PW, "").await;
    let (bob_client, bob) = o.full_login_as("bob", BOB_PW, "mcp admin").await;
    let (carol_client, carol) = o.full_login_as("carol", CAROL_PW, "").await;
    assert_eq!(bob.body["scope"], "mcp admin");
    // Bob's `admin` token calls the `admin` tool (issue 23: the call itself
    // answers, not merely "not 403").
    let r = call_in_session(&o, &bob.access, "greet").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Hello, Ada"), "{}", r.body);

    // The users file is read at start: remove alice, demote bob, restart.
    oauth::users_file(
        dir.path(),
        &[("bob", BOB_PW, &["mcp"]), ("carol", CAROL_PW, &["mcp"])],
    );
    host.restart();
    let o = Oauth::new(&host.base_url());
    // Alice's live access token fails at once, and her refresh token too.
    let r = o.mcp(Some(&alice.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "invalid token: user no longer exists")],
    );
    let r = o.refresh(&alice_client, &alice.refresh).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_audited(
        &data,
        "token_revoked",
        &[
            ("client_id", &alice_client),
            ("reason", "the user no longer exists"),
        ],
    );
    // Bob's old token lost `admin` at once; his refresh issues `mcp` only.
    assert_eq!(
        o.mcp(Some(&bob.access), &oauth::tools_call("greet"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = o.refresh(&bob_client, &bob.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let bob2 = tokens(&r);
    assert_eq!(bob2.body["scope"], "mcp");

    // `stockade tokens revoke` on the running host's data: effective at once.
    let revoke = |by: &str, who: &str| {
        common::run_stockade(
            &[
                "tokens",
                "revoke",
                by,
                who,
                "--data",
                data.to_str().unwrap(),
            ],
            dir.path(),
        )
    };
    let (ok, out) = revoke("--subject", "bob");
    assert!(ok && out.contains("revoked 1 token families"), "{out}");
    assert_eq!(
        o.mcp(Some(&bob2.access), &initialize()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        o.refresh(&bob_client, &bob2.refresh).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        o.mcp(Some(&carol.access), &initialize()).await.status,
        StatusCode::OK,
        "other users keep theirs"
    );
    let (ok, out) = revoke("--client", &carol_client);
    assert!(ok && out.contains("revoked 1 token families"), "{out}");
    assert_eq!(
        o.mcp(Some(&carol.access), &initialize()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_approve_skips_the_page_for_loopback_clients_only() {
    let mut host = HostBuilder::new()
        .auth(Some("builtin"))
        .arg("--auto-approve")
        .start();
    let o = Oauth::new(&host.base_url());
    let client_id = o.register().await;
    let (verifier, challenge) = oauth::pkce();
    let r = o
        .authorize(&o.authorize_query(&client_id, &challenge, "s1", &[]))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    let code = r.location_param("code").unwrap();
    assert_eq!(
        o.exchange(&client_id, &code, &verifier).await.status,
        StatusCode::OK
    );
    // A client redirecting elsewhere still needs a login, and there is no password.
    let reg = o.register_raw(&["https://app.example.com/cb"]).await;
    let other = reg.json()["client_id"].as_str().unwrap().to_owned();
    let q = oauth::form(&[
        ("response_type", "code"),
        ("client_id", &other),
        ("redirect_uri", "https://app.example.com/cb"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let r = o.authorize(&q).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("location").is_none());
    assert!(host.is_running());
}

/// Issue 9.9: `stockade serve` with nothing configured makes up the operator
/// password, shows it once with the MCP URL, keeps only its hash, and the same
/// password logs in after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_run_makes_up_the_password_and_shows_it_once() {
    let mut host = HostBuilder::new().auth(Some("builtin")).start();
    // The message's last line: all of it is in the log by then.
    assert!(
        host.wait_log(
            "delete that file and restart",
            std::time::Duration::from_secs(10)
        ),
        "{}",
        host.log()
    );
    let log = host.log();
    let password = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("operator password: "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(password.len() >= 20, "{password}");
    assert!(
        log.contains(&format!("Give your MCP client {}", host.mcp_url())),
        "{log}"
    );
    let stored =
        std::fs::read_to_string(host.data_dir().join("keys/operator-password.argon2")).unwrap();
    assert!(
        stored.starts_with("$argon2id$") && !stored.contains(&password),
        "{stored}"
    );
    assert!(!audit_text(&host.data_dir()).contains(&password));

    let o = Oauth::new(&host.base_url());
    let (_, tokens) = o.full_login(&password).await;
    assert!(!tokens.access.is_empty());
    let client_id = o.register().await;
    let (_, challenge) = oauth::pkce();
    let page = o
        .authorize(&o.authorize_query(&client_id, &challenge, "s", &[]))
        .await;
    let wrong = o.submit_login(&page, "not-the-generated-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);

    // Restarted: not shown again, still the same password.
    host.restart();
    assert!(
        host.run_log().contains("listening on"),
        "{}",
        host.run_log()
    );
    assert!(!host.run_log().contains(&password), "{}", host.run_log());
    let (_, tokens) = Oauth::new(&host.base_url()).full_login(&password).await;
    assert!(!tokens.access.is_empty());
}

#[test]
fn refuses_to_start_without_a_good_password_or_off_loopback_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--plugins",
        "plugins",
        "--data",
        "data",
    ];
    let (ok, out) =
        common::run_stockade_env(&serve, dir.path(), &[("STOCKADE_PASSWORD", "too-short")]);
    assert!(!ok);
    assert!(out.contains("shorter than 12"), "{out}");
    assert!(
        !out.contains("too-short"),
        "the password is not echoed: {out}"
    );
    let (ok, out) = common::run_stockade_env(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--plugins",
            "plugins",
            "--data",
            "data",
            "--auth",
            "none",
        ],
        dir.path(),
        &[],
    );
    assert!(!ok);
    assert!(out.contains("loopback"), "{out}");
    let (ok, out) = common::run_stockade_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--plugins",
            "plugins",
            "--data",
            "data",
            "--public-url",
            "http://mcp.example.com",
        ],
        dir.path(),
        &[("STOCKADE_PASSWORD", "long-enough-password")],
    );
    assert!(!ok);
    assert!(
        out.contains("https"),
        "plain http public URLs are refused: {out}"
    );
}

/// Issue 9.9: the README's first command, `scripts/run`, on a fresh directory:
/// builds the bundled plugins, lays out local/ with the sample config, starts
/// the host, prints the made-up password once; a client logs in with it and
/// calls the bundled `greet`, `query_data`, `run_command`, `get_metrics` and
/// `edit_file` with the sample grants. (The binary under test stands in for the release
/// build, through `STOCKADE_BIN`.)
#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_script_serves_the_bundled_plugins() {
    use std::io::{BufRead, BufReader};
    let local = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(common::repo().join("scripts/run"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("STOCKADE_LOCAL", local.path())
        .env("STOCKADE_BIN", env!("CARGO_BIN_EXE_stockade"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for var in [
        "STOCKADE_CONFIG",
        "STOCKADE_PASSWORD",
        "STOCKADE_LOG",
        "STOCKADE_AUTH",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut url, mut password, mut seen) = (None, None, String::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while url.is_none() || password.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("scripts/run did not come up:\n{seen}"));
        if let Some(p) = line.trim().strip_prefix("operator password: ") {
            password = Some(p.trim().to_owned());
        }
        if let Some(u) = line.strip_prefix("stockade listening on ") {
            url = Some(u.trim().trim_end_matches("/mcp").to_owned());
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let (base, password) = (url.unwrap(), password.unwrap());
    assert!(local.path().join("stockade.toml").is_file());
    let plugins: Vec<String> = std::fs::read_dir(local.path().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(plugins.contains(&"template.wasm".to_owned()), "{plugins:?}");
    assert!(
        !plugins.iter().any(|p| p.starts_with("hostile")),
        "{plugins:?}"
    );

    let o = Oauth::new(&base);
    let (_, tokens) = o.full_login(&password).await;
    let init = o.mcp(Some(&tokens.access), &initialize()).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let session = init.header("mcp-session-id").expect("a session id");
    o.in_session(
        reqwest::Method::POST,
        &tokens.access,
        &session,
        Some(&oauth::initialized()),
    )
    .await;
    let call = |id: u32, name: &str, arguments: serde_json::Value| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}});
        let (o, token, session) = (&o, &tokens.access, &session);
        async move {
            let r = o
                .in_session(reqwest::Method::POST, token, session, Some(&body))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body
        }
    };
    let r = call(2, "greet", json!({"name": "Ada"})).await;
    assert!(r.contains("Hello, Ada"), "{r}");
    // The four bundled tools the quick start promises, each with its sample grant.
    let r = call(
        3,
        "query_data",
        json!({"collection": "products", "limit": 5}),
    )
    .await;
    assert!(r.contains("Keyboard") && r.contains("\"count\":5"), "{r}");
    let r = call(4, "run_command", json!({"command": "uptime"})).await;
    assert!(
        r.contains("load average") && !r.contains("\"isError\":true"),
        "{r}"
    );
    let r = call(
        5,
        "get_metrics",
        json!({"metricType": "usage", "timeRange": "1h"}),
    )
    .await;
    assert!(r.contains("run_command") && r.contains("query_data"), "{r}");
    let r = call(
        6,
        "edit_file",
        json!({"path": "/notes/welcome.md", "old_text": "# Notes", "new_text": "# Notes (edited)"}),
    )
    .await;
    assert!(!r.contains("\"isError\":true"), "{r}");
    let notes = std::fs::read_to_string(local.path().join("notes/welcome.md")).unwrap();
    assert!(notes.starts_with("# Notes (edited)\n"), "{notes}");
}

/// The claims of a JWT, unverified.
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// How a test request presents a confidential client's secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// The secret registration issued.
    Right,
    /// The right one with its last character changed.
    Wrong,
    /// None (the client names itself by `client_id` in the form).
    Missing,
}

/// POSTs the form `pairs` to `path` as client `id` registered with `method`:
/// `client_secret_post` puts `client_id` and `client_secret` in the form;
/// `client_secret_basic` sends HTTP Basic (RFC 6749 §2.3.1), or only the
/// form's `client_id` when the secret is missing.
async fn as_client(
    o: &Oauth,
    path: &str,
    method: &str,
    id: &str,
    secret: &str,
    sent: Sent,
    pairs: &[(&str, &str)],
) -> oauth::Resp {
    let wrong = {
        let mut w = secret[..secret.len() - 1].to_owned();
        w.push(if secret.ends_with('A') { 'B' } else { 'A' });
        w
    };
    let secret = match sent {
        Sent::Right => Some(secret),
        Sent::Wrong => Some(wrong.as_str()),
        Sent::Missing => None,
    };
    let mut form: Vec<(&str, &str)> = pairs.to_vec();
    let mut rq = o
        .http
        .post(format!("{}{path}", o.base))
        .header("content-type", "application/x-www-form-urlencoded");
    match (method, secret) {
        ("client_secret_basic", Some(s)) => rq = rq.basic_auth(id, Some(s)),
        (_, s) => {
            form.push(("client_id", id));
            if let Some(s) = s {
                form.push(("client_secret", s));
            }
        }
    }
    let r = rq.body(oauth::form(&form)).send().await.unwrap();
    oauth::Resp {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// A 401 `invalid_client` (RFC 6749 §5.2): with a Basic challenge exactly
/// when the client tried HTTP Basic.
fn assert_invalid_client(r: &oauth::Resp, tried_basic: bool) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_client", "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        tried_basic.then_some("Basic realm=\"stockade\""),
    );
}

/// Issue 23: confidential clients. Registration with
/// `token_endpoint_auth_method` `client_secret_post` or `client_secret_basic`
/// issues a secret (never expiring, stored only as its hash); the right secret
/// works at `/token` (code and refresh grants) and `/revoke`; a wrong or
/// missing one is refused there with 401 `invalid_client` (with a Basic
/// challenge when HTTP Basic was tried, RFC 6749 §5.2), audited, and spends
/// nothing: the code and the refresh token still work afterwards. A
/// confidential client's token cannot be revoked by a request that names no
/// client at all (RFC 7009 §2.1).
#[tokio::test(flavor = "multi_thread")]
async fn confidential_clients_need_their_secret_at_token_and_revoke() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();
    let mut secrets = Vec::new();
    for method in ["client_secret_post", "client_secret_basic"] {
        let basic = method == "client_secret_basic";
        let reg = o
            .post_json(
                "/register",
                &json!({
                    "client_name": format!("confidential {method}"),
                    "redirect_uris": [REDIRECT],
                    "token_endpoint_auth_method": method,
                }),
            )
            .await;
        assert_eq!(reg.status, StatusCode::CREATED, "{}", reg.body);
        assert_eq!(reg.header("cache-control").as_deref(), Some("no-store"));
        let doc = reg.json();
        assert_eq!(doc["token_endpoint_auth_method"], method);
        assert_eq!(doc["client_secret_expires_at"], 0);
        let id = doc["client_id"].as_str().unwrap().to_owned();
        let secret = doc["client_secret"]
            .as_str()
            .unwrap_or_else(|| panic!("{method}: no client_secret issued: {doc}"))
            .to_owned();
        assert_eq!(secret.len(), 43, "256 random bits, base64url: {secret}");
        secrets.push(secret.clone());

        // The code grant: wrong and missing secrets are refused first.
        let (code, verifier) = o.login(&id, PASSWORD).await;
        let exchange = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        for (sent, why) in [
            (Sent::Wrong, "wrong client secret"),
            (Sent::Missing, "client secret missing"),
        ] {
            let mark = audit_mark(&data);
            let r = as_client(&o, "/token", method, &id, &secret, sent, &exchange).await;
            assert_invalid_client(&r, basic && sent == Sent::Wrong);
            audited_since(
                &data,
                mark,
                "request_denied",
                &[
                    ("status", "401"),
                    ("path", "/token"),
                    (
                        "reason",
                        &format!("token: client authentication failed: {why}"),
                    ),
                ],
            );
        }
        // The refused attempts did not spend the code.
        let r = as_client(&o, "/token", method, &id, &secret, Sent::Right, &exchange).await;
        assert_eq!(r.status, StatusCode::OK, "{method}: {}", r.body);
        let t = tokens(&r);
        assert_eq!(jwt_claims(&t.access)["client_id"], id.as_str());
        assert_audited(&data, "token_issued", &[("client_id", &id)]);
        let text = greet_with(&host.mcp_url(), &t.access).await;
        assert!(text.contains("Hello, Ada"), "{text}");

        // The refresh grant.
        let refresh = [
            ("grant_type", "refresh_token"),
            ("refresh_token", t.refresh.as_str()),
        ];
        for sent in [Sent::Wrong, Sent::Missing] {
            let r = as_client(&o, "/token", method, &id, &secret, sent, &refresh).await;
            assert_invalid_client(&r, basic && sent == Sent::Wrong);
        }
        let r = as_client(&o, "/token", method, &id, &secret, Sent::Right, &refresh).await;
        assert_eq!(r.status, StatusCode::OK, "{method}: {}", r.body);
        let t2 = tokens(&r);

        // Revocation: wrong, missing and absent client authentication are
        // refused, and the tokens still work.
        let revoke = [("token", t2.refresh.as_str())];
        for (sent, why) in [
            (Sent::Wrong, "wrong client secret"),
            (Sent::Missing, "client secret missing"),
        ] {
            let mark = audit_mark(&data);
            let r = as_client(&o, "/revoke", method, &id, &secret, sent, &revoke).await;
            assert_invalid_client(&r, basic && sent == Sent::Wrong);
            audited_since(
                &data,
                mark,
                "request_denied",
                &[
                    ("status", "401"),
                    ("path", "/revoke"),
                    (
                        "reason",
                        &format!("revoke: client authentication failed: {why}"),
                    ),
                ],
            );
        }
        let mark = audit_mark(&data);
        let r = o.post_form("/revoke", &revoke).await;
        assert_invalid_client(&r, false);
        audited_since(
            &data,
            mark,
            "request_denied",
            &[
                ("status", "401"),
                ("path", "/revoke"),
                ("reason", "client secret missing"),
            ],
        );
        assert!(
            !oauth::audit(&data)
                .iter()
                .any(|l| l["event"] == "token_revoked" && l["client_id"] == id.as_str()),
            "a refused revocation revoked nothing"
        );
        assert_eq!(
            o.mcp(Some(&t2.access), &initialize()).await.status,
            StatusCode::OK
        );
        // The right secret revokes the family.
        let r = as_client(&o, "/revoke", method, &id, &secret, Sent::Right, &revoke).await;
        assert_eq!(r.status, StatusCode::OK, "{method}: {}", r.body);
        assert_audited(
            &data,
            "token_revoked",
            &[("client_id", &id), ("reason", "revoked at /revoke")],
        );
        assert_eq!(
            o.mcp(Some(&t2.access), &initialize()).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = as_client(&o, "/token", method, &id, &secret, Sent::Right, &refresh).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.json()["error"], "invalid_grant");
    }
    assert_ne!(secrets[0], secrets[1]);
    // The secrets were never logged nor audited, and are stored as hashes only.
    let log = host.log();
    let audit = audit_text(&data);
    let mut stored = Vec::new();
    for f in ["stockade.db", "stockade.db-wal"] {
        stored.extend(std::fs::read(data.join(f)).unwrap_or_default());
    }
    let stored = String::from_utf8_lossy(&stored);
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a client secret reached the log");
        assert!(!audit.contains(s.as_str()), "a client secret was audited");
        assert!(!stored.contains(s.as_str()), "a client secret was stored");
    }
    assert!(host.is_running());
}

/// Issue 23: `/revoke` with an access token (RFC 7009 §2.1; the hint, even a
/// wrong one, only speeds the search) revokes that token's whole family: the
/// token itself, the later access token of the same login and its refresh
/// token stop working; another login of the same client keeps working.
/// Revoking it again is a quiet 200.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_access_token_ends_its_family_only() {
    let mut host = HostBuilder::new().password(PASSWORD).start();
    let base = host.base_url();
    let o = Oauth::new(&base);
    let data = host.data_dir();
    let (client_id, t) = o.full_login(PASSWORD).await;
    let r = o.refresh(&client_id, &t.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t2 = tokens(&r);
    let (code, verifier) = o.login(&client_id, PASSWORD).await;
    let other = tokens(&o.exchange(&client_id, &code, &verifier).await);
    let fam = jwt_claims(&t.access)["fam"].as_str().unwrap().to_owned();
    assert_eq!(jwt_claims(&t2.access)["fam"], fam.as_str());
    assert_ne!(jwt_claims(&other.access)["fam"], fam.as_str());
    for access in [&t.access, &t2.access, &other.access] {
        assert_eq!(
            o.mcp(Some(access), &initialize()).await.status,
            StatusCode::OK
        );
    }

    let r = o
        .post_form(
            "/revoke",
            &[
                ("token", &t.access),
                ("token_type_hint", "refresh_token"),
                ("client_id", &client_id),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, "");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_audited(
        &data,
        "token_revoked",
        &[
            ("client_id", &client_id),
            ("family", &fam),
            ("reason", "revoked at /revoke"),
        ],
    );
    // The family is gone: both access tokens and the live refresh token.
    for access in [&t.access, &t2.access] {
        let mark = audit_mark(&data);
        let r = o.mcp(Some(access), &initialize()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\""),
        );
        audited_since(
            &data,
            mark,
            "request_denied",
            &[("status", "401"), ("reason", "invalid token: revoked")],
        );
    }
    let r = o.refresh(&client_id, &t2.refresh).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_audited(
        &data,
        "request_denied",
        &[("reason", "token: refresh token of a revoked family")],
    );
    // The client's other login is untouched.
    assert_eq!(
        o.mcp(Some(&other.access), &initialize()).await.status,
        StatusCode::OK
    );
    let r = o.refresh(&client_id, &other.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Again: 200, and nothing more is revoked or audited as revoked.
    let r = o
        .post_form(
            "/revoke",
            &[("token", &t2.access), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let revoked = oauth::audit(&data)
        .into_iter()
        .filter(|l| l["event"] == "token_revoked" && l["family"] == fam.as_str())
        .count();
    assert_eq!(revoked, 1);
    assert!(host.is_running());
}

/// Serves the files of a directory over https on a loopback port
/// (`openssl s_server -WWW` with a test CA's certificate for 127.0.0.1):
/// a Client ID Metadata Document's home. Stopped on drop.
struct HttpsFiles {
    child: std::process::Child,
    /// The directory served.
    dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    base: String,
}

impl HttpsFiles {
    fn start(tls: &common::postgres::Tls) -> HttpsFiles {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-WWW", "-cert"])
            .arg(&tls.server_cert)
            .arg("-key")
            .arg(&tls.server_key)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl is installed (Debian package openssl)");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // Reads to the end, so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ACCEPT ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("openssl s_server did not start");
            }
        };
        HttpsFiles {
            child,
            dir,
            base: format!("https://{addr}"),
        }
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 23: a login with a Client ID Metadata Document. The client id is an
/// https URL on loopback (a test CA the host trusts through `SSL_CERT_FILE`;
/// `auth.allow_cimd_private_networks` lifts the public-address rule that
/// tests/auth_attacks.rs shows refusing it by default); the host fetches the
/// document, shows its name on the login page, and the whole authorization
/// code + PKCE flow completes without registration: the token names the URL
/// as its client, calls a tool, refreshes and is revoked by that client. Such
/// a client is public: a secret is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_id_metadata_document_logs_in_and_calls_a_tool() {
    let tls = common::postgres::Tls::new("cimd");
    let files = HttpsFiles::start(&tls);
    let client_id = format!("{}/clients/app.json", files.base);
    std::fs::create_dir(files.dir.path().join("clients")).unwrap();
    std::fs::write(
        files.dir.path().join("clients/app.json"),
        json!({
            "client_id": client_id,
            "client_name": "Metadata <Doc> App",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        })
        .to_string(),
    )
    .unwrap();
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .config("[auth]\nallow_cimd_private_networks = true\n")
        .env("SSL_CERT_FILE", tls.ca.to_str().unwrap())
        .start();
    let o = Oauth::new(&host.base_url());
    let data = host.data_dir();

    let (verifier, challenge) = oauth::pkce();
    let page = o
        .authorize(&o.authorize_query(&client_id, &challenge, "md-1", &[]))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains("<strong>Metadata &lt;Doc&gt; App</strong>"),
        "the document's name, escaped: {}",
        page.body
    );
    assert!(
        page.body.contains(&format!("<code>{client_id}</code>")),
        "{}",
        page.body
    );
    let done = o.submit_login(&page, PASSWORD).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(done.header("location").unwrap().starts_with(REDIRECT));
    assert_eq!(done.location_param("state").as_deref(), Some("md-1"));
    let code = done.location_param("code").unwrap();
    assert_audited(
        &data,
        "login_succeeded",
        &[("subject", "operator"), ("client_id", &client_id)],
    );

    let r = o.exchange(&client_id, &code, &verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t = tokens(&r);
    assert_eq!(jwt_claims(&t.access)["client_id"], client_id.as_str());
    assert_audited(
        &data,
        "token_issued",
        &[("subject", "operator"), ("client_id", &client_id)],
    );
    let text = greet_with(&host.mcp_url(), &t.access).await;
    assert!(text.contains("Hello, Ada"), "{text}");
    assert_audited(
        &data,
        "tool_call",
        &[
            ("client_id", &client_id),
            ("target", "greet"),
            ("outcome", "ok"),
        ],
    );
    let r = o.refresh(&client_id, &t.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t2 = tokens(&r);

    // A public client: a secret is refused, and spends nothing.
    let mark = audit_mark(&data);
    let r = o
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t2.refresh),
                ("client_id", &client_id),
                ("client_secret", "made-up"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_client");
    audited_since(
        &data,
        mark,
        "request_denied",
        &[(
            "reason",
            "client authentication failed: metadata-document clients are public",
        )],
    );
    // Its own revocation works.
    let r = o
        .post_form(
            "/revoke",
            &[("token", &t2.refresh), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_audited(
        &data,
        "token_revoked",
        &[("client_id", &client_id), ("reason", "revoked at /revoke")],
    );
    assert_eq!(
        o.mcp(Some(&t2.access), &initialize()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(host.is_running());
}
