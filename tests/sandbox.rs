//! The hostile plugin suite (issue 4): the real `stockade` binary, the `hostile`
//! and `import-unknown` test plugins built from source, real MCP clients.
//!
//! Every attack asserts that (1) the call fails with the right, readable error,
//! (2) the host keeps serving (a follow-up call succeeds and the process runs),
//! (3) the audit log records it (the limit, or `capability_denied`), and, for the
//! resource-exhaustion attacks, (4) a well-behaved plugin's calls from another
//! client keep succeeding *while* the attack runs; their latencies are printed
//! (`cargo test -p stockade --test sandbox -- --nocapture`).
//!
//! Grants get positive tests too, so that the denials are not vacuous.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Host, HostBuilder, audit_events, bundled, read_audit, test_plugin, wait_audit};
use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use serde_json::{Value, json};

// ---- Helpers ------------------------------------------------------------------

type Client = RunningService<RoleClient, ()>;

fn call(name: &str, v: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(v.as_object().unwrap().clone())
}

fn text(r: &CallToolResult) -> String {
    common::result_text(r)
}

/// Calls `tool` and returns (is_error, text), failing the test on protocol errors
/// or when no answer comes within 30 s.
async fn try_call(client: &Client, tool: &str, args: Value) -> (bool, String) {
    let r = tokio::time::timeout(Duration::from_secs(30), client.call_tool(call(tool, args)))
        .await
        .unwrap_or_else(|_| panic!("no answer to `{tool}` within 30 s"))
        .unwrap_or_else(|e| panic!("protocol error calling `{tool}`: {e}"));
    (r.is_error == Some(true), text(&r))
}

/// Calls a tool that must fail; returns its error text.
async fn must_fail(client: &Client, tool: &str, args: Value) -> String {
    let (is_error, t) = try_call(client, tool, args).await;
    assert!(
        is_error,
        "`{tool}` should have failed but returned: {}",
        short(&t)
    );
    t
}

/// Calls a hostile capability tool; returns its `OK:`/`ERR:` text.
async fn cap(client: &Client, tool: &str, args: Value) -> String {
    let (is_error, t) = try_call(client, tool, args).await;
    assert!(!is_error, "`{tool}` crashed instead of returning: {t}");
    t
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// The last `tool_call` audit record for `tool`.
fn last_tool_call(host: &Host, tool: &str) -> Value {
    audit_events(host, "tool_call")
        .into_iter()
        .rev()
        .find(|l| l["target"] == tool)
        .unwrap_or_else(|| {
            panic!(
                "no tool_call audit line for `{tool}`:\n{:#?}",
                read_audit(host)
            )
        })
}

/// Asserts a `capability_denied` line for `capability` by plugin `hostile` whose
/// detail contains every one of `needles`.
fn assert_denied(host: &Host, capability: &str, needles: &[&str]) {
    let lines = audit_events(host, "capability_denied");
    let found = lines.iter().any(|l| {
        l["plugin"] == "hostile"
            && l["capability"] == capability
            && needles
                .iter()
                .all(|n| l["detail"].as_str().unwrap_or_default().contains(n))
    });
    assert!(
        found,
        "no capability_denied line for {capability} containing {needles:?}:\n{lines:#?}"
    );
}

/// Asserts that the failed call of `tool` was audited with `limit`.
fn assert_limit_audited(host: &Host, tool: &str, limit: &str) -> Value {
    let line = last_tool_call(host, tool);
    assert_eq!(line["plugin"], "hostile", "{line}");
    assert_eq!(line["outcome"], "failed", "{line}");
    assert_eq!(line["limit"], limit, "{line}");
    line
}

/// The host still serves: the hostile plugin answers again and the process runs.
async fn assert_still_serving(host: &mut Host, client: &Client) {
    let (is_error, t) = try_call(client, "ping", json!({})).await;
    assert!(!is_error && t == "pong", "follow-up call failed: {t}");
    assert!(host.is_running(), "the host process died");
}

/// Resource-exhaustion tests compete for CPU with each other on small machines;
/// they take turns so that the latencies they measure mean something.
static ATTACK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a well-behaved plugin fared while an attack ran.
struct Bystander {
    latencies: Vec<Duration>,
    attacks: Vec<(bool, String)>,
}

impl Bystander {
    fn median(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[l.len() / 2]
    }
}

/// Runs `tool(args)` from one client over and over (each call is one attack)
/// while another client calls the template plugin's `greet` `n` times; returns
/// the bystander's latencies and the attacks' results. Prints the measurements.
async fn during_attack(host: &Host, tool: &'static str, args: Value, n: usize) -> Bystander {
    let attacker = Arc::new(host.client().await);
    let bystander = host.client().await;
    // Warm up the bystander's session so the first measurement is not a handshake.
    let (e, _) = try_call(&bystander, "greet", json!({"name": "warm-up"})).await;
    assert!(!e);

    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(0));
    let attack = {
        let (attacker, stop, running) = (attacker.clone(), stop.clone(), running.clone());
        tokio::spawn(async move {
            let mut results = Vec::new();
            while !stop.load(Ordering::SeqCst) || results.is_empty() {
                running.fetch_add(1, Ordering::SeqCst);
                results.push(try_call(&attacker, tool, args.clone()).await);
                running.fetch_sub(1, Ordering::SeqCst);
            }
            results
        })
    };
    // Let the first attack get going.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut latencies = Vec::with_capacity(n);
    let mut overlapped = 0;
    for i in 0..n {
        let t = Instant::now();
        let (is_error, answer) = try_call(
            &bystander,
            "greet",
            json!({"name": format!("bystander {i}")}),
        )
        .await;
        latencies.push(t.elapsed());
        assert!(
            !is_error && answer.contains("Hello, bystander"),
            "bystander call {i} failed during `{tool}`: {answer}"
        );
        if running.load(Ordering::SeqCst) > 0 {
            overlapped += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let attacks = attack.await.unwrap();
    let b = Bystander { latencies, attacks };
    let mut sorted = b.latencies.clone();
    sorted.sort();
    println!(
        "[{tool}] {} attack call(s); bystander greet x{n} ({overlapped} while an attack was running): \
         min {:?}, median {:?}, p90 {:?}, max {:?}",
        b.attacks.len(),
        sorted[0],
        b.median(),
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() - 1],
    );
    assert!(
        overlapped >= n / 2,
        "the attack `{tool}` did not overlap the bystander's calls ({overlapped}/{n})"
    );
    assert!(
        b.median() < Duration::from_millis(500),
        "bystander median latency {:?} during `{tool}`",
        b.median()
    );
    b
}

/// Limits of the attack host: small, so the suite stays fast.
const ATTACK_LIMITS: &str = r#"
[plugins.hostile.limits]
fuel = 1000000000000
timeout_ms = 2000
memory_mib = 32
table_elements = 5000
max_result_kib = 1024
max_log_kib = 64
"#;

fn attack_host() -> Host {
    HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("hostile"), "hostile")
        .config(ATTACK_LIMITS)
        .start()
}

// ---- Resource exhaustion ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_times_out_without_starving_others() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let b = during_attack(&host, "spin", json!({}), 20).await;
    let (is_error, t) = &b.attacks[0];
    assert!(is_error);
    assert!(
        t.contains("tool `spin` (plugin `hostile`) failed: timed out after 2 s"),
        "{t}"
    );
    let line = assert_limit_audited(&host, "spin", "timeout");
    let us = line["duration_us"].as_u64().unwrap();
    assert!(
        (1_900_000..4_000_000).contains(&us),
        "stopped near its 2 s deadline: {us} µs"
    );
    let client = host.client().await;
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sleeping_forever_times_out_without_starving_others() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let b = during_attack(&host, "sleep", json!({"secs": 3600}), 20).await;
    let (is_error, t) = &b.attacks[0];
    assert!(is_error);
    assert!(t.contains("timed out after 2 s"), "{t}");
    let line = assert_limit_audited(&host, "sleep", "timeout");
    assert!(line["duration_us"].as_u64().unwrap() < 4_000_000, "{line}");
    let client = host.client().await;
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_overflows_the_stack_cleanly() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let b = during_attack(&host, "recurse", json!({}), 20).await;
    let (is_error, t) = &b.attacks[0];
    assert!(is_error);
    assert!(
        t.contains("plugin crashed") && t.contains("stack overflow"),
        "{t}"
    );
    let line = last_tool_call(&host, "recurse");
    assert_eq!(line["outcome"], "failed", "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("stack overflow"),
        "{line}"
    );
    // Big frames overflow the guest's own shadow stack in linear memory first:
    // that is a memory fault inside the guest's region, contained the same way.
    let b = during_attack(&host, "recurse_frames", json!({}), 20).await;
    let (is_error, t) = &b.attacks[0];
    println!("[recurse_frames] {t}");
    assert!(
        *is_error && t.contains("tool `recurse_frames` (plugin `hostile`) failed: plugin crashed"),
        "{t}"
    );
    assert_eq!(last_tool_call(&host, "recurse_frames")["outcome"], "failed");
    let client = host.client().await;
    // Bounded recursion in the same plugin still works: nothing is left broken.
    let (e, t) = try_call(&client, "recurse", json!({"depth": 100})).await;
    assert!(!e && t.starts_with("reached"), "{t}");
    let (e, t) = try_call(&client, "recurse_frames", json!({"depth": 100})).await;
    assert!(!e && t.starts_with("reached"), "{t}");
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_hits_the_memory_limit() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let b = during_attack(&host, "alloc_bomb", json!({}), 20).await;
    let (is_error, t) = &b.attacks[0];
    assert!(is_error);
    assert!(t.contains("memory limit 32 MiB exceeded"), "{t}");
    assert!(
        b.attacks
            .iter()
            .all(|(e, t)| *e && t.contains("memory limit 32 MiB exceeded"))
    );
    assert_limit_audited(&host, "alloc_bomb", "memory");
    let client = host.client().await;
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn table_bomb_hits_the_table_limit() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let client = host.client().await;
    let (is_error, t) = try_call(&client, "table_bomb", json!({})).await;
    // Never skipped (issue 23.1): scripts/build-plugins builds the hostile
    // plugin so that it can grow its table.
    assert!(
        !t.contains("table_bomb unavailable"),
        "the hostile plugin was built without table.grow; build it with scripts/build-plugins: {t}"
    );
    assert!(is_error, "{t}");
    assert!(t.contains("table limit of 5000 elements exceeded"), "{t}");
    assert_limit_audited(&host, "table_bomb", "table");
    let b = during_attack(&host, "table_bomb", json!({}), 20).await;
    assert!(
        b.attacks
            .iter()
            .all(|(e, t)| *e && t.contains("table limit"))
    );
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_result_is_refused_by_size() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    // 8 MiB: within the 32 MiB memory cap, eight times the 1024 KiB result cap.
    let b = during_attack(&host, "huge_result", json!({"mib": 8}), 20).await;
    let (is_error, t) = &b.attacks[0];
    assert!(is_error);
    // Stopped as the bytes cross into the host (issue 11.8a), not after.
    assert!(
        t.contains("passed more than 1024 KiB to the host at once (max_result_kib)"),
        "{}",
        short(t)
    );
    assert_limit_audited(&host, "huge_result", "result_size");
    let client = host.client().await;
    let (e, t) = try_call(&client, "huge_result", json!({"mib": 0})).await;
    assert!(!e && t.is_empty(), "an empty result is fine");
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_flood_is_capped_and_counted() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let b = during_attack(&host, "log_flood", json!({"count": 100_000}), 20).await;
    let (is_error, t) = &b.attacks[0];
    assert!(!is_error, "the flood call itself completes: {t}");
    assert_eq!(t, "sent 100000 log messages");
    let line = last_tool_call(&host, "log_flood");
    assert_eq!(line["outcome"], "ok", "{line}");
    let dropped = line["dropped_notifications"].as_u64().unwrap();
    // 64 KiB of ~70-byte messages: about a thousand get through, the rest are dropped.
    assert!(
        dropped > 90_000 && dropped < 100_000,
        "dropped {dropped}: {line}"
    );
    println!("[log_flood] dropped_notifications = {dropped} of 100000");
    let client = host.client().await;
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_flood_is_capped() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = attack_host();
    let b = during_attack(&host, "stdout_flood", json!({"mib": 16}), 10).await;
    let (is_error, t) = &b.attacks[0];
    // The capture is bounded (the host keeps 64 KiB); writes past it fail inside
    // the plugin, which goes on.
    assert!(!is_error, "{t}");
    assert!(t.starts_with("wrote 16777216 bytes"), "{t}");
    assert_eq!(last_tool_call(&host, "stdout_flood")["outcome"], "ok");
    let client = host.client().await;
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_and_trap_are_contained() {
    let mut host = attack_host();
    let client = host.client().await;
    let t = must_fail(&client, "panic", json!({})).await;
    assert!(
        t.contains("plugin crashed") && t.contains("hostile plugin panicked on purpose"),
        "{t}"
    );
    let t = must_fail(&client, "trap", json!({})).await;
    println!("[trap] {t}");
    assert!(t.contains("plugin crashed"), "{t}");
    assert_eq!(last_tool_call(&host, "panic")["outcome"], "failed");
    assert_eq!(last_tool_call(&host, "trap")["outcome"], "failed");
    assert_still_serving(&mut host, &client).await;
}

/// A crash names the trap, so the operator (and the model) can tell an
/// `unreachable` from a memory fault.
#[tokio::test(flavor = "multi_thread")]
async fn crashes_name_the_trap() {
    let mut host = attack_host();
    let client = host.client().await;
    let t = must_fail(&client, "trap", json!({})).await;
    assert!(t.contains("unreachable"), "{t}");
    let t = must_fail(&client, "recurse_frames", json!({})).await;
    assert!(t.contains("out of bounds"), "{t}");
    assert!(
        !last_tool_call(&host, "trap")["error"]
            .as_str()
            .unwrap()
            .ends_with("backtrace:")
    );
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fuel_limit_stops_a_spinning_plugin() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\nfuel = 20000000\n")
        .start();
    let client = host.client().await;
    let t = must_fail(&client, "spin", json!({})).await;
    assert!(
        t.contains("fuel exhausted: the call used all 20000000 units"),
        "{t}"
    );
    let line = assert_limit_audited(&host, "spin", "fuel");
    assert!(line["fuel"].as_u64().unwrap() >= 20_000_000, "{line}");
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_plugin_limits_override_the_defaults() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[limits]\ntimeout_ms = 10000\n\n[plugins.hostile.limits]\ntimeout_ms = 1000\nfuel = 1000000000000\n")
        .start();
    let client = host.client().await;
    let started = Instant::now();
    let t = must_fail(&client, "spin", json!({})).await;
    assert!(t.contains("timed out after 1 s"), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_limit_audited(&host, "spin", "timeout");
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_cap_refuses_the_second_call() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\nfuel = 1000000000000\ntimeout_ms = 2000\nmax_concurrent = 1\nmax_queue = 0\n")
        .start();
    let a = host.client().await;
    let b = host.client().await;
    let first = tokio::spawn(async move {
        let r = try_call(&a, "spin", json!({})).await;
        (a, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let t = must_fail(&b, "spin", json!({})).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "refused at once, not queued"
    );
    assert!(
        t.contains("too many concurrent calls: plugin `hostile` is running 1 and queueing 0"),
        "{t}"
    );
    assert_limit_audited(&host, "spin", "concurrency");
    let (_a, (is_error, t)) = first.await.unwrap();
    assert!(is_error && t.contains("timed out after 2 s"), "{t}");
    // The slot is free again.
    assert_still_serving(&mut host, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation_stops_a_running_call() {
    use rmcp::model::{CallToolRequest, ClientRequest};
    use rmcp::service::PeerRequestOptions;

    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\nfuel = 100000000000000\ntimeout_ms = 60000\nmax_concurrent = 1\nmax_queue = 0\n")
        .start();
    let client = host.client().await;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call("spin", json!({}))));
    let started = Instant::now();
    let handle = client
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle
        .cancel(Some("the user pressed stop".into()))
        .await
        .unwrap();
    let line = wait_audit(&host, Duration::from_secs(10), |l| {
        l["event"] == "tool_call" && l["target"] == "spin"
    })
    .await
    .expect("the cancelled call is audited");
    let elapsed = started.elapsed();
    println!("[cancel] audited {elapsed:?} after the request (timeout was 60 s): {line}");
    assert_eq!(line["outcome"], "cancelled", "{line}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // With one slot and no queue, this succeeds only if the spinning call is gone.
    assert_still_serving(&mut host, &client).await;
}

// ---- Files and environment ---------------------------------------------------------

/// A directory tree for the file tests:
/// `secret.txt` (outside every grant), `ro/` (read-only grant, with `hello.txt`
/// and two symlinks pointing at the secret), `rw/` (read-write grant).
fn file_tree(root: &Path) {
    std::fs::write(root.join("secret.txt"), "TOP SECRET").unwrap();
    std::fs::create_dir(root.join("ro")).unwrap();
    std::fs::create_dir(root.join("rw")).unwrap();
    std::fs::write(root.join("ro/hello.txt"), "hello from ro").unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("ro/escape-relative")).unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), root.join("ro/escape-absolute")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("ro/passwd")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn files_stay_inside_their_grants() {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().canonicalize().unwrap();
    file_tree(&root);
    let config = format!(
        r#"
[plugins.hostile.grants]
dirs = [
  {{ host = "{ro}", guest = "/data", mode = "ro" }},
  {{ host = "{rw}", guest = "/scratch", mode = "rw" }},
]
"#,
        ro = root.join("ro").display(),
        rw = root.join("rw").display()
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;

    // Positive: the read-only grant reads, the read-write grant writes.
    assert_eq!(
        cap(&client, "read_path", json!({"path": "/data/hello.txt"})).await,
        "OK:hello from ro"
    );
    let listing = cap(&client, "list_dir", json!({"path": "/data"})).await;
    assert!(listing.contains("hello.txt"), "{listing}");
    let t = cap(
        &client,
        "write_path",
        json!({"path": "/scratch/out.txt", "text": "written"}),
    )
    .await;
    assert!(t.starts_with("OK:"), "{t}");
    assert_eq!(
        std::fs::read_to_string(root.join("rw/out.txt")).unwrap(),
        "written"
    );
    assert_eq!(
        cap(&client, "read_path", json!({"path": "/scratch/out.txt"})).await,
        "OK:written"
    );

    // Escapes: `..`, relative paths, absolute guest and host paths, symlinks out.
    let secret = root.join("secret.txt").display().to_string();
    for path in [
        "/data/../secret.txt",
        "/data/../../../../etc/passwd",
        "../secret.txt",
        "secret.txt",
        "/etc/passwd",
        "/proc/self/environ",
        secret.as_str(),
        "/data/escape-relative",
        "/data/escape-absolute",
        "/data/passwd",
        "/scratch/../ro/hello.txt",
    ] {
        let t = cap(&client, "read_path", json!({"path": path})).await;
        assert!(
            t.starts_with("ERR:"),
            "reading {path} must fail, got {}",
            short(&t)
        );
        assert!(
            !t.contains("TOP SECRET") && !t.contains("root:"),
            "{path} leaked: {t}"
        );
        println!("[fs] read {path}: {t}");
    }
    for path in ["/", "/data/..", "/etc"] {
        let t = cap(&client, "list_dir", json!({"path": path})).await;
        assert!(
            !t.contains("secret.txt") && !t.contains("passwd,"),
            "listing {path} leaked: {t}"
        );
    }

    // Writing into the read-only grant: new files, overwrites, through symlinks.
    for path in [
        "/data/new.txt",
        "/data/hello.txt",
        "/data/escape-relative",
        "/scratch/../secret.txt",
    ] {
        let t = cap(
            &client,
            "write_path",
            json!({"path": path, "text": "pwned"}),
        )
        .await;
        assert!(t.starts_with("ERR:"), "writing {path} must fail, got {t}");
        println!("[fs] write {path}: {t}");
    }
    assert!(!root.join("ro/new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("ro/hello.txt")).unwrap(),
        "hello from ro"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("secret.txt")).unwrap(),
        "TOP SECRET"
    );

    // Every call is audited (WASI refusals are errors inside the plugin, not
    // capability denials: an ungranted path simply does not exist for it).
    assert!(
        audit_events(&host, "tool_call")
            .iter()
            .filter(|l| l["target"] == "read_path")
            .count()
            >= 12
    );
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_grant_means_no_files_and_no_environment() {
    let tree = tempfile::tempdir().unwrap();
    file_tree(tree.path());
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .env("STOCKADE_TEST_SECRET", "hunter2")
        .start();
    let client = host.client().await;
    for path in [
        "/data/hello.txt",
        "/etc/passwd",
        tree.path().join("ro/hello.txt").to_str().unwrap(),
        ".",
    ] {
        let t = cap(&client, "read_path", json!({"path": path})).await;
        assert!(t.starts_with("ERR:"), "{path}: {t}");
    }
    let t = cap(
        &client,
        "write_path",
        json!({"path": "/tmp/pwned", "text": "x"}),
    )
    .await;
    assert!(t.starts_with("ERR:"), "{t}");
    for name in ["STOCKADE_TEST_SECRET", "HOME", "PATH", "USER"] {
        let t = cap(&client, "env", json!({"name": name})).await;
        assert!(t.starts_with("ERR:"), "{name} visible: {t}");
    }
    assert_eq!(
        cap(&client, "env_all", json!({})).await,
        "OK:",
        "no variables at all"
    );
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_granted_environment_variables_are_visible() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .env("STOCKADE_TEST_SECRET", "hunter2")
        .config("[plugins.hostile.grants]\nenv = { GREETING = \"hi there\" }\n")
        .start();
    let client = host.client().await;
    assert_eq!(
        cap(&client, "env", json!({"name": "GREETING"})).await,
        "OK:hi there"
    );
    assert_eq!(cap(&client, "env_all", json!({})).await, "OK:GREETING");
    for name in ["STOCKADE_TEST_SECRET", "HOME", "PATH"] {
        let t = cap(&client, "env", json!({"name": name})).await;
        assert!(t.starts_with("ERR:"), "{name} visible: {t}");
    }
    assert_still_serving(&mut host, &client).await;
}

// ---- Host capabilities -------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_capabilities_are_denied_with_the_config_key() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("hostile"), "hostile")
        .start();
    let client = host.client().await;

    let t = cap(
        &client,
        "exec",
        json!({"program": "/bin/echo", "args": ["hi"]}),
    )
    .await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use exec"),
        "{t}"
    );
    assert!(
        t.contains("[[plugins.hostile.grants.exec]] program = \"/bin/echo\""),
        "{t}"
    );
    assert_denied(&host, "exec", &["/bin/echo"]);

    let t = cap(
        &client,
        "sql",
        json!({"source": "main", "statement": "SELECT 1"}),
    )
    .await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use the SQL source `main`"),
        "{t}"
    );
    assert!(t.contains("grants.sql = [\"main\"]"), "{t}");
    assert_denied(&host, "sql", &["main"]);

    let t = cap(&client, "sample", json!({})).await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use client sampling"),
        "{t}"
    );
    assert!(t.contains("grants.client = [\"sampling\"]"), "{t}");
    let t = cap(&client, "elicit", json!({})).await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use client elicitation"),
        "{t}"
    );
    assert!(t.contains("grants.client = [\"elicitation\"]"), "{t}");
    assert_denied(&host, "client", &["sampling"]);
    assert_denied(&host, "client", &["elicitation"]);

    // HTTP with no grant: refused before DNS; the plugin learns it was denied,
    // the audit log says by whom and how to grant it.
    for url in [
        "http://example.com/",
        "http://127.0.0.1:9/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let t = cap(&client, "http", json!({"url": url})).await;
        assert!(
            t.starts_with("ERR:") && t.contains("refused") && t.contains("grants.http.hosts"),
            "{url}: {t}"
        );
    }
    assert_denied(
        &host,
        "http",
        &["may not make HTTP requests", "grants.http.hosts"],
    );

    let denials = audit_events(&host, "capability_denied").len();
    assert!(denials >= 7, "{denials} denials audited");
    // The well-behaved plugin was never affected.
    let (e, t) = try_call(&client, "greet", json!({"name": "Ada"})).await;
    assert!(!e && t.contains("Hello, Ada"));
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_only_allow_listed_programs_with_matching_arguments() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(
            r#"
[[plugins.hostile.grants.exec]]
program = "/bin/echo"
args = ["hello|world", "[a-z]+"]
timeout_ms = 5000
"#,
        )
        .start();
    let client = host.client().await;
    // Positive: the allow-listed program with matching arguments runs.
    let t = cap(
        &client,
        "exec",
        json!({"program": "/bin/echo", "args": ["hello", "there"]}),
    )
    .await;
    assert_eq!(t, "OK:hello there\n");

    // Not on the allow-list, even when the same binary is reached another way.
    for program in [
        "/bin/sh",
        "/usr/bin/env",
        "/bin/../bin/echo",
        "echo",
        "/usr/bin/echo",
    ] {
        let t = cap(
            &client,
            "exec",
            json!({"program": program, "args": ["hello", "x"]}),
        )
        .await;
        if program == "/usr/bin/echo" && t.starts_with("OK:") {
            panic!("{program} ran although only /bin/echo is allowed");
        }
        assert!(
            t.starts_with(&format!("ERR:plugin `hostile` may not run `{program}`")),
            "{program}: {t}"
        );
        assert!(t.contains("allowed: /bin/echo"), "{t}");
    }
    assert_denied(&host, "exec", &["/bin/sh", "not in its exec allow-list"]);

    // Arguments that do not match the patterns, or the wrong number of them.
    for (args, why) in [
        (
            json!(["hello; rm -rf /", "x"]),
            "does not match the allowed pattern `hello|world`",
        ),
        (
            json!(["hello", "ABC"]),
            "does not match the allowed pattern `[a-z]+`",
        ),
        (json!(["hello"]), "exactly 2 argument(s), got 1"),
        (
            json!(["hello", "x", "extra"]),
            "exactly 2 argument(s), got 3",
        ),
        (json!(["helloworld", "x"]), "does not match"),
    ] {
        let t = cap(
            &client,
            "exec",
            json!({"program": "/bin/echo", "args": args}),
        )
        .await;
        assert!(
            t.starts_with("ERR:plugin `hostile` was refused") && t.contains(why),
            "{args}: {t}"
        );
    }
    assert_denied(&host, "exec", &["does not match the allowed pattern"]);
    assert_still_serving(&mut host, &client).await;
}

/// A tiny HTTP server on 127.0.0.1 answering every request with `hello`;
/// returns its port and the number of connections it accepted.
async fn tiny_http_server() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_reaches_only_allow_listed_hosts_and_private_addresses_only_when_allowed() {
    let (port, hits) = tiny_http_server().await;
    let url = format!("http://127.0.0.1:{port}/");

    // Allow-listed, but loopback without allow_private: refused before connecting.
    // The private and link-local addresses are allow-listed too, to show that the
    // address check (not the allow-list) refuses them; nothing is ever sent there.
    let config = format!(
        r#"
[plugins.hostile.grants.http]
hosts = ["127.0.0.1:{port}", "169.254.169.254", "10.0.0.1", "localhost:{port}"]
methods = ["GET"]
"#
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;
    for target in [
        url.clone(),
        format!("http://localhost:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let t = cap(&client, "http", json!({"url": target})).await;
        assert!(
            t.starts_with("ERR:") && t.contains("grants.http.allow_private = true"),
            "the plugin's message says what was refused and what would allow it: {target}: {t}"
        );
        println!("[http] {target}: {t}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");
    // Outside the allow-list: a name, another port, another method.
    for (target, method) in [
        ("http://example.com/".to_owned(), "GET"),
        (format!("http://127.0.0.1:{}/", port.wrapping_add(1)), "GET"),
        (url.clone(), "POST"),
    ] {
        let t = cap(&client, "http", json!({"url": target, "method": method})).await;
        assert!(
            t.starts_with("ERR:") && t.contains("refused") && t.contains("grants.http.hosts"),
            "{method} {target}: {t}"
        );
    }
    // A plugin that says only "failed": the model still sees the host's sentence.
    let (is_error, t) = try_call(&client, "http", json!({"url": url, "terse": true})).await;
    assert!(is_error, "{t}");
    assert!(
        t.contains("Refused by the Stockade host: plugin `hostile` may not reach 127.0.0.1")
            && t.contains("allow_private = true"),
        "{t}"
    );
    assert_denied(
        &host,
        "http",
        &["may not reach example.com:80", "grants.http.hosts"],
    );
    assert_denied(&host, "http", &["may not send POST"]);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");
    assert_still_serving(&mut host, &client).await;
    drop(client);
    drop(host);

    // The same grant with allow_private: the request goes through.
    let config = format!(
        "[plugins.hostile.grants.http]\nhosts = [\"127.0.0.1:{port}\"]\nmethods = [\"GET\"]\nallow_private = true\n"
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;
    let t = cap(&client, "http", json!({"url": url})).await;
    assert_eq!(t, "OK:200 hello");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // allow_private does not widen the allow-list.
    let t = cap(&client, "http", json!({"url": "http://10.0.0.1/"})).await;
    assert!(t.starts_with("ERR:") && t.contains("refused"), "{t}");
    assert_still_serving(&mut host, &client).await;
}

/// Private-address refusals should be audited like every other denial.
#[tokio::test(flavor = "multi_thread")]
async fn http_private_address_refusals_are_audited() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.grants.http]\nhosts = [\"169.254.169.254\"]\n")
        .start();
    let client = host.client().await;
    let t = cap(
        &client,
        "http",
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert!(t.contains("loopback, private or link-local"), "{t}");
    assert_denied(&host, "http", &["169.254.169.254"]);
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_reads_granted_sources_and_never_writes() {
    use sqlx::{ConnectOptions, Connection, Executor};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("app.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    conn.execute("CREATE TABLE people(id INTEGER, name TEXT); INSERT INTO people VALUES (1, 'ada'), (2, 'bob');")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let config = format!(
        "[sql.main]\nsqlite = \"{}\"\n\n[sql.other]\nsqlite = \"{}\"\n\n[plugins.hostile.grants]\nsql = [\"main\"]\n",
        db.display(),
        db.display()
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;

    let t = cap(
        &client,
        "sql",
        json!({"source": "main", "statement": "SELECT id, name FROM people ORDER BY id"}),
    )
    .await;
    assert_eq!(t, "OK:id\tname\n1\tada\n2\tbob");

    // A source that exists but is not granted to this plugin.
    let t = cap(
        &client,
        "sql",
        json!({"source": "other", "statement": "SELECT 1"}),
    )
    .await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use the SQL source `other`"),
        "{t}"
    );

    // Writes: refused by the statement check, and by the read-only connection
    // for a write hidden behind WITH.
    for stmt in [
        "DELETE FROM people",
        "INSERT INTO people VALUES (3, 'eve')",
        "DROP TABLE people",
        "ATTACH DATABASE '/tmp/stockade-evil.db' AS evil",
        "PRAGMA query_only = OFF",
        "  /* sneaky */ UPDATE people SET name = 'eve'",
    ] {
        let t = cap(&client, "sql", json!({"source": "main", "statement": stmt})).await;
        assert!(
            t.starts_with("ERR:plugin `hostile` may only read from `main`"),
            "{stmt}: {t}"
        );
    }
    assert_denied(&host, "sql", &["may only read from `main`"]);
    // A write behind WITH is refused by SQLite's authorizer while the
    // statement is prepared (issue 11.3; before, the read-only connection
    // stopped it when it ran).
    let t = cap(
        &client,
        "sql",
        json!({"source": "main", "statement": "WITH x AS (SELECT 1) DELETE FROM people"}),
    )
    .await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may only read from `main`: refused DELETE"),
        "{t}"
    );
    let t = cap(
        &client,
        "sql",
        json!({"source": "main", "statement": "SELECT count(*) AS n FROM people"}),
    )
    .await;
    assert_eq!(t, "OK:n\n2", "nothing was written");
    assert!(!Path::new("/tmp/stockade-evil.db").exists());
    assert_still_serving(&mut host, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_pin_mismatch_drops_every_grant() {
    use sha2::Digest;
    let grant = "[[plugins.hostile.grants.exec]]\nprogram = \"/bin/echo\"\n";
    let wasm = std::fs::read(test_plugin("hostile")).unwrap();
    let good = hex::encode(sha2::Sha256::digest(&wasm));

    // The right pin: the grant applies.
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&format!(
            "[plugins.hostile]\ndigest = \"sha256:{good}\"\n\n{grant}"
        ))
        .start();
    let client = host.client().await;
    assert_eq!(
        cap(
            &client,
            "exec",
            json!({"program": "/bin/echo", "args": ["pinned"]})
        )
        .await,
        "OK:pinned\n"
    );
    assert_still_serving(&mut host, &client).await;
    drop(client);
    drop(host);

    // Another file under the same name (simulated by a wrong pin): no grants.
    let wrong = "0".repeat(64);
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&format!(
            "[plugins.hostile]\ndigest = \"sha256:{wrong}\"\n\n{grant}"
        ))
        .start();
    let log = host.log();
    assert!(
        log.contains(&format!(
            "plugin `hostile` has digest sha256:{good} but the config pins sha256:{wrong}"
        )) && log.contains("runs with no grants until plugins.hostile.digest is updated"),
        "the host log says the digest mismatched:\n{log}"
    );
    let client = host.client().await;
    let t = cap(
        &client,
        "exec",
        json!({"program": "/bin/echo", "args": ["pinned"]}),
    )
    .await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use exec"),
        "{t}"
    );
    assert_denied(&host, "exec", &["/bin/echo"]);
    assert_still_serving(&mut host, &client).await;
}

/// Issue 23 (a pinned file swapped live): with the real digest pinned, the
/// grant works; another build of the plugin (the same code, one more custom
/// section) renamed over the pinned file while the host serves is loaded with
/// no grants: its call is denied and audited, the host log names
/// `plugins.hostile.digest`, the denied call's audit line carries the new
/// digest, so the old version's grants did not leak to it. The pinned bytes
/// put back get the grant again.
#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_file_swapped_live_runs_with_no_grants() {
    use sha2::Digest;
    let grant = "[[plugins.hostile.grants.exec]]\nprogram = \"/bin/echo\"\n";
    let wasm = std::fs::read(test_plugin("hostile")).unwrap();
    let good = hex::encode(sha2::Sha256::digest(&wasm));
    let mut other = wasm.clone();
    other.extend_from_slice(&[0x00, 0x06, 0x05, b'o', b't', b'h', b'e', b'r']);
    let swapped = hex::encode(sha2::Sha256::digest(&other));
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&format!(
            "[plugins.hostile]\ndigest = \"sha256:{good}\"\n\n{grant}"
        ))
        .start();
    let client = host.client().await;
    let echo = json!({"program": "/bin/echo", "args": ["pinned"]});
    assert_eq!(cap(&client, "exec", echo.clone()).await, "OK:pinned\n");
    assert_eq!(last_tool_call(&host, "exec")["digest"], good);

    // Another build renamed over the pinned file while serving.
    let dir = host.dir.path().join("plugins");
    let deploy = |bytes: &[u8]| {
        std::fs::write(dir.join(".hostile.tmp"), bytes).unwrap();
        std::fs::rename(dir.join(".hostile.tmp"), dir.join("hostile.wasm")).unwrap();
    };
    deploy(&other);
    wait_audit(&host, Duration::from_secs(15), |l| {
        l["event"] == "plugin_loaded" && l["digest"] == swapped.as_str()
    })
    .await
    .unwrap_or_else(|| panic!("the new build did not load:\n{}", host.log()));
    let log = host.log();
    assert!(
        log.contains(&format!(
            "plugin `hostile` has digest sha256:{swapped} but the config pins sha256:{good}"
        )) && log.contains("runs with no grants until plugins.hostile.digest is updated"),
        "the host log says the digest mismatched:\n{log}"
    );
    let t = cap(&client, "exec", echo.clone()).await;
    assert!(
        t.starts_with("ERR:plugin `hostile` may not use exec")
            && t.contains("plugins.hostile.grants.exec"),
        "the old version's grant leaked to the new file: {t}"
    );
    assert_denied(&host, "exec", &["/bin/echo"]);
    assert_eq!(last_tool_call(&host, "exec")["digest"], swapped);
    assert_still_serving(&mut host, &client).await;

    // The pinned bytes back: the grant applies again.
    deploy(&wasm);
    wait_audit(&host, Duration::from_secs(15), |l| {
        l["event"] == "plugin_loaded"
            && l["digest"] == good.as_str()
            && l["seq"].as_u64() > last_tool_call(&host, "exec")["seq"].as_u64()
    })
    .await
    .unwrap_or_else(|| panic!("the pinned build did not load again:\n{}", host.log()));
    assert_eq!(cap(&client, "exec", echo).await, "OK:pinned\n");
    assert_eq!(last_tool_call(&host, "exec")["digest"], good);
}

// ---- Loading -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_component_importing_an_unknown_interface_is_refused_at_load() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("import-unknown"), "import-unknown")
        .plugin(&test_plugin("hostile"), "hostile")
        .start();
    let log = host.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin refused") && l.contains("import-unknown"))
        .collect();
    assert_eq!(refusals.len(), 1, "one refusal line:\n{log}");
    let line = refusals[0];
    println!("[import-unknown] {line}");
    assert!(
        line.contains("imports an interface this host does not provide"),
        "{line}"
    );
    assert!(
        line.contains("evil:backdoor/shell"),
        "names the missing import: {line}"
    );

    let refused = audit_events(&host, "plugin_refused");
    assert!(
        refused.iter().any(|l| l["plugin"] == "import-unknown"
            && l["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("evil:backdoor/shell")),
        "{refused:#?}"
    );

    let client = host.client().await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(
        !tools.iter().any(|t| t.name == "backdoor"),
        "the refused plugin serves nothing"
    );
    let err = client
        .call_tool(call("backdoor", json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
    let (e, t) = try_call(&client, "greet", json!({"name": "Ada"})).await;
    assert!(!e && t.contains("Hello, Ada"));
    assert_still_serving(&mut host, &client).await;

    let health: Value = reqwest::get(format!("{}/health", host.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["plugins"], 2, "{health}");
    assert_eq!(health["refused"], 1, "{health}");
}

// ---- Concurrency gate, disconnects, limits reports (issue 11) -------------------

/// Sends `tools/call` for `tool` without waiting; returns the handle to cancel it.
async fn send_cancellable(
    client: &Client,
    tool: &str,
    args: Value,
) -> rmcp::service::RequestHandle<RoleClient> {
    use rmcp::model::{CallToolRequest, ClientRequest};
    use rmcp::service::PeerRequestOptions;
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(call(tool, args)));
    client
        .peer()
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .unwrap()
}

/// Issue 11.6: cancelling calls that wait in the queue gives their places back,
/// however often it happens (the counter used to leak one place per cancel).
#[tokio::test(flavor = "multi_thread")]
async fn cancelled_queued_calls_give_their_places_back() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\nfuel = 100000000000000\ntimeout_ms = 60000\nmax_concurrent = 1\nmax_queue = 2\n")
        .start();
    let client = host.client().await;
    let runner = send_cancellable(&client, "spin", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // max_queue + 5 calls queue up and are cancelled, two at a time.
    for _ in 0..4 {
        let a = send_cancellable(&client, "ping", json!({})).await;
        let b = send_cancellable(&client, "ping", json!({})).await;
        // Long enough for both to reach the plugin's queue.
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.cancel(None).await.unwrap();
        b.cancel(None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    runner.cancel(None).await.unwrap();
    // A call that has to wait (behind a 1 s sleep) is queued, not refused.
    let sleeper = send_cancellable(&client, "sleep", json!({"secs": 1})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (is_error, t) = try_call(&client, "ping", json!({})).await;
    assert!(!is_error && t == "pong", "the queue leaked places: {t}");
    let done = sleeper.await_response().await;
    assert!(done.is_ok(), "{done:?}");
    // The cancellations are audited as the host processes them: wait for all.
    // rmcp also closes a cancelled request's stream, so a call may be stopped
    // by that first and audited as `disconnected`: either way it was stopped.
    let cancelled = || {
        audit_events(&host, "tool_call")
            .into_iter()
            .filter(|l| {
                l["target"] == "ping"
                    && (l["outcome"] == "cancelled" || l["outcome"] == "disconnected")
            })
            .count()
    };
    let waited = Instant::now();
    while cancelled() < 8 && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pings: Vec<Value> = audit_events(&host, "tool_call")
        .into_iter()
        .filter(|l| l["target"] == "ping")
        .collect();
    assert_eq!(
        cancelled(),
        8,
        "every cancelled queued call is audited: {pings:#?}"
    );
    assert_still_serving(&mut host, &client).await;
}

/// Issue 11.6: a client that drops its connection stops its running call (the
/// slot is free at once) and the call is audited as `disconnected`.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_stops_its_call() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\nfuel = 100000000000000\ntimeout_ms = 60000\nmax_concurrent = 1\nmax_queue = 0\n")
        .start();
    let session = common::RawSession::open(&host.mcp_url()).await;
    let started = Instant::now();
    let response = session
        .post(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"spin","arguments":{}}}))
        .await;
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client goes away: the response and its connection are dropped.
    drop(response);
    drop(session);
    let line = wait_audit(&host, Duration::from_secs(30), |l| {
        l["event"] == "tool_call" && l["target"] == "spin"
    })
    .await
    .expect("the abandoned call is audited");
    assert_eq!(line["outcome"], "disconnected", "{line}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // One slot, no queue: this works only if the spinning call is gone.
    let client = host.client().await;
    assert_still_serving(&mut host, &client).await;
}

/// Issue 11.6: a config reload keeps counting the calls already running.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_keeps_the_concurrency_gate() {
    let config = "[plugins.hostile.limits]\nfuel = 100000000000000\ntimeout_ms = 3000\nmax_concurrent = 1\nmax_queue = 0\n";
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(config)
        .start();
    let client = host.client().await;
    let runner = send_cancellable(&client, "spin", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = host.data_dir().parent().unwrap().join("stockade.toml");
    std::fs::write(&file, format!("# re-saved\n{config}")).unwrap();
    let reloaded = wait_audit(&host, Duration::from_secs(10), |l| {
        l["event"] == "config_reloaded" && l["ok"] == true
    })
    .await;
    assert!(reloaded.is_some(), "the config was not reloaded");
    let t = must_fail(&client, "ping", json!({})).await;
    assert!(t.contains("too many concurrent calls"), "{t}");
    drop(runner);
    assert_limit_audited(&host, "ping", "concurrency");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_still_serving(&mut host, &client).await;
}

/// Issue 11.8a: a call stopped by its deadline reports the fuel it really used,
/// and a crash names the trap and where it happened.
#[tokio::test(flavor = "multi_thread")]
async fn limit_reports_are_exact() {
    let _turn = ATTACK_LOCK.lock().await;
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\nfuel = 100000000000000\ntimeout_ms = 1000\n")
        .start();
    let client = host.client().await;
    let t = must_fail(&client, "spin", json!({})).await;
    assert!(t.contains("timed out after 1 s"), "{t}");
    let line = assert_limit_audited(&host, "spin", "timeout");
    let fuel = line["fuel"].as_u64().unwrap();
    // A second of spinning burns far more than a few thousand instructions.
    assert!(
        fuel > 10_000_000,
        "fuel {fuel} for a second of spinning: {line}"
    );

    let t = must_fail(&client, "trap", json!({})).await;
    assert!(t.contains("unreachable"), "{t}");
    assert!(t.contains(" in "), "no frames in {t}");
    assert!(!t.ends_with("wasm backtrace:"), "{t}");
    assert_still_serving(&mut host, &client).await;
}

/// Issue 11.7: a URI template is matched in linear time; a hostile URI that
/// used to cost the host seconds of backtracking answers at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_resource_uri_is_matched_in_linear_time() {
    use rmcp::model::ReadResourceRequestParams;
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen-sink")
        .start();
    let client = host.client().await;
    let uri = format!("kitchen://echo/{}/", "a".repeat(60_000));
    let started = Instant::now();
    let r = client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await;
    let took = started.elapsed();
    assert!(r.is_err(), "a URI with a trailing segment matches nothing");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Too long to be a URI at all: refused with a reason.
    let r = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "kitchen://echo/{}",
            "a".repeat(100_000)
        )))
        .await;
    let e = format!("{:?}", r.unwrap_err());
    assert!(e.contains("too long"), "{e}");
    // The well-formed URI still reaches the template.
    let r = client
        .read_resource(ReadResourceRequestParams::new("kitchen://echo/hi"))
        .await
        .unwrap();
    assert!(format!("{:?}", r.contents).contains("hi"));
}

/// Issue 11.8: a plugin cannot take over another plugin's prompts or resource
/// URIs; the older plugin keeps them and the newcomer is refused with a reason.
#[tokio::test(flavor = "multi_thread")]
async fn plugins_cannot_shadow_each_others_prompts_and_resources() {
    use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams};
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen-sink")
        .plugin(&test_plugin("shadow-prompt"), "0shadow-prompt")
        .plugin(&test_plugin("shadow-resource"), "0shadow-resource")
        .start();
    let refused = audit_events(&host, "plugin_refused");
    let reason = |p: &str| {
        refused
            .iter()
            .find(|l| l["plugin"] == p)
            .map(|l| l["reason"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{p} not refused: {refused:#?}"))
    };
    let r = reason("0shadow-prompt");
    assert!(
        r.contains("prompt `kitchen_greeting` is already served by plugin `kitchen-sink`"),
        "{r}"
    );
    let r = reason("0shadow-resource");
    assert!(
        r.contains("`kitchen://{place}/{thing}` overlaps `kitchen://echo/{text}`"),
        "{r}"
    );
    let client = host.client().await;
    let mut args = serde_json::Map::new();
    args.insert("name".into(), json!("Ada"));
    let p = client
        .get_prompt(GetPromptRequestParams::new("kitchen_greeting").with_arguments(args))
        .await
        .unwrap();
    assert!(
        format!("{:?}", p.messages).contains("Please greet"),
        "{p:?}"
    );
    let r = client
        .read_resource(ReadResourceRequestParams::new("kitchen://echo/mine"))
        .await
        .unwrap();
    let contents = format!("{:?}", r.contents);
    assert!(contents.contains("mine") && !contents.contains("intercepted"));
    // Reads and prompts run plugin code: audited like tool calls (issue 11.13).
    let lines = audit_events(&host, "tool_call");
    assert!(
        lines.iter().any(|l| l["kind"] == "prompt"
            && l["target"] == "kitchen_greeting"
            && l["outcome"] == "ok"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["kind"] == "resource"
            && l["target"] == "kitchen://echo/mine"
            && l["plugin"] == "kitchen-sink"),
        "{lines:#?}"
    );
}

/// Issue 18.6: a FIFO in a granted directory is not opened (opening it for
/// reading blocked a host thread until some writer came, past the call's
/// deadline and past the host's shutdown): the call is refused at once, a
/// regular file next to it still reads, and the host stops cleanly after.
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_a_granted_directory_is_not_opened() {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().canonicalize().unwrap();
    std::fs::write(root.join("notes.txt"), "plain file").unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .expect("mkfifo (coreutils) is installed");
    assert!(made.success());
    let config = format!(
        "[plugins.hostile.grants]\ndirs = [{{ host = \"{}\", guest = \"/data\", mode = \"ro\" }}]\n",
        root.display()
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;
    let started = std::time::Instant::now();
    let t = cap(&client, "read_path", json!({"path": "/data/pipe"})).await;
    assert!(t.starts_with("ERR:"), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the FIFO open blocked for {:?}",
        started.elapsed()
    );
    assert_eq!(
        cap(&client, "read_path", json!({"path": "/data/notes.txt"})).await,
        "OK:plain file"
    );
    host.terminate().await;
}
