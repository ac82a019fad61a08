//! End-to-end: the live plugin directory and config of the real `stockade` binary
//! (issue 5). Plugins are dropped, replaced under load, broken, deleted; the
//! config is edited while clients are connected; the compiled-code cache is
//! reused across restarts; signatures are required.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Host, HostBuilder, audit_events, bundled, run_stockade, test_plugin, wait_audit};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

// ---- Helpers ------------------------------------------------------------------

/// A client that counts `notifications/tools/list_changed` and keeps the URIs
/// of `notifications/resources/updated`.
#[derive(Clone, Default)]
struct ListWatcher {
    changes: Arc<AtomicUsize>,
    notify: Arc<Notify>,
    updated: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for ListWatcher {
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.updated.lock().unwrap().push(params.uri);
    }
}

impl ListWatcher {
    /// Waits until more than `seen` notifications arrived; returns the new count.
    async fn wait_beyond(&self, seen: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let n = self.changes.load(Ordering::SeqCst);
            if n > seen {
                return n;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no notifications/tools/list_changed within {timeout:?}"
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

type Client = RunningService<RoleClient, ()>;
type WatchingClient = RunningService<RoleClient, ListWatcher>;

async fn watching_client(host: &Host) -> (WatchingClient, ListWatcher) {
    let watcher = ListWatcher::default();
    let transport = StreamableHttpClientTransport::from_uri(host.mcp_url());
    let client = watcher
        .clone()
        .serve(transport)
        .await
        .expect("MCP client connects");
    (client, watcher)
}

fn call(name: &str, v: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(v.as_object().unwrap().clone())
}

fn texts(r: &CallToolResult) -> Vec<String> {
    r.content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect()
}

async fn tool_names(client: &rmcp::Peer<RoleClient>) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

/// Which version answered `which_version`: checks the answer is wholly from one
/// version (both text halves and the structured content agree) and returns
/// `"v1"` or `"v2"`.
fn version_of(r: &CallToolResult) -> String {
    assert_ne!(r.is_error, Some(true), "which_version failed: {r:?}");
    let t = texts(r);
    let s = r.structured_content.as_ref().expect("structured content");
    let name = s["name"].as_str().unwrap().to_owned();
    let version = s["version"].as_str().unwrap();
    let expected = match name.as_str() {
        "v1" => "1.0.0",
        "v2" => "2.0.0",
        other => panic!("unexpected plugin {other}"),
    };
    assert_eq!(version, expected, "mixed answer: {r:?}");
    assert_eq!(t[0], name, "mixed answer: {r:?}");
    assert_eq!(t[1], expected, "mixed answer: {r:?}");
    name
}

async fn which(client: &rmcp::Peer<RoleClient>, sleep_ms: u64) -> String {
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        client.call_tool(call("which_version", json!({ "sleep_ms": sleep_ms }))),
    )
    .await
    .expect("an answer within 30 s")
    .expect("which_version answers");
    version_of(&r)
}

/// Deploys `bytes` as `dir/name` the safe way: write a temporary file that does
/// not end in `.wasm`, then rename it over the target.
fn deploy(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn plugins(host: &Host) -> PathBuf {
    host.dir.path().join("plugins")
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Polls `f` until it returns true or `timeout` passes.
async fn eventually(timeout: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_event(host: &Host, event: &str, plugin: &str) -> Value {
    wait_audit(host, Duration::from_secs(15), |l| {
        l["event"] == event && l["plugin"] == plugin
    })
    .await
    .unwrap_or_else(|| panic!("no `{event}` audit line for `{plugin}`:\n{}", host.log()))
}

// ---- Drop, replace, break, delete -----------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_plugin_is_announced_and_callable() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .start();
    let (client, watcher) = watching_client(&host).await;
    let before = tool_names(&client).await;
    assert!(before.contains(&"greet".to_owned()));
    assert!(!before.contains(&"which_version".to_owned()));

    deploy(
        &plugins(&host),
        "versioned.wasm",
        &bytes(&test_plugin("v1")),
    );
    watcher.wait_beyond(0, Duration::from_secs(15)).await;

    // The client cached the first tools/list; the notification invalidates it.
    let after = tool_names(&client).await;
    assert!(
        after.contains(&"which_version".to_owned()),
        "new tool not listed after list_changed: {after:?}"
    );
    assert!(after.contains(&"greet".to_owned()));
    assert_eq!(which(&client, 0).await, "v1");
    let loaded = wait_event(&host, "plugin_loaded", "versioned").await;
    assert_eq!(loaded["version"], "1.0.0");
    assert_eq!(loaded["tools"], json!(["which_version"]));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_under_concurrent_calls_fails_no_call() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("v1"), "versioned")
        .start();
    let v2 = bytes(&test_plugin("v2"));

    const CLIENTS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    // (start, end, version) of every call.
    let calls: Arc<Mutex<Vec<(Instant, Instant, String)>>> = Arc::default();
    let mut workers = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let client: Client = host.client().await;
        let peer = client.peer().clone();
        clients.push(client);
        let (stop, calls) = (stop.clone(), calls.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let v = which(&peer, (n * 7 + i as u64 * 13) % 40).await;
                calls.lock().unwrap().push((started, Instant::now(), v));
                n += 1;
            }
        }));
    }

    // A long call in flight across the swap finishes on the version it started on.
    let long_client = host.client().await;
    let long_peer = long_client.peer().clone();
    let long = tokio::spawn(async move { which(&long_peer, 3000).await });

    tokio::time::sleep(Duration::from_millis(700)).await;
    let swapped_at = Instant::now();
    deploy(&plugins(&host), "versioned.wasm", &v2);
    // Keep calling until v2 has answered for a while.
    eventually(Duration::from_secs(20), "v2 answers", async || {
        let c = calls.lock().unwrap();
        c.iter()
            .any(|(s, _, v)| v == "v2" && s.elapsed() > Duration::from_millis(500))
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("no call failed");
    }
    assert_eq!(long.await.unwrap(), "v1", "the in-flight call stays on v1");

    let calls = calls.lock().unwrap().clone();
    let v1 = calls.iter().filter(|c| c.2 == "v1").count();
    let v2n = calls.iter().filter(|c| c.2 == "v2").count();
    assert!(v1 > 0 && v2n > 0, "v1 {v1}, v2 {v2n}");
    assert!(
        calls
            .iter()
            .filter(|c| c.0 < swapped_at)
            .all(|c| c.2 == "v1"),
        "calls before the file changed got v1"
    );
    // Once any call has completed on v2, every call started later gets v2.
    let first_v2_end = calls
        .iter()
        .filter(|c| c.2 == "v2")
        .map(|c| c.1)
        .min()
        .unwrap();
    let late_v1: Vec<_> = calls
        .iter()
        .filter(|c| c.0 > first_v2_end && c.2 == "v1")
        .collect();
    assert!(late_v1.is_empty(), "v1 answered after v2 did: {late_v1:?}");
    // And new calls get v2.
    for client in &clients {
        assert_eq!(which(client, 0).await, "v2");
    }
    let loaded = audit_events(&host, "plugin_loaded");
    assert!(
        loaded
            .iter()
            .any(|l| l["plugin"] == "versioned" && l["version"] == "2.0.0"),
        "{loaded:?}"
    );
    eprintln!(
        "{} calls ({v1} on v1, {v2n} on v2) across the swap, none failed",
        calls.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_over_a_plugin_keeps_the_old_version_and_audits_why() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("v1"), "versioned")
        .start();
    let client = host.client().await;
    assert_eq!(which(&client, 0).await, "v1");

    deploy(
        &plugins(&host),
        "versioned.wasm",
        b"this is not a WebAssembly component",
    );
    let refused = wait_event(&host, "plugin_refused", "versioned").await;
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("not a WebAssembly component"),
        "reason: {reason}"
    );
    assert!(refused["digest"].is_string());
    assert_eq!(
        which(&client, 0).await,
        "v1",
        "the old version keeps serving"
    );
    assert!(
        tool_names(&client)
            .await
            .contains(&"which_version".to_owned())
    );

    // `plugins list` shows both: the serving version and the refused file.
    let (ok, out) = run_stockade(
        &["plugins", "list", "--plugins", "plugins", "--data", "data"],
        host.dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("written by the host"), "{out}");
    assert!(out.contains("versioned: serving v1 1.0.0"), "{out}");
    assert!(out.contains("tools:  which_version"), "{out}");
    assert!(
        out.contains("versioned: refused (the previous version keeps serving)"),
        "{out}"
    );
    assert!(out.contains("not a WebAssembly component"), "{out}");
    let (ok, out) = run_stockade(
        &["plugins", "list", "--data", "data", "--json"],
        host.dir.path(),
    );
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "host");
    let states: Vec<(&str, &str)> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("versioned", "refused"), ("versioned", "serving")]);

    // A good file afterwards is picked up.
    deploy(
        &plugins(&host),
        "versioned.wasm",
        &bytes(&test_plugin("v2")),
    );
    eventually(Duration::from_secs(15), "v2 serves", async || {
        which(&client, 0).await == "v2"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_file_is_waited_for_not_refused() {
    use std::io::Write;
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .start();
    let (client, watcher) = watching_client(&host).await;
    tool_names(&client).await;

    // Copy in place, slowly: half, a pause longer than the settle time, the rest.
    let wasm = bytes(&test_plugin("v1"));
    let path = plugins(&host).join("slow.wasm");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&wasm[..wasm.len() / 2]).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    f.write_all(&wasm[wasm.len() / 2..]).unwrap();
    drop(f);

    watcher.wait_beyond(0, Duration::from_secs(15)).await;
    assert_eq!(which(&client, 0).await, "v1");
    wait_event(&host, "plugin_loaded", "slow").await;
    let refused = audit_events(&host, "plugin_refused");
    assert!(
        refused.iter().all(|l| l["plugin"] != "slow"),
        "a file being written was refused: {refused:?}"
    );
    assert!(
        !host.log().contains("plugin refused"),
        "nothing shouted: {}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_plugin_disappears() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("v1"), "versioned")
        .start();
    let (client, watcher) = watching_client(&host).await;
    assert!(
        tool_names(&client)
            .await
            .contains(&"which_version".to_owned())
    );
    // A call in flight when the file goes finishes.
    let peer = client.peer().clone();
    let in_flight = tokio::spawn(async move { which(&peer, 1500).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::remove_file(plugins(&host).join("versioned.wasm")).unwrap();
    watcher.wait_beyond(0, Duration::from_secs(15)).await;
    let names = tool_names(&client).await;
    assert!(!names.contains(&"which_version".to_owned()), "{names:?}");
    assert!(names.contains(&"greet".to_owned()), "{names:?}");
    let err = client
        .call_tool(call("which_version", json!({})))
        .await
        .expect_err("an unknown tool is a protocol error");
    assert!(err.to_string().contains("which_version"), "{err}");
    assert_eq!(in_flight.await.unwrap(), "v1");
    wait_event(&host, "plugin_removed", "versioned").await;
    client.cancel().await.unwrap();
}

// ---- Config -------------------------------------------------------------------

fn write_config(host: &Host, toml: &str) {
    // Editors save by writing a new file and renaming it; do the same.
    deploy(host.dir.path(), "stockade.toml", toml.as_bytes());
}

async fn env_of(client: &Client, name: &str) -> String {
    let r = client
        .call_tool(call("env", json!({ "name": name })))
        .await
        .unwrap();
    texts(&r).join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn config_changes_apply_to_the_next_call_and_bad_ones_are_refused() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.grants]\nenv = { GREETING = \"before\" }\n")
        .start();
    let client = host.client().await;
    assert_eq!(env_of(&client, "GREETING").await, "OK:before");
    let t = env_of(&client, "COLOUR").await;
    assert!(t.starts_with("ERR:"), "{t}");

    write_config(
        &host,
        "[plugins.hostile.grants]\nenv = { GREETING = \"after\", COLOUR = \"green\" }\n",
    );
    wait_audit(&host, Duration::from_secs(15), |l| {
        l["event"] == "config_reloaded" && l["ok"] == true
    })
    .await
    .expect("config_reloaded ok=true");
    assert_eq!(env_of(&client, "GREETING").await, "OK:after");
    assert_eq!(env_of(&client, "COLOUR").await, "OK:green");

    // An exec grant, added while running.
    let t = texts(
        &client
            .call_tool(call(
                "exec",
                json!({"program": "/bin/echo", "args": ["hi"]}),
            ))
            .await
            .unwrap(),
    )
    .join("\n");
    assert!(t.starts_with("ERR:"), "{t}");
    write_config(
        &host,
        "[plugins.hostile.grants]\nenv = { GREETING = \"after\", COLOUR = \"green\" }\n\
         [[plugins.hostile.grants.exec]]\nprogram = \"/bin/echo\"\n",
    );
    eventually(Duration::from_secs(15), "exec granted", async || {
        let r = client
            .call_tool(call(
                "exec",
                json!({"program": "/bin/echo", "args": ["hi"]}),
            ))
            .await
            .unwrap();
        texts(&r).join("\n").starts_with("OK:")
    })
    .await;

    // A config that does not parse is refused; the old one stays.
    write_config(
        &host,
        "[plugins.hostile.grants\nenv = { GREETING = \"broken\" }\n",
    );
    let refused = wait_audit(&host, Duration::from_secs(15), |l| {
        l["event"] == "config_reloaded" && l["ok"] == false
    })
    .await
    .expect("config_reloaded ok=false");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("stockade.toml"),
        "{refused}"
    );
    assert_eq!(env_of(&client, "GREETING").await, "OK:after");
    // A config that parses but is invalid is refused too.
    write_config(&host, "[limits]\nfuel = 0\nmemory_mib = 999999\n");
    eventually(Duration::from_secs(15), "second refusal", async || {
        audit_events(&host, "config_reloaded")
            .iter()
            .filter(|l| l["ok"] == false)
            .count()
            >= 2
    })
    .await;
    assert_eq!(env_of(&client, "GREETING").await, "OK:after");
    assert!(host.log().contains("the previous config stays in force"));
}

// ---- Compiled-code cache ----------------------------------------------------------

fn cache_entries(host: &Host) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(host.data_dir().join("cache")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "cwasm") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

fn loaded_from_cache(log: &str, plugin: &str) -> bool {
    log.lines().any(|l| {
        l.contains("compiled code loaded from cache") && l.contains(&format!("plugin={plugin}"))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_reuses_the_compiled_code_and_rebuilds_a_corrupt_entry() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("v1"), "versioned")
        .start();
    let client = host.client().await;
    assert_eq!(which(&client, 0).await, "v1");
    drop(client);
    let log = host.run_log();
    assert!(!loaded_from_cache(&log, "template"), "cold start: {log}");
    // Compiled by a child process (Cranelift's memory never stays in the host);
    // the cache entries below are its output.
    for plugin in ["template", "versioned"] {
        assert!(
            log.lines().any(|l| l.contains("component compiled")
                && l.contains(&format!("plugin={plugin}"))
                && l.contains("compiler=\"child\"")),
            "{plugin}: {log}"
        );
    }
    let entries = cache_entries(&host);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let key = host.data_dir().join("cache/key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    host.restart();
    let log = host.run_log();
    assert!(loaded_from_cache(&log, "template"), "{log}");
    assert!(loaded_from_cache(&log, "versioned"), "{log}");
    let client = host.client().await;
    assert_eq!(which(&client, 0).await, "v1");
    drop(client);

    // Corrupt the versioned plugin's entry (same length, one byte changed).
    let digest = audit_events(&host, "plugin_loaded")
        .iter()
        .find(|l| l["plugin"] == "versioned")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = entries
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&digest)
        })
        .unwrap()
        .clone();
    let mut corrupt = std::fs::read(&entry).unwrap();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    std::fs::write(&entry, &corrupt).unwrap();

    host.restart();
    let log = host.run_log();
    assert!(loaded_from_cache(&log, "template"), "{log}");
    assert!(!loaded_from_cache(&log, "versioned"), "{log}");
    assert!(
        log.contains("compiled-code cache entry ignored") && log.contains("MAC does not match"),
        "{log}"
    );
    let client = host.client().await;
    assert_eq!(which(&client, 0).await, "v1", "serves after recompiling");
    drop(client);
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        corrupt,
        "the entry was rebuilt"
    );

    host.restart();
    assert!(loaded_from_cache(&host.run_log(), "versioned"));
}

// ---- Signatures ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn with_signatures_required_only_signed_plugins_load() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("author.key");
    let key_arg = key_file.to_str().unwrap();
    let (ok, out) = run_stockade(&["plugins", "keygen", "--out", key_arg], keys.path());
    assert!(ok, "{out}");
    let public = out
        .lines()
        .find(|l| l.starts_with("ed25519:"))
        .expect("the public key is printed")
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ok, out) = run_stockade(&["plugins", "keygen", "--out", key_arg], keys.path());
    assert!(!ok, "keygen never overwrites a key: {out}");
    let (_, other_out) = run_stockade(
        &[
            "plugins",
            "keygen",
            "--out",
            keys.path().join("other.key").to_str().unwrap(),
        ],
        keys.path(),
    );
    let other_public = other_out
        .lines()
        .find(|l| l.starts_with("ed25519:"))
        .unwrap()
        .to_owned();

    let builder = HostBuilder::new()
        .plugin(&test_plugin("v1"), "versioned")
        .plugin(&bundled("template"), "template")
        .config(&format!(
            "[signatures]\nrequire = true\ntrusted_keys = [\"{public}\"]\n"
        ));
    let signed = builder.plugins_dir().join("versioned.wasm");
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "sign",
            signed.to_str().unwrap(),
            "--key",
            key_arg,
        ],
        keys.path(),
    );
    assert!(ok, "{out}");
    assert!(builder.plugins_dir().join("versioned.wasm.sig").is_file());
    // The operator's check.
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "verify",
            signed.to_str().unwrap(),
            "--trusted-key",
            &public,
        ],
        keys.path(),
    );
    assert!(ok && out.contains("is signed by"), "{out}");
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "verify",
            signed.to_str().unwrap(),
            "--trusted-key",
            &other_public,
        ],
        keys.path(),
    );
    assert!(!ok && out.contains("no trusted key"), "{out}");
    let unsigned = builder.plugins_dir().join("template.wasm");
    let (ok, _) = run_stockade(
        &[
            "plugins",
            "verify",
            unsigned.to_str().unwrap(),
            "--trusted-key",
            &public,
        ],
        keys.path(),
    );
    assert!(!ok);

    let host = builder.start();
    let (client, watcher) = watching_client(&host).await;
    let names = tool_names(&client).await;
    assert!(names.contains(&"which_version".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"greet".to_owned()),
        "unsigned template served: {names:?}"
    );
    let refused = wait_event(&host, "plugin_refused", "template").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("signature check failed"),
        "{refused}"
    );

    // Replaced by other bytes without a new signature: refused, v1 keeps serving.
    let dir = plugins(&host);
    deploy(&dir, "versioned.wasm", &bytes(&test_plugin("v2")));
    let refused = wait_event(&host, "plugin_refused", "versioned").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("no trusted key"),
        "{refused}"
    );
    assert_eq!(which(&client, 0).await, "v1");

    // The author signs the new version: it is picked up without touching the file.
    let seen = watcher.changes.load(Ordering::SeqCst);
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "sign",
            dir.join("versioned.wasm").to_str().unwrap(),
            "--key",
            key_arg,
        ],
        keys.path(),
    );
    assert!(ok, "{out}");
    watcher.wait_beyond(seen, Duration::from_secs(15)).await;
    assert_eq!(which(&client, 0).await, "v2");

    // A signed plugin dropped live: signature first, then the file.
    let staging = keys.path().join("greeter.wasm");
    std::fs::copy(bundled("template"), &staging).unwrap();
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "sign",
            staging.to_str().unwrap(),
            "--key",
            key_arg,
        ],
        keys.path(),
    );
    assert!(ok, "{out}");
    std::fs::remove_file(dir.join("template.wasm")).unwrap();
    std::fs::copy(
        keys.path().join("greeter.wasm.sig"),
        dir.join("greeter.wasm.sig"),
    )
    .unwrap();
    deploy(&dir, "greeter.wasm", &bytes(&staging));
    eventually(Duration::from_secs(15), "greet served", async || {
        tool_names(&client).await.contains(&"greet".to_owned())
    })
    .await;
    client.cancel().await.unwrap();
}

// ---- plugins list without a host ------------------------------------------------

#[test]
fn plugins_list_without_a_host_is_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        bundled("template"),
        dir.path().join("plugins/template.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("plugins/bad.wasm"), b"garbage").unwrap();
    std::fs::write(dir.path().join("plugins/notes.txt"), b"ignored").unwrap();
    let (ok, out) = run_stockade(
        &["plugins", "list", "--plugins", "plugins", "--data", "data"],
        dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(out.contains("template: serving template"), "{out}");
    assert!(out.contains("tools:  greet, add, whoami"), "{out}");
    assert!(out.contains("grants: none"), "{out}");
    assert!(out.contains("bad: refused"), "{out}");
    assert!(!out.contains("notes"), "{out}");
    assert!(
        !dir.path().join("data/plugins.json").exists(),
        "a dry run writes nothing"
    );
}

// ---- Only content changes count (issues 9.2, 11.8b) ------------------------------

/// Reading the config file or listing the plugin directory changes nothing and
/// must not make the host reload or rescan; one real change reloads once.
/// Issue 23: the rescans are counted by the host's debug line "rescanning the
/// plugin directory"; a positive control at the end (a plugin file renamed into
/// the directory) shows that very line is emitted, so its absence before means
/// no rescan.
#[tokio::test(flavor = "multi_thread")]
async fn reading_the_config_or_listing_plugins_reloads_nothing() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .config("[limits]\ntimeout_ms = 5000\n")
        .start();
    // Let start-up settle, then count from here.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rescans = |h: &Host| h.log().matches("rescanning the plugin directory").count();
    let reloads = |h: &Host| audit_events(h, "config_reloaded").len();
    let (scans0, reloads0) = (rescans(&host), reloads(&host));
    let config = host.dir.path().join("stockade.toml");
    for _ in 0..100 {
        let _ = std::fs::read_to_string(&config).unwrap();
        let _ = std::fs::read_dir(plugins(&host)).unwrap().count();
        let _ = std::fs::read(plugins(&host).join("template.wasm")).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&host), reloads0, "reading the config reloaded it");
    assert_eq!(
        rescans(&host),
        scans0,
        "reading the plugin directory rescanned it"
    );
    // Saving the same bytes again is no change either.
    write_config(&host, "[limits]\ntimeout_ms = 5000\n");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        reloads(&host),
        reloads0,
        "an identical save reloaded the config"
    );
    // One real change: exactly one reload, and then quiet again.
    write_config(&host, "[limits]\ntimeout_ms = 6000\n");
    eventually(Duration::from_secs(10), "the config reloads", async || {
        reloads(&host) > reloads0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&host), reloads0 + 1, "one change, one reload");

    // Positive control: a plugin file renamed into the directory is a change,
    // and its rescan logs the very line counted above, within the debounce
    // (long before the periodic rescan, 10 s after the last one).
    let scans = rescans(&host);
    let renamed = Instant::now();
    deploy(
        &plugins(&host),
        "template.wasm",
        &bytes(&bundled("template")),
    );
    eventually(Duration::from_secs(5), "a logged rescan", async || {
        rescans(&host) > scans
    })
    .await;
    assert!(
        renamed.elapsed() < Duration::from_secs(2),
        "the rescan came {:?} after the rename",
        renamed.elapsed()
    );
}

/// A busy file next to the config (a log being written) does not hold back a
/// plugin drop: the watcher debounces at most half a second (ARCHITECTURE:
/// "applied at most 500 ms after the first event"). Issue 23: measured from
/// the rename into the directory to the moment tools/list changes (the plugin's
/// code comes from the compiled-code cache; under 0.1 s measured with a load
/// average of 7 on 2 cores); 1.5 s is the promise plus slack for a loaded CI
/// machine (it was 5 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_neighbour_of_the_config_does_not_delay_reloads() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("v1"), "versioned")
        .plugin(&bundled("template"), "template")
        .config("[limits]\ntimeout_ms = 5000\n")
        .start();
    let client = host.client().await;
    // Compiled once already: the drop below reads the code cache, so the
    // time measured is the watcher's, not the compiler's.
    std::fs::remove_file(plugins(&host).join("template.wasm")).unwrap();
    until_listed(&client, "greet", false, "greet withdrawn").await;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        let log = host.dir.path().join("busy.log");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&log, b"line\n").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The neighbour is busy before the drop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let template = bytes(&bundled("template"));
    let started = Instant::now();
    deploy(&plugins(&host), "template.wasm", &template);
    eventually(Duration::from_secs(10), "greet listed", async || {
        tool_names(&client).await.contains(&"greet".to_owned())
    })
    .await;
    let took = started.elapsed();
    eprintln!("tools/list changed {took:?} after the rename");
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    assert!(
        took <= Duration::from_millis(1500),
        "tools/list changed {took:?} after the rename (promised: debounced at most 0.5 s)"
    );
}

/// Makes a signing key `author.key` in `dir` with `stockade plugins keygen`;
/// returns its public key (`ed25519:…`).
fn author_key(dir: &Path) -> String {
    let key_file = dir.join("author.key");
    let (ok, out) = run_stockade(
        &["plugins", "keygen", "--out", key_file.to_str().unwrap()],
        dir,
    );
    assert!(ok, "{out}");
    out.lines()
        .find(|l| l.starts_with("ed25519:"))
        .expect("the public key is printed")
        .to_owned()
}

/// Issue 11 (small findings): turning `require` on in a live config stops the
/// unsigned plugins at once; turning it off again lets them back in.
#[tokio::test(flavor = "multi_thread")]
async fn requiring_signatures_on_reload_unloads_unsigned_plugins() {
    let keys = tempfile::tempdir().unwrap();
    let public = author_key(keys.path());
    let open = format!("[signatures]\nrequire = false\ntrusted_keys = [\"{public}\"]\n");
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .config(&open)
        .start();
    let (client, _watcher) = watching_client(&host).await;
    assert!(tool_names(&client).await.contains(&"greet".to_owned()));

    write_config(&host, &open.replace("require = false", "require = true"));
    eventually(Duration::from_secs(10), "greet withdrawn", async || {
        !tool_names(&client).await.contains(&"greet".to_owned())
    })
    .await;
    let refused = wait_event(&host, "plugin_refused", "template").await;
    assert!(
        refused["reason"].as_str().unwrap().contains("signature"),
        "{refused}"
    );
    wait_event(&host, "plugin_removed", "template").await;

    write_config(&host, &open);
    eventually(Duration::from_secs(10), "greet back", async || {
        tool_names(&client).await.contains(&"greet".to_owned())
    })
    .await;
}

/// Signs `file` with the key `stockade plugins keygen` wrote to `key_dir`
/// (see [`author_key`]); returns the `.sig` text (`FILE.sig` is written too).
fn sign_with(key_dir: &Path, file: &Path) -> String {
    let key = key_dir.join("author.key");
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "sign",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        key_dir,
    );
    assert!(ok, "{out}");
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    std::fs::read_to_string(PathBuf::from(sig)).unwrap()
}

/// Waits until the served tools include (`true`) or lack (`false`) `tool`.
async fn until_listed(client: &rmcp::Peer<RoleClient>, tool: &str, listed: bool, what: &str) {
    eventually(Duration::from_secs(10), what, async || {
        tool_names(client).await.contains(&tool.to_owned()) == listed
    })
    .await;
}

/// The `plugin_refused` audit lines of `plugin` so far.
fn refusals(host: &Host, plugin: &str) -> Vec<Value> {
    audit_events(host, "plugin_refused")
        .into_iter()
        .filter(|l| l["plugin"] == plugin)
        .collect()
}

/// The number of `event` audit lines of `plugin` so far.
fn count_events(host: &Host, event: &str, plugin: &str) -> usize {
    audit_events(host, event)
        .iter()
        .filter(|l| l["plugin"] == plugin)
        .count()
}

/// Waits for one more `plugin_refused` line of `plugin` than `before`; returns
/// it.
async fn next_refusal(host: &Host, plugin: &str, before: usize) -> Value {
    eventually(
        Duration::from_secs(10),
        "a new plugin_refused line",
        async || refusals(host, plugin).len() > before,
    )
    .await;
    refusals(host, plugin).pop().unwrap()
}

/// Issue 23 (signatures while serving): with signatures required, removing a
/// key from `trusted_keys` in the live config stops the plugins that key
/// signed, and only those: their tools leave tools/list, the refusal and the
/// removal are audited. Trusting the key again brings them back.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_key_unloads_the_plugins_it_signed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key_a, key_b) = (author_key(a.path()), author_key(b.path()));
    let builder = HostBuilder::new()
        .plugin(&test_plugin("v1"), "versioned")
        .plugin(&bundled("template"), "template");
    sign_with(a.path(), &builder.plugins_dir().join("versioned.wasm"));
    sign_with(b.path(), &builder.plugins_dir().join("template.wasm"));
    let both = format!("[signatures]\nrequire = true\ntrusted_keys = [\"{key_a}\", \"{key_b}\"]\n");
    let host = builder.config(&both).start();
    let (client, _watcher) = watching_client(&host).await;
    let names = tool_names(&client).await;
    assert!(
        names.contains(&"which_version".to_owned()) && names.contains(&"greet".to_owned()),
        "{names:?}"
    );

    // Key A is no longer trusted: what A signed stops serving, B's plugin stays.
    write_config(
        &host,
        &format!("[signatures]\nrequire = true\ntrusted_keys = [\"{key_b}\"]\n"),
    );
    until_listed(&client, "which_version", false, "which_version withdrawn").await;
    let refused = wait_event(&host, "plugin_refused", "versioned").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("no trusted key made this signature"),
        "{refused}"
    );
    wait_event(&host, "plugin_removed", "versioned").await;
    let err = client
        .call_tool(call("which_version", json!({})))
        .await
        .expect_err("a withdrawn tool is unknown");
    assert!(err.to_string().contains("which_version"), "{err}");
    assert!(tool_names(&client).await.contains(&"greet".to_owned()));
    assert_eq!(count_events(&host, "plugin_removed", "template"), 0);
    assert!(refusals(&host, "template").is_empty());

    // Trusted again: back.
    write_config(&host, &both);
    until_listed(&client, "which_version", true, "which_version back").await;
    assert_eq!(which(&client, 0).await, "v1");
    client.cancel().await.unwrap();
}

/// Issue 23 (signatures while serving): with signatures required, a plugin
/// whose `.sig` is deleted while it serves stops serving; so does one whose
/// `.sig` is replaced by a signature no trusted key made (another author's
/// over the same bytes, or garbage). Both are audited (refused, removed), the
/// other plugins keep serving, and putting the good `.sig` back serves the
/// plugin again.
#[tokio::test(flavor = "multi_thread")]
async fn a_signature_deleted_or_replaced_while_serving_unloads_the_plugin() {
    let (author, stranger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let public = author_key(author.path());
    author_key(stranger.path());
    let builder = HostBuilder::new()
        .plugin(&test_plugin("v1"), "versioned")
        .plugin(&bundled("template"), "template");
    let wasm = builder.plugins_dir().join("versioned.wasm");
    let good = sign_with(author.path(), &wasm);
    sign_with(author.path(), &builder.plugins_dir().join("template.wasm"));
    // The stranger signs the very same bytes.
    let copy = stranger.path().join("versioned.wasm");
    std::fs::copy(&wasm, &copy).unwrap();
    let foreign = sign_with(stranger.path(), &copy);
    assert_ne!(foreign, good);
    let host = builder
        .config(&format!(
            "[signatures]\nrequire = true\ntrusted_keys = [\"{public}\"]\n"
        ))
        .start();
    let (client, _watcher) = watching_client(&host).await;
    assert_eq!(which(&client, 0).await, "v1");
    let dir = plugins(&host);
    let sig = dir.join("versioned.wasm.sig");

    // Deleted: withdrawn at once.
    let before = refusals(&host, "versioned").len();
    std::fs::remove_file(&sig).unwrap();
    until_listed(&client, "which_version", false, "withdrawn: .sig deleted").await;
    let refused = next_refusal(&host, "versioned", before).await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("no signature file"),
        "{refused}"
    );
    wait_event(&host, "plugin_removed", "versioned").await;
    assert!(tool_names(&client).await.contains(&"greet".to_owned()));

    // The good signature back: served again.
    deploy(&dir, "versioned.wasm.sig", good.as_bytes());
    until_listed(&client, "which_version", true, "back: good .sig").await;
    assert_eq!(which(&client, 0).await, "v1");

    // Replaced by another author's signature, then by garbage: withdrawn each
    // time, and back with the good one.
    for (bad, what) in [
        (foreign.as_str(), "another key's"),
        ("bm9wZQ==\n", "garbage"),
    ] {
        let removed = count_events(&host, "plugin_removed", "versioned");
        let before = refusals(&host, "versioned").len();
        deploy(&dir, "versioned.wasm.sig", bad.as_bytes());
        until_listed(&client, "which_version", false, what).await;
        let refused = next_refusal(&host, "versioned", before).await;
        let reason = refused["reason"].as_str().unwrap();
        assert!(
            reason.contains("no trusted key") || reason.contains("signature"),
            "{what}: {refused}"
        );
        eventually(Duration::from_secs(10), "plugin_removed", async || {
            count_events(&host, "plugin_removed", "versioned") > removed
        })
        .await;
        assert!(tool_names(&client).await.contains(&"greet".to_owned()));
        deploy(&dir, "versioned.wasm.sig", good.as_bytes());
        until_listed(&client, "which_version", true, "back: good .sig again").await;
        assert_eq!(which(&client, 0).await, "v1");
    }
    assert_eq!(count_events(&host, "plugin_removed", "template"), 0);
    client.cancel().await.unwrap();
}

/// Issue 18.7: a policy change applies at once, whatever is compiling. With a
/// large plugin (a Python component, seconds to compile) compiling, turning
/// signature enforcement on withdraws the unsigned plugin already serving
/// within a second or two (it waited for the compile before: 28 s in the
/// review), and the large unsigned plugin, compiled under the old policy, is
/// never served.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_applies_while_a_large_plugin_compiles() {
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("wordcount.wasm");
    let out = std::process::Command::new(common::repo().join("scripts/build-python-plugin"))
        .arg(common::repo().join("examples/python/wordcount"))
        .arg(&big)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = author_key(work.path());
    let open = format!("[signatures]\nrequire = false\ntrusted_keys = [\"{public}\"]\n");
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .config(&open)
        .start();
    let (client, _watcher) = watching_client(&host).await;
    assert!(tool_names(&client).await.contains(&"greet".to_owned()));

    deploy(&plugins(&host), "wordcount.wasm", &bytes(&big));
    // Its compile has started (the pass that loads it is under way).
    let started = Instant::now();
    while !host.log().contains("rescanning the plugin directory") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !host.log().contains("plugin loaded plugin=wordcount"),
        "the large plugin compiled too fast for this test:\n{}",
        host.log()
    );
    write_config(&host, &open.replace("require = false", "require = true"));
    let changed = Instant::now();
    eventually(
        Duration::from_secs(3),
        "greet withdrawn during the compile",
        async || !tool_names(&client).await.contains(&"greet".to_owned()),
    )
    .await;
    let took = changed.elapsed();
    assert!(
        !host.log().contains("plugin loaded plugin=wordcount"),
        "the policy waited for the compile ({took:?}):\n{}",
        host.log()
    );
    assert!(
        host.log().contains("plugin stops serving"),
        "{}",
        host.log()
    );
    // The large unsigned plugin finishes compiling and is not served.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let names = tool_names(&client).await;
        assert!(
            !names.contains(&"word_count".to_owned()),
            "unsigned plugin served: {names:?}"
        );
        if common::audit_events(&host, "plugin_refused")
            .iter()
            .any(|l| l["plugin"] == "wordcount")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wordcount never refused:\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!tool_names(&client).await.contains(&"word_count".to_owned()));
}

/// `resources/subscribe`: a session hears `notifications/resources/updated` for
/// the URIs it subscribed to, when the plugin says one changed (only its own
/// URIs count) and when the plugin serving it is reloaded; not after
/// unsubscribing; unknown URIs cannot be subscribed to.
#[tokio::test(flavor = "multi_thread")]
#[allow(deprecated)] // resources/subscribe: legacy in rmcp, current in MCP 2025-11-25
async fn subscribers_hear_of_changed_resources_from_the_plugin_and_from_reloads() {
    use rmcp::model::{SubscribeRequestParams, UnsubscribeRequestParams};
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    let (watching, watcher) = watching_client(&host).await;
    let (other, other_watcher) = watching_client(&host).await;
    watching
        .subscribe(SubscribeRequestParams::new("kitchen://readme"))
        .await
        .unwrap();
    watching
        .subscribe(SubscribeRequestParams::new("kitchen://echo/hi"))
        .await
        .unwrap();
    let e = watching
        .subscribe(SubscribeRequestParams::new("kitchen://nothing"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no resource"), "{e}");
    let touched = async |uri: &str| {
        texts(
            &other
                .call_tool(call("touch", json!({"uri": uri})))
                .await
                .unwrap(),
        )
        .concat()
    };
    // The call comes from another session: notifications go to subscribers.
    assert_eq!(touched("kitchen://readme").await, "true");
    assert_eq!(touched("kitchen://echo/hi").await, "true");
    assert_eq!(
        touched("other://thing").await,
        "false",
        "not the plugin's URI"
    );
    let updated = |w: &ListWatcher| w.updated.lock().unwrap().clone();
    eventually(Duration::from_secs(5), "two updates", async || {
        updated(&watcher).len() == 2
    })
    .await;
    assert_eq!(updated(&watcher), ["kitchen://readme", "kitchen://echo/hi"]);
    assert!(
        updated(&other_watcher).is_empty(),
        "it subscribed to nothing"
    );

    watching
        .unsubscribe(UnsubscribeRequestParams::new("kitchen://echo/hi"))
        .await
        .unwrap();
    // A new version of the plugin (the same code, one more custom section).
    let mut bytes = std::fs::read(test_plugin("kitchen-sink")).unwrap();
    bytes.extend_from_slice(&[0x00, 0x05, 0x04, b'n', b'e', b'x', b't']);
    let dir = host.dir.path().join("plugins");
    std::fs::write(dir.join("kitchen.wasm.tmp"), &bytes).unwrap();
    std::fs::rename(dir.join("kitchen.wasm.tmp"), dir.join("kitchen.wasm")).unwrap();
    eventually(Duration::from_secs(10), "an update on reload", async || {
        updated(&watcher).len() == 3
    })
    .await;
    assert_eq!(
        updated(&watcher)[2],
        "kitchen://readme",
        "not the unsubscribed one"
    );
    drop(other);
}
