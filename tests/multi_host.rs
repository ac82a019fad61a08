//! End-to-end: two real `stockade` hosts sharing one real PostgreSQL (a
//! throwaway Debian cluster) behind a TCP load balancer, as a team runs them.
//! A login started on one host finishes on the other; tokens, refreshes, login
//! lockouts, the subject rate limit, key rotation and MCP sessions hold across
//! both; a host dies mid-session and the client carries on through the other.

mod common;
mod oauth;

use std::time::Duration;

use common::balancer::Balancer;
use common::postgres::Postgres;
use common::{Host, HostBuilder, bundled};
use oauth::{Oauth, Tokens, csrf_of, initialize, pkce, tokens};
use reqwest::StatusCode;
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

/// A client whose model answers sampling requests, and which, once asked,
/// points the balancer at host B: its reply goes to the other host than the
/// one running the call.
#[derive(Clone)]
struct Sampler {
    lb: Balancer,
}

// Sampling is deprecated from the 2026-07-28 revision (SEP-2577); 2025-11-25
// clients still use it, and so do the plugins that ask for it.
#[allow(deprecated)]
impl ClientHandler for Sampler {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::builder()
                .enable_sampling()
                .build(),
            rmcp::model::Implementation::new("sampler", "0"),
        )
    }

    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        self.lb.send_to(1);
        let asked = serde_json::to_value(&params.messages)
            .ok()
            .and_then(|v| {
                v.pointer("/0/content/text")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Ok(rmcp::model::CreateMessageResult::new(
            rmcp::model::SamplingMessage::assistant_text(format!("echo of {asked}")),
            "test-model".into(),
        ))
    }
}

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct ListWatcher(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl ClientHandler for ListWatcher {
    async fn on_tool_list_changed(&self, _: rmcp::service::NotificationContext<RoleClient>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

const ALICE_PW: &str = "alice-long-password-1";
const BOB_PW: &str = "bob-long-password-22";
/// `/mcp` requests per subject per minute, across the cluster. Alice's requests over the whole test (under 100
/// in one run, polls included) stay under it in any one minute; bob spends
/// exactly this many in step 5.
const LIMIT: usize = 200;

struct Cluster {
    _pg: Postgres,
    a: Host,
    b: Host,
    lb: Balancer,
    /// The shared config (with `host_id = "cli"`), for commands.
    cli_config: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// PostgreSQL, hosts `a` and `b` on it (same users, same public URL: the
    /// balancer's), the balancer in front of them.
    async fn start() -> Cluster {
        let pg = Postgres::start();
        pg.run(
            "postgres",
            "CREATE ROLE stockade LOGIN PASSWORD 'shared-store-pw'",
        );
        pg.run("postgres", "CREATE DATABASE stockade OWNER stockade");
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("store-password");
        std::fs::write(&pw, "shared-store-pw\n").unwrap();
        let secret = dir.path().join("store-secret");
        std::fs::write(&secret, "every-host-holds-this-same-store-secret-0123\n").unwrap();
        let users = oauth::users_file(
            dir.path(),
            &[("alice", ALICE_PW, &["mcp"]), ("bob", BOB_PW, &["mcp"])],
        );
        // The public URL names the balancer, which starts last.
        let lb_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = |host: &str| {
            format!(
                "[auth]\npublic_url = \"http://127.0.0.1:{lb_port}\"\nusers_file = \"{}\"\n\
                 rate_limit_per_minute = {LIMIT}\n\n[store]\n\
                 url = \"postgres://stockade@127.0.0.1:{}/stockade\"\npassword_file = \"{}\"\n\
                 secret_file = \"{}\"\n\
                 host_id = \"{host}\"\n\n[plugins.metrics.grants]\nmetrics = true\n\n\
                 [plugins.conformance.grants]\nclient = [\"sampling\", \"elicitation\"]\n",
                users.display(),
                pg.port,
                pw.display(),
                secret.display()
            )
        };
        let start = |host: &str| {
            HostBuilder::new()
                .auth(Some("builtin"))
                .plugin(&bundled("template"), "template")
                .plugin(&bundled("metrics"), "metrics")
                .plugin(&common::test_plugin("conformance"), "conformance")
                .config(&config(host))
                .start()
        };
        let a = start("host-a");
        let b = start("host-b");
        let lb = Balancer::start_on(lb_port, vec![a.addr, b.addr]).await;
        let cli_config = dir.path().join("cli.toml");
        std::fs::write(&cli_config, config("cli")).unwrap();
        Cluster {
            _pg: pg,
            a,
            b,
            lb,
            cli_config,
            dir,
        }
    }

    /// The protected resource every host serves.
    fn resource(&self) -> String {
        format!("{}/mcp", self.lb.base_url())
    }

    /// An OAuth client through the balancer (a new connection per request).
    fn through_lb(&self) -> Oauth {
        Oauth::unpooled(&self.lb.base_url())
    }

    /// Logs `user` in through the balancer: the login page from host A, the
    /// form posted to host B, the code redeemed at A. (client_id, tokens).
    async fn split_login(&self, user: &str, password: &str) -> (String, Tokens) {
        let lb = self.through_lb();
        self.lb.send_to(0);
        let client_id = lb.register().await;
        let (verifier, challenge) = pkce();
        let page = lb
            .authorize(&lb.authorize_query(&client_id, &challenge, "st", &[]))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        self.lb.send_to(1);
        let done = lb
            .post_form(
                "/authorize",
                &[
                    ("csrf", &csrf_of(&page.body)),
                    ("username", user),
                    ("password", password),
                    ("action", "approve"),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let code = done.location_param("code").expect("a code");
        self.lb.send_to(0);
        let r = lb.exchange(&client_id, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        self.lb.round_robin();
        (client_id, tokens(&r))
    }

    /// Tries `user`'s password on `host` directly, from client address
    /// 127.0.0.2; the form's status.
    async fn try_login(&self, host: &Host, client_id: &str, user: &str, pw: &str) -> StatusCode {
        let o = Oauth::from_address(&host.base_url(), "127.0.0.2");
        let (_, challenge) = pkce();
        let resource = self.resource();
        let page = o
            .authorize(&o.authorize_query(
                client_id,
                &challenge,
                "s",
                &[("resource", resource.as_str())],
            ))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let r = o
            .post_form(
                "/authorize",
                &[
                    ("csrf", &csrf_of(&page.body)),
                    ("username", user),
                    ("password", pw),
                    ("action", "approve"),
                ],
            )
            .await;
        r.status
    }
}

async fn connect(url: &str, token: &str) -> RunningService<rmcp::RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    ().serve(transport).await.expect("the MCP client connects")
}

async fn call_greet<S: rmcp::Service<rmcp::RoleClient>>(
    client: &RunningService<rmcp::RoleClient, S>,
    name: &str,
) -> Result<String, String> {
    let args = json!({ "name": name }).as_object().unwrap().clone();
    let r = client
        .call_tool(CallToolRequestParams::new("greet".to_owned()).with_arguments(args))
        .await
        .map_err(|e| e.to_string())?;
    Ok(common::result_text(&r))
}

/// A 2026-07-28 `tools/call` of `tool` on `host` (sampling and elicitation
/// declared), with the answers and state of an earlier round if given; the
/// JSON-RPC answer.
async fn modern_call(
    host: &Host,
    token: &str,
    tool: &str,
    args: &Value,
    retry: Option<(Value, String)>,
) -> Value {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some((responses, state)) = retry {
        params["inputResponses"] = responses;
        params["requestState"] = state.into();
    }
    let caps =
        json!({"io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "elicitation": {}}});
    let r = common::modern(Some(token), &host.mcp_url(), 1, "tools/call", &params, caps).await;
    common::rpc_answer(r).await
}

async fn greet(url: &str, token: &str) -> String {
    let client = connect(url, token).await;
    let text = call_greet(&client, "Ada").await.unwrap();
    let _ = client.cancel().await;
    text
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let head = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

/// Waits until at least 15 s remain in the current minute (the shared limit
/// counts whole minutes).
async fn wait_for_fresh_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if secs > 45 {
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_postgresql_serve_any_request() {
    let mut c = Cluster::start().await;
    let lb_mcp = c.resource();
    let on_a = Oauth::new(&c.a.base_url());
    let on_b = Oauth::new(&c.b.base_url());

    // 1. A login whose page host A showed and whose form host B took; its
    //    token works on both hosts directly and through the balancer.
    let (client_id, t) = c.split_login("alice", ALICE_PW).await;
    for url in [c.a.mcp_url(), c.b.mcp_url(), lb_mcp.clone()] {
        assert_eq!(greet(&url, &t.access).await, "Hello, Ada.", "{url}");
    }

    // 2. Failed logins from one address count on both hosts: five failures,
    //    alternating, lock it out on both, even with the right password.
    for i in 0..5 {
        let host = if i % 2 == 0 { &c.a } else { &c.b };
        let s = c
            .try_login(host, &client_id, "bob", "wrong-password-xx")
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "failure {i}");
    }
    for host in [&c.a, &c.b] {
        let s = c.try_login(host, &client_id, "bob", BOB_PW).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{}", host.base_url());
    }

    // 3. Refresh on B; the new access token works on A.
    let r = on_b.refresh(&client_id, &t.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t2 = tokens(&r);
    assert_eq!(greet(&c.a.mcp_url(), &t2.access).await, "Hello, Ada.");

    // 3b. `get_metrics` on B counts the calls both hosts served (A's reach
    //     the shared store with its next flush, within 10 s).
    let greets_audited = [&c.a, &c.b]
        .iter()
        .map(|h| {
            common::audit_events(h, "tool_call")
                .iter()
                .filter(|l| l["target"] == "greet")
                .count()
        })
        .sum::<usize>();
    assert!(greets_audited >= 4, "{greets_audited}");
    let watcher = connect(&c.b.mcp_url(), &t2.access).await;
    let mut counted = 0;
    for _ in 0..40 {
        let args = json!({"metricType": "usage", "timeRange": "1h"});
        let r = watcher
            .call_tool(
                CallToolRequestParams::new("get_metrics".to_owned())
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        let usage: serde_json::Value = serde_json::from_str(&common::result_text(&r)).unwrap();
        counted = usage["byTool"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["tool"] == "greet")
            .map_or(0, |row| row["calls"].as_u64().unwrap()) as usize;
        if counted == greets_audited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        counted, greets_audited,
        "every host's greet calls, once each"
    );
    let _ = watcher.cancel().await;

    // 4. The same refresh token at A and B at once: exactly one succeeds, and
    //    the reuse revokes the whole family, on both hosts.
    let (ra, rb) = tokio::join!(
        on_a.refresh(&client_id, &t2.refresh),
        on_b.refresh(&client_id, &t2.refresh)
    );
    let ok: Vec<_> = [&ra, &rb]
        .into_iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert_eq!(ok.len(), 1, "{} / {}", ra.body, rb.body);
    let t3 = tokens(ok[0]);
    for host in [&on_a, &on_b] {
        let r = host.mcp(Some(&t3.access), &initialize()).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{}: {}",
            host.base,
            r.body
        );
    }

    // 5. Bob's limit is one count across both hosts (bob logs in from the
    //    balancer's address, which is not locked out).
    let (_, bob) = c.split_login("bob", BOB_PW).await;
    wait_for_fresh_minute().await;
    let mut allowed = 0;
    let mut refused_by = Vec::new();
    for i in 0..LIMIT + 4 {
        let host = if i % 2 == 0 { &on_a } else { &on_b };
        let r = host.mcp(Some(&bob.access), &initialize()).await;
        match r.status {
            s if s.is_success() => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => refused_by.push(i % 2),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!(allowed, LIMIT, "requests to both hosts count");
    assert!(
        refused_by.contains(&0) && refused_by.contains(&1),
        "{refused_by:?}"
    );

    // 6. A key rotated from the command line (against the shared store) is
    //    used by A within seconds and honoured by B; tokens signed with the
    //    old key stay valid.
    let (carol_client, carol) = c.split_login("alice", ALICE_PW).await;
    let old_kid = kid_of(&carol.access);
    let (ok, out) = common::run_stockade(
        &["keys", "rotate", "--config", c.cli_config.to_str().unwrap()],
        c.dir.path(),
    );
    assert!(ok, "{out}");
    let mut published = 0;
    for _ in 0..150 {
        published = on_a.get("/jwks.json").await.json()["keys"]
            .as_array()
            .unwrap()
            .len();
        if published == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published, 2, "host A publishes the old and the new key");
    let r = on_a.refresh(&carol_client, &carol.refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let rotated = tokens(&r);
    assert_ne!(kid_of(&rotated.access), old_kid, "A signs with the new key");
    assert_eq!(greet(&c.b.mcp_url(), &rotated.access).await, "Hello, Ada.");
    assert_eq!(
        greet(&c.b.mcp_url(), &carol.access).await,
        "Hello, Ada.",
        "the old key is still accepted"
    );

    // 6b. A plugin dropped into A's directory: a client whose session lives
    //     on B hears `list_changed` too (relayed with NOTIFY).
    let watcher = ListWatcher::default();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(c.b.mcp_url())
            .auth_header(rotated.access.clone()),
    );
    let watching = watcher.clone().serve(transport).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_plugins = c.a.data_dir().parent().unwrap().join("plugins");
    std::fs::copy(common::test_plugin("v1"), a_plugins.join("extra.wasm")).unwrap();
    let mut heard = 0;
    for _ in 0..100 {
        heard = watcher.0.load(std::sync::atomic::Ordering::SeqCst);
        if heard > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        heard > 0,
        "B's session heard of A's reload\nA:\n{}\nB:\n{}",
        c.a.log()
            .lines()
            .filter(|l| l.contains("reload") || l.contains("extra") || l.contains("host"))
            .collect::<Vec<_>>()
            .join("\n"),
        c.b.log()
            .lines()
            .filter(|l| l.contains("reload") || l.contains("host") || l.contains("list"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = watching.cancel().await;

    // 6c. Sampling across hosts: the call runs on A; the client's reply goes
    //     through the balancer to B, which relays it to A.
    c.lb.send_to(0);
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(lb_mcp.clone())
            .auth_header(rotated.access.clone()),
    );
    let sampler = Sampler { lb: c.lb.clone() }.serve(transport).await.unwrap();
    let args = json!({"prompt": "what is 2+2?"});
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        sampler.call_tool(
            CallToolRequestParams::new("test_sampling".to_owned())
                .with_arguments(args.as_object().unwrap().clone()),
        ),
    )
    .await
    .expect("the sampled call finishes")
    .unwrap();
    assert_eq!(
        common::result_text(&r),
        "LLM response: echo of what is 2+2?"
    );
    let on = |h: &Host| {
        common::audit_events(h, "tool_call")
            .iter()
            .filter(|l| l["target"] == "test_sampling")
            .count()
    };
    assert_eq!((on(&c.a), on(&c.b)), (1, 0), "the call ran on A");
    assert!(
        c.a.log().contains("relayed a client reply from host-b"),
        "the reply crossed from B to A:\n{}",
        c.a.log()
    );
    let _ = sampler.cancel().await;
    c.lb.round_robin();

    // 6d. Issue 18.3: the relay is no write channel: a "reply" to a request
    //     nobody sent, however large, is not stored or announced; it is
    //     audited as a refusal. (25 bodies of 4 MB were stored before.)
    let r = on_b.mcp(Some(&rotated.access), &initialize()).await;
    let sid = r.header("mcp-session-id").expect("a session id");
    on_b.in_session(
        reqwest::Method::POST,
        &rotated.access,
        &sid,
        Some(&oauth::initialized()),
    )
    .await;
    let filler = "x".repeat(900 * 1024);
    for id in 0..5 {
        let reply = json!({"jsonrpc": "2.0", "id": 7000 + id, "result": {"filler": filler}});
        let r = on_b
            .in_session(reqwest::Method::POST, &rotated.access, &sid, Some(&reply))
            .await;
        assert!(r.status.is_success(), "{}: {}", r.status, r.body);
    }
    assert_eq!(
        c._pg
            .run("stockade", "SELECT count(*) FROM mcp_replies")
            .trim(),
        "0",
        "nothing stored"
    );
    let refused = common::audit_events(&c.b, "request_denied")
        .iter()
        .filter(|l| l["reason"] == "client reply to no pending server request")
        .count();
    assert_eq!(refused, 5, "each unsolicited reply is audited");

    // 6b. Issue 19: a 2026-07-28 call that asks its client a question ends
    //     with `input_required` on one host; the retry with the answer goes
    //     to the other host, which opens the state (its key comes from the
    //     shared store secret) and completes the call.
    for (first, second, tool, args, answer, expect) in [
        (
            &c.a,
            &c.b,
            "test_sampling",
            json!({"prompt": "Capital of France?"}),
            json!({"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "m"}),
            "LLM response: Paris",
        ),
        (
            &c.b,
            &c.a,
            "test_elicitation",
            json!({"message": "Who?"}),
            json!({"action": "accept", "content": {"username": "ada", "email": "a@x.org"}}),
            "User response: action=accept",
        ),
    ] {
        let asked = modern_call(first, &rotated.access, tool, &args, None).await;
        let result = &asked["result"];
        assert_eq!(result["resultType"], "input_required", "{asked}");
        let key = result["inputRequests"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        let state = result["requestState"].as_str().unwrap().to_owned();
        let answered = json!({ key: answer });
        let done = modern_call(
            second,
            &rotated.access,
            tool,
            &args,
            Some((answered, state)),
        )
        .await;
        let text = done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.starts_with(expect), "{tool} on the other host: {done}");
    }

    // 6c. A `subscriptions/listen` stream on B hears a resource update that a
    //     plugin on A announces (relayed through the store).
    let filter = json!({"notifications": {"toolsListChanged": true,
        "resourceSubscriptions": ["test://watched-resource"]}});
    let listen = common::modern(
        Some(&rotated.access),
        &c.b.mcp_url(),
        5,
        "subscriptions/listen",
        &filter,
        json!({}),
    )
    .await;
    let mut stream = common::SseReader::new(listen);
    let ack = stream
        .next(Duration::from_secs(5))
        .await
        .expect("an acknowledgement");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    let touched = modern_call(
        &c.a,
        &rotated.access,
        "test_touch_watched_resource",
        &json!({}),
        None,
    )
    .await;
    assert_eq!(touched["result"]["content"][0]["text"], "true", "{touched}");
    let heard = stream
        .next(Duration::from_secs(10))
        .await
        .expect("resources/updated from A");
    assert_eq!(
        heard["method"], "notifications/resources/updated",
        "{heard}"
    );
    assert_eq!(heard["params"]["uri"], "test://watched-resource", "{heard}");
    drop(stream);

    // 7. A session opened through the balancer on A; A dies; the same client
    //    carries on through B without logging in or initializing again.
    c.lb.send_to(0);
    let client = connect(&lb_mcp, &rotated.access).await;
    assert_eq!(
        call_greet(&client, "before").await.unwrap(),
        "Hello, before."
    );
    // The same by hand, to see the session id: opened on A...
    let r = on_a.mcp(Some(&rotated.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let session = r.header("mcp-session-id").expect("a session id");
    let r = on_a
        .in_session(
            reqwest::Method::POST,
            &rotated.access,
            &session,
            Some(&oauth::initialized()),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    c.a.kill();
    // ...served by B with no new handshake (rmcp's client would quietly
    // re-initialize on a 404, so this is checked without it)...
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "greet", "arguments": {"name": "raw"}}});
    let r = on_b
        .in_session(
            reqwest::Method::POST,
            &rotated.access,
            &session,
            Some(&call),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Hello, raw."), "{}", r.body);
    // ...and only for the user who opened it.
    let r = on_b
        .in_session(reqwest::Method::POST, &bob.access, &session, Some(&call))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = match call_greet(&client, "after").await {
        Ok(t) => t,
        // The request in flight on the dead host's connection may fail once.
        Err(_) => call_greet(&client, "after").await.unwrap(),
    };
    assert_eq!(after, "Hello, after.");
    assert_eq!(call_greet(&client, "again").await.unwrap(), "Hello, again.");

    // 8. A client of the stateless revision (2026-07-28: no session at all).
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(c.b.mcp_url())
            .auth_header(rotated.access.clone()),
    );
    let stateless = ()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("a 2026-07-28 client starts");
    assert_eq!(
        call_greet(&stateless, "nobody").await.unwrap(),
        "Hello, nobody."
    );

    // 9. Each host keeps its own audit chain, its id in every line, and the
    //    chain verifies (A's too, though it was killed).
    for (host, id) in [(&c.a, "host-a"), (&c.b, "host-b")] {
        let lines = common::read_audit(host);
        assert!(lines.len() > 10);
        assert!(lines.iter().all(|l| l["host"] == id), "{id}: {lines:?}");
        let dir = host.data_dir().parent().unwrap().to_owned();
        let (ok, out) = common::run_stockade(&["audit", "verify", "data/audit"], &dir);
        assert!(ok, "{id}: {out}");
    }
}
