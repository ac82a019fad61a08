//! End-to-end: the real `stockade` binary, real plugins built from source, and the
//! rmcp client over Streamable HTTP.

mod common;

use common::{HostBuilder, bundled, run_stockade, run_stockade_env, test_plugin};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use serde_json::{Value, json};
use std::time::Duration;

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn call(name: &str, v: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(name.to_owned()).with_arguments(args(v))
}

fn text(r: &CallToolResult) -> String {
    common::result_text(r)
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_and_calls_tools_of_two_plugins() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("kitchen-sink"), "kitchen-sink")
        .start();
    let client = host.client().await;

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in ["greet", "add", "whoami", "echo", "everything", "stats"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let greet = tools.iter().find(|t| t.name == "greet").unwrap();
    assert_eq!(greet.input_schema.get("type"), Some(&json!("object")));
    assert!(
        greet.input_schema["properties"].get("name").is_some(),
        "schema derived from the args struct: {:?}",
        greet.input_schema
    );
    assert_eq!(
        greet.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );

    let r = client
        .call_tool(call("greet", json!({"name": "Ada"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    assert!(text(&r).contains("Hello, Ada"), "{}", text(&r));

    let r = client
        .call_tool(call("add", json!({"a": 2, "b": 3.5})))
        .await
        .unwrap();
    assert_eq!(r.structured_content.as_ref().unwrap()["sum"], json!(5.5));
    let add = tools.iter().find(|t| t.name == "add").unwrap();
    assert!(
        add.output_schema.is_some(),
        "structured tools publish an output schema"
    );

    let r = client
        .call_tool(call("echo", json!({"text": "round trip ✓"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "round trip ✓");

    // Every content type survives the WIT → MCP conversion.
    let r = client
        .call_tool(call("everything", json!({})))
        .await
        .unwrap();
    let kinds: Vec<&str> = r
        .content
        .iter()
        .map(|c| match c {
            ContentBlock::Text(_) => "text",
            ContentBlock::Image(i) => {
                assert_eq!(i.mime_type, "image/png");
                assert!(!i.data.is_empty());
                "image"
            }
            ContentBlock::Audio(_) => "audio",
            ContentBlock::Resource(_) => "resource",
            ContentBlock::ResourceLink(_) => "resource_link",
            _ => "other",
        })
        .collect();
    for k in ["text", "image", "audio", "resource", "resource_link"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // A tool reporting failure reaches the model as an error result.
    let r = client.call_tool(call("fail", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("it failed on purpose"), "{}", text(&r));
    let r = client
        .call_tool(call("fail_hard", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));

    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_arguments_are_explained() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .start();
    let client = host.client().await;

    let r = client.call_tool(call("greet", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("invalid arguments") && t.contains("name"), "{t}");

    let r = client
        .call_tool(call("greet", json!({"name": 42})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("name") && t.contains("invalid type"), "{t}");

    // An unknown tool is a protocol error, not a tool result.
    let err = client
        .call_tool(call("no_such_tool", json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_tool"), "{err}");

    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_plugin_does_not_take_the_host_down() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("trap"), "trap")
        .start();
    let client = host.client().await;

    let r = client.call_tool(call("panic", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("crashed") && t.contains("boom"), "{t}");
    assert!(t.contains("plugin `trap`"), "{t}");

    let r = client
        .call_tool(call("unreachable", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("crashed"), "{}", text(&r));

    // The same plugin and the others keep serving: every call is a fresh instance.
    let r = client
        .call_tool(call("greet", json!({"name": "still here"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    assert!(host.is_running());
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_tool_names_refuse_the_newcomer() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("dup"), "dup")
        .start();
    let log = host.log();
    assert!(
        log.contains("tool `greet` is already served by plugin `template`"),
        "refusal names both plugins:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("plugin refused") && l.contains("dup")),
        "{log}"
    );

    let client = host.client().await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"greet"));
    assert!(
        !names.contains(&"dup_only"),
        "the refused plugin serves nothing: {names:?}"
    );
    let r = client
        .call_tool(call("greet", json!({"name": "Ada"})))
        .await
        .unwrap();
    assert!(
        text(&r).contains("Hello, Ada"),
        "the first plugin keeps the name"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_refused_with_a_reason_and_the_host_still_serves() {
    // A core module (not a component): the smallest valid one.
    let core_module = b"\0asm\x01\0\0\0";
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin_bytes(b"this is not wasm at all", "garbage.wasm")
        .plugin_bytes(&[], "empty.wasm")
        .plugin_bytes(core_module, "core.wasm")
        .plugin_bytes(b"\0asm\x0d\0\x01\0\x01\x02", "truncated.wasm")
        .plugin_bytes(b"ignored", "notes.txt")
        .start();
    let log = host.log();
    for (name, reason) in [
        ("garbage", "not a WebAssembly component"),
        ("empty", "not a WebAssembly component"),
        ("core", "core WebAssembly module"),
        ("truncated", "not a WebAssembly component"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("plugin refused") && l.contains(&format!("plugin={name}")))
            .unwrap_or_else(|| panic!("no refusal line for {name}:\n{log}"));
        assert!(line.contains(reason), "{name}: {line}");
    }
    assert!(!log.contains("notes"), "non-.wasm files are ignored");

    let client = host.client().await;
    let r = client
        .call_tool(call("greet", json!({"name": "Ada"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false));
    client.cancel().await.unwrap();

    let health: Value = reqwest::get(format!("http://{}/health", host.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["plugins"], 1);
    assert_eq!(health["refused"], 4);
}

/// Progress notifications go out in order and before the call's result. Read
/// from the raw SSE stream: that is the order the server sends (an rmcp client
/// hands notifications to its handler on separate tasks, so the order in which
/// a handler sees them is not the wire order).
#[tokio::test(flavor = "multi_thread")]
async fn progress_reaches_the_client() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen-sink")
        .start();
    let session = common::RawSession::open(&host.mcp_url()).await;
    let body = session
        .post(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"log_and_progress","arguments":{},"_meta":{"progressToken":7}}}))
        .await
        .text()
    .await
    .unwrap();
    let messages: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    let progress: Vec<f64> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| {
            assert_eq!(m["params"]["progressToken"], 7, "{m}");
            m["params"]["progress"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(progress, vec![1.0, 2.0, 3.0], "in order: {body}");
    let result_at = messages
        .iter()
        .position(|m| m["id"] == 2)
        .expect("the result");
    let last_progress = messages
        .iter()
        .rposition(|m| m["method"] == "notifications/progress")
        .unwrap();
    assert!(
        last_progress < result_at,
        "progress after the result: {body}"
    );
    assert_eq!(messages[result_at]["result"]["isError"], false, "{body}");
}

#[test]
fn refuses_non_loopback_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let (ok, out) = run_stockade(
        &[
            "serve",
            "--auth",
            "none",
            "--listen",
            "0.0.0.0:0",
            "--plugins",
            "plugins",
        ],
        dir.path(),
    );
    assert!(!ok);
    assert!(
        out.contains("only allowed when listening on loopback") && out.contains("0.0.0.0"),
        "{out}"
    );
}

#[test]
fn missing_plugin_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_stockade(
        &["serve", "--listen", "127.0.0.1:0", "--plugins", "nope"],
        dir.path(),
    );
    assert!(!ok);
    assert!(
        out.contains("plugin directory nope does not exist"),
        "{out}"
    );
}

#[test]
fn bad_config_is_reported_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("c.toml"), "[limits]\nfule = 1\n").unwrap();
    let (ok, out) = run_stockade(&["serve", "--config", "c.toml"], dir.path());
    assert!(!ok);
    assert!(out.contains("fule"), "{out}");
}

#[test]
fn inspect_shows_digest_tools_and_declared_capabilities() {
    let file = test_plugin("kitchen-sink");
    let bytes = std::fs::read(&file).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_stockade(
        &["plugins", "inspect", file.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["digest"], format!("sha256:{digest}"));
    assert_eq!(v["declared_capabilities"]["exec"][0], "/bin/echo");
    assert!(v["can_use"].to_string().contains("grants.exec"), "{v}");
    assert!(
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo")
    );

    let (ok, out) = run_stockade(&["plugins", "inspect", file.to_str().unwrap()], dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("grants nothing"), "{out}");
    assert!(
        out.contains(&format!("digest = \"sha256:{digest}\"")),
        "{out}"
    );

    // Issue 9.11: what it can import is shown whatever it declares: the hostile
    // plugin declares nothing and imports HTTP, exec, SQL and the client.
    let (ok, out) = run_stockade(
        &[
            "plugins",
            "inspect",
            test_plugin("hostile").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("declares: nothing"), "{out}");
    assert!(!out.contains("pure computation"), "{out}");
    for can in [
        "http: outbound HTTP requests",
        "exec: run programs",
        "sql: read-only queries",
    ] {
        assert!(out.contains(can), "`{can}` missing: {out}");
    }

    std::fs::write(dir.path().join("bad.wasm"), b"nope").unwrap();
    let (ok, out) = run_stockade(&["plugins", "inspect", "bad.wasm"], dir.path());
    assert!(!ok);
    assert!(out.contains("bad.wasm is not a usable plugin"), "{out}");
}

/// Issue 9.10: the shipped systemd unit passes `systemd-analyze verify` with its
/// hardening (the binary path swapped for the one under test).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(common::repo().join("dist/systemd/stockade.service"))
        .expect("dist/systemd/stockade.service");
    for setting in [
        "User=stockade",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/stockade",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stockade.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/stockade", env!("CARGO_BIN_EXE_stockade")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// Issue 9.3: a second host on a live host's data directory is refused by the
/// lock before it writes anything; failed starts (port in use, a bad password)
/// write nothing to the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn failed_starts_leave_the_data_directory_alone() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .start();
    let data = host.data_dir();
    let audit_before = std::fs::read(data.join("audit/audit.log")).unwrap();
    let listing_before = std::fs::read(data.join("plugins.json")).unwrap();
    let dir = data.parent().unwrap();
    let e = common::serve_must_fail(
        dir,
        &[
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
        e.contains("is in use by another stockade process (pid"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(data.join("audit/audit.log")).unwrap(),
        audit_before
    );
    assert_eq!(
        std::fs::read(data.join("plugins.json")).unwrap(),
        listing_before
    );
    let (ok, out) = run_stockade(&["audit", "verify", "data/audit"], dir);
    assert!(ok, "{out}");

    // Port in use (the live host's), fresh data directory: nothing written.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("plugins")).unwrap();
    let port = host.base_url().rsplit(':').next().unwrap().to_owned();
    let e = common::serve_must_fail(
        other.path(),
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--plugins",
            "plugins",
            "--data",
            "data",
            "--auth",
            "none",
        ],
        &[],
    );
    assert!(e.contains("cannot listen on"), "{e}");
    assert!(
        !other.path().join("data/audit").exists(),
        "a failed start wrote an audit log"
    );

    // A password too short for the built-in login: nothing written either.
    let e = common::serve_must_fail(
        other.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--plugins",
            "plugins",
            "--data",
            "data",
        ],
        &[("STOCKADE_PASSWORD", "short")],
    );
    assert!(e.contains("cannot set up authentication"), "{e}");
    assert!(
        !other.path().join("data/audit").exists(),
        "a failed start wrote an audit log"
    );
}

/// Issue 9.4: listening on every interface without the URL clients use is
/// refused at start, with the fix in the message (it used to start, advertise
/// `http://0.0.0.0:PORT` and answer every real Host with 403).
#[test]
fn all_interfaces_without_a_public_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let (ok, out) = run_stockade_env(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--plugins",
            "plugins",
            "--data",
            "data",
        ],
        dir.path(),
        &[("STOCKADE_PASSWORD", "a long enough password")],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("--public-url https://"), "{out}");
    assert!(
        !dir.path().join("data/audit").exists(),
        "a refused start wrote an audit log"
    );
}

/// Issue 9.5: `GET /` says what this is and which URL to give a client.
#[tokio::test(flavor = "multi_thread")]
async fn the_root_page_names_the_mcp_url() {
    let host = HostBuilder::new().start();
    let r = reqwest::get(format!("{}/", host.base_url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains(&host.mcp_url()), "{page}");
    assert!(page.contains("href=\"/health\""), "{page}");
}

/// Issue 9.5: ending a session answers 200 (the Python SDK treats rmcp's 202 as
/// a failed termination), and the session is gone afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_session_answers_ok() {
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .start();
    let session = common::RawSession::open(&host.mcp_url()).await;
    let status = session.delete().await;
    assert_eq!(status, 200);
    let after = session
        .post(json!({"jsonrpc":"2.0","id":9,"method":"tools/list"}))
        .await;
    assert_eq!(after.status(), 404, "the session is gone");
}

/// Issue 9.5: a reader that closes the pipe early (`stockade plugins list |
/// head -2`) ends the command quietly, not with a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        bundled("template"),
        dir.path().join("plugins/template.wasm"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["plugins", "list", "--plugins", "plugins", "--data", "data"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// Issue 9.8: what an operator gets wrong is said at start, and the default log
/// holds the host's lines, not rmcp's.
#[tokio::test(flavor = "multi_thread")]
async fn operator_mistakes_are_named_and_the_default_log_is_quiet() {
    // A grant under a misspelt plugin name, on the default log level.
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .config("[plugins.tempalte.grants]\nenv = { GREETING = \"hi\" }\n")
        .env("STOCKADE_LOG", "")
        .start();
    assert!(
        host.wait_log(
            "did you mean `[plugins.template]`?",
            Duration::from_secs(10)
        ),
        "{}",
        host.log()
    );
    let client = host.client().await;
    for _ in 0..3 {
        let r = client
            .call_tool(
                CallToolRequestParams::new("greet")
                    .with_arguments(json!({"name": "Ada"}).as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true));
    }
    drop(client);
    let (ok, listed) = run_stockade(
        &["plugins", "list", "--plugins", "plugins", "--data", "data"],
        host.dir.path(),
    );
    assert!(ok, "{listed}");
    assert!(
        listed.contains("warning: `[plugins.tempalte]` in the config matches no plugin file"),
        "{listed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(host.data_dir().join("audit/audit.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the audit log is the owner's only");
    }
    let log = host.log();
    assert!(
        !log.contains("rmcp::"),
        "rmcp's own lines are out of the default log:\n{log}"
    );

    // A password file others can read: used, with a warning that says what to do.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "a-long-enough-operator-password\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut host = HostBuilder::new()
        .auth(Some("builtin"))
        .arg("--password-file")
        .arg(pw.to_str().unwrap())
        .start();
    assert!(
        host.wait_log(
            "has mode 644: other users can read it; run `chmod 600",
            Duration::from_secs(10)
        ),
        "{}",
        host.log()
    );
    assert!(host.is_running());
}

/// Issue 9.11: a plugin author's crate outside the repository, depending on the
/// SDK by path as `sdk/README.md` says, builds with `scripts/build-plugins --crate`
/// (whichever toolchain this machine has) into a component the host loads.
#[test]
fn a_plugin_crate_outside_the_repo_builds_with_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("greeter");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::copy(
        common::repo().join("plugins/template/src/lib.rs"),
        krate.join("src/lib.rs"),
    )
    .unwrap();
    // The lock keeps dependency versions (and so the shared build cache) as
    // in the repository's plugin workspace.
    std::fs::copy(
        common::repo().join("plugins/Cargo.lock"),
        krate.join("Cargo.lock"),
    )
    .unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            r#"[package]
name = "greeter"
version = "0.3.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
stockade-sdk = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
"#,
            common::repo().join("sdk").display()
        ),
    )
    .unwrap();
    // The build cache of `scripts/build-plugins` (target/wasm), so only the
    // crate itself compiles; its own `target/` works the same, from scratch.
    let target = common::repo().join("target/wasm");
    let out = std::process::Command::new(common::repo().join("scripts/build-plugins"))
        .arg("--crate")
        .arg(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let wasm = target.join("wasm32-wasip2/release/greeter.wasm");
    assert!(text.contains(&wasm.display().to_string()), "{text}");
    let (ok, shown) = run_stockade(&["plugins", "inspect", wasm.to_str().unwrap()], dir.path());
    assert!(ok, "{shown}");
    assert!(
        shown.contains("(greeter 0.3.0)") && shown.contains("greet"),
        "{shown}"
    );
}

/// Issue 9.12: a plugin written in Python (`examples/python/wordcount`, with
/// `sdk/python/stockade_tools.py`), built by `scripts/build-python-plugin` with
/// componentize-py against the `tool-plugin` world, loads and answers: schema
/// from the signature, text, structured and error results, argument checks.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_plugin_built_with_componentize_py_answers() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("wordcount.wasm");
    let out = std::process::Command::new(common::repo().join("scripts/build-python-plugin"))
        .arg(common::repo().join("examples/python/wordcount"))
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let host = HostBuilder::new().plugin(&wasm, "wordcount").start();
    let client = host.client().await;
    let tools = client.list_all_tools().await.unwrap();
    let wc = tools
        .iter()
        .find(|t| t.name == "word_count")
        .unwrap_or_else(|| panic!("no word_count in {tools:?}\n{}", host.log()));
    assert_eq!(wc.input_schema["required"], json!(["text"]));
    assert_eq!(wc.input_schema["properties"]["text"]["type"], "string");
    assert_eq!(
        wc.input_schema["properties"]["unit"]["enum"],
        json!(["words", "lines", "characters"])
    );
    assert_eq!(
        wc.description.as_deref(),
        Some("Counts the words (or lines, or characters) in a text.")
    );

    let r = client
        .call_tool(call("word_count", json!({"text": "one two three"})))
        .await
        .unwrap();
    assert_eq!((r.is_error, text(&r).as_str()), (Some(false), "3 words"));
    let r = client
        .call_tool(call("word_count", json!({"text": "a\nb", "unit": "lines"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "2 lines");
    let r = client
        .call_tool(call("longest_word", json!({"text": "a mighty word"})))
        .await
        .unwrap();
    assert_eq!(
        r.structured_content,
        Some(json!({"word": "mighty", "length": 6}))
    );
    let r = client
        .call_tool(call(
            "check_min_words",
            json!({"text": "too short", "minimum": 5}),
        ))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("only 2 words"), "{}", text(&r));
    for (args, needle) in [
        (json!({"unit": "words"}), "missing field `text`"),
        (json!({"text": 5}), "`text` must be a string"),
        (
            json!({"text": "x", "unit": "pages"}),
            "`unit` must be one of",
        ),
        (json!({"text": "x", "extra": 1}), "unknown field `extra`"),
    ] {
        let r = client.call_tool(call("word_count", args)).await.unwrap();
        assert_eq!(r.is_error, Some(true));
        assert!(text(&r).contains(needle), "{needle}: {}", text(&r));
    }
    let r = client
        .call_tool(call("longest_word", json!({"text": "   "})))
        .await
        .unwrap();
    assert!(
        r.is_error == Some(true) && text(&r).contains("has no words"),
        "{}",
        text(&r)
    );
}

/// Issue 12 (graceful shutdown, readiness): `/ready` answers 200 while the host
/// can serve; SIGTERM lets an in-flight call finish, then the host exits
/// cleanly with one line in its log and a closed audit log.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_calls_finish_and_logs_one_line() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .env("STOCKADE_LOG", "")
        .start();
    let r = reqwest::get(format!("{}/ready", host.base_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["plugins"].as_u64()),
        (Some("ready"), Some(1)),
        "{body}"
    );

    let client = host.client().await;
    let call = tokio::spawn(async move {
        let r = client.call_tool(call("sleep", json!({"secs": 2}))).await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = host.log();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (r, _client) = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the in-flight call is answered within 20 s")
        .unwrap();
    let r = r.expect("the in-flight call is answered");
    assert_ne!(r.is_error, Some(true), "{}", common::result_text(&r));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while host.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the host did not stop: {}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after: Vec<String> = host.log()[before.len()..]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(after.len(), 1, "one line at shutdown: {after:?}");
    assert!(after[0].contains("stopped"), "{after:?}");
    let audit = std::fs::read_to_string(host.data_dir().join("audit/audit.log")).unwrap();
    let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(last["reason"], "shutdown", "{last}");
}

/// A `tools/call` of the `hostile` plugin's `sleep` for `secs`, sent in
/// `session`; returns once the answer's stream has started (the POST is then in
/// flight on the host and its call dispatched: a quick answer would have come
/// whole, as JSON).
async fn start_sleeping(session: &common::RawSession, secs: u64) -> reqwest::Response {
    let answer = session
        .post(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"secs": secs}}}))
        .await;
    assert_eq!(answer.status(), 200);
    let streamed = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(streamed.starts_with("text/event-stream"), "{streamed}");
    answer
}

/// Sends SIGTERM to the host.
fn sigterm(host: &common::Host) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// A probe as a load balancer sends it: a new connection each time.
fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Issue 23 (`/ready` while draining): after SIGTERM, with a call in flight,
/// a load balancer's probes still get answers: `/ready` is 503 with the
/// reason "shutting down" (the listener used to close at the signal, so a
/// probe got a refused connection and `/ready`'s draining answer was never
/// seen), `/health` stays 200, and the call in flight finishes and is answered.
#[tokio::test(flavor = "multi_thread")]
async fn ready_answers_503_while_draining() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .start();
    let probe = probe_client();
    let ready = format!("{}/ready", host.base_url());
    assert_eq!(probe.get(&ready).send().await.unwrap().status(), 200);
    let session = common::RawSession::open(&host.mcp_url()).await;
    let answer = start_sleeping(&session, 4).await;
    sigterm(&host);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let body: Value = loop {
        let r = probe.get(&ready).send().await.unwrap_or_else(|e| {
            panic!(
                "a probe during the drain got no answer ({e}): {}",
                host.log()
            )
        });
        if r.status() == 503 {
            break r.json().await.unwrap();
        }
        assert_eq!(r.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "/ready still 200 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["problems"], json!(["shutting down"]), "{body}");
    let health = probe
        .get(format!("{}/health", host.base_url()))
        .send()
        .await
        .expect("/health answers during the drain");
    assert_eq!(health.status(), 200);
    // The call in flight finishes, answered in full.
    let r = common::rpc_answer(answer).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert!(r.to_string().contains("woke up"), "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the host did not stop after its call: {}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 23 (a call outlasting the drain): a call still running when the
/// 10 s drain ends is stopped, not dropped: its client gets a tool error
/// saying the host shut down (not a stream that ends without an answer), the
/// audit log records the call with outcome `shutdown` (not `cancelled`, which
/// says the client asked), the host exits within the 10 s grace plus a little,
/// and the audit chain verifies with the shutdown checkpoint last.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_outlasting_the_drain_is_cut_off_answered_and_audited() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config("[plugins.hostile.limits]\ntimeout_ms = 120000\n")
        .start();
    let session = common::RawSession::open(&host.mcp_url()).await;
    let answer = start_sleeping(&session, 60).await;
    let signalled = std::time::Instant::now();
    sigterm(&host);
    let body = tokio::time::timeout(Duration::from_secs(20), answer.text())
        .await
        .expect("the answer ends within 20 s")
        .expect("the answer's stream ends cleanly");
    let cut = signalled.elapsed();
    let r: Value = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| d.contains("\"id\""))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap_or_else(|| panic!("the stream ended without an answer: {body:?}"));
    assert_eq!(r["id"], 7, "{r}");
    assert_eq!(r["result"]["isError"], true, "{r}");
    let said = r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("tool `sleep` (plugin `hostile`) failed: cut off by shutdown"),
        "{r}"
    );
    assert!(
        cut >= Duration::from_millis(9_500),
        "cut off after {cut:?}, before the 10 s grace"
    );
    while host.is_running() {
        assert!(
            signalled.elapsed() < Duration::from_secs(16),
            "the host did not exit within 10 s + 6 s: {}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = common::audit_events(&host, "tool_call");
    let sleep: Vec<&Value> = calls.iter().filter(|l| l["target"] == "sleep").collect();
    assert_eq!(sleep.len(), 1, "{calls:?}");
    assert_eq!(sleep[0]["outcome"], "shutdown", "{}", sleep[0]);
    assert!(
        sleep[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cut off by shutdown")),
        "{}",
        sleep[0]
    );
    let audit = common::read_audit(&host);
    assert_eq!(audit.last().unwrap()["reason"], "shutdown");
    let (ok, out) = run_stockade(
        &["audit", "verify", "--data", "data", "data/audit"],
        host.dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("end: a shutdown checkpoint"), "{out}");
}

/// Issue 10: an answer that is ready goes out in one piece. A quick tool call is
/// one JSON body with a `Content-Length` (not a chunked SSE stream of several
/// writes); a call that sent notifications stays SSE, notifications first, also
/// in one piece. JSON is always acceptable: a POST must accept both (406).
#[tokio::test(flavor = "multi_thread")]
async fn a_ready_answer_goes_out_in_one_piece() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    let s = common::RawSession::open(&host.mcp_url()).await;
    let r = s
        .post(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}}))
        .await;
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/json", "{h:?}");
    assert!(h.get("transfer-encoding").is_none(), "{h:?}");
    let len: usize = h["content-length"].to_str().unwrap().parse().unwrap();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["id"], 5);
    assert_eq!(body["result"]["content"][0]["text"], "hi");
    assert_eq!(len, body.to_string().len(), "the whole answer, sized");

    let r = s
        .post(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
            "params": {"name": "log_and_progress", "arguments": {}, "_meta": {"progressToken": "p"}}}))
        .await;
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/event-stream", "{h:?}");
    assert!(
        h.get("content-length").is_some(),
        "collected in one piece: {h:?}"
    );
    let text = r.text().await.unwrap();
    let progress = text.find("notifications/progress").expect(&text);
    let result = text.find("\"id\":6").expect(&text);
    assert!(progress < result, "notifications come first: {text}");
    assert_eq!(text.matches("notifications/progress").count(), 3, "{text}");

    let only_sse = reqwest::Client::new()
        .post(host.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "sse-only", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(only_sse.status(), 406, "the transport requires both");
}

/// The value of the first exposition line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_move_with_calls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = tempfile::tempdir().unwrap();
    let token_file = secret.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-token-0123456789\n").unwrap();
    let host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&test_plugin("kitchen-sink"), "kitchen-sink")
        .config(&format!(
            "[prometheus]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ))
        .start();
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        r.text().await.unwrap()
    };
    let ok_calls = "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"greet\",error_type=\"\"}";
    let failed_calls = "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"greet\",error_type=\"tool_error\"}";
    let plugin_ok = "stockade_plugin_operations_total{kind=\"tool\",plugin=\"template\",target=\"greet\",outcome=\"ok\"}";
    let before = scrape().await;
    assert!(before.ends_with("# EOF\n"), "{before}");
    assert_eq!(sample(&before, "stockade_plugins{state=\"serving\"}"), 2.0);

    let client = host.client().await;
    for _ in 0..3 {
        client
            .call_tool(call("greet", json!({"name": "Ada"})))
            .await
            .unwrap();
    }
    let bad = client
        .call_tool(call("greet", json!({"name": 7})))
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
    // A capability the plugin was not granted: counted by plugin and capability.
    client.call_tool(call("try_exec", json!({}))).await.unwrap();
    // A tool name the client made up is not a label (unbounded cardinality).
    assert!(
        client
            .call_tool(call("no_such_tool_xyz", json!({})))
            .await
            .is_err()
    );
    let after = scrape().await;
    assert!(!after.contains("no_such_tool_xyz"), "{after}");
    assert_eq!(
        sample(
            &after,
            "stockade_capability_denials_total{plugin=\"kitchen-sink\",capability=\"exec\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"\",error_type=\"-32602\"}"
        ) >= 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, ok_calls) - sample(&before, ok_calls),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, failed_calls) - sample(&before, failed_calls),
        1.0
    );
    assert_eq!(sample(&after, plugin_ok) - sample(&before, plugin_ok), 3.0);
    assert!(
        sample(&after, "stockade_events_total{event=\"tool_call\"}") >= 4.0,
        "{after}"
    );
    assert!(sample(&after, "stockade_audit_write_duration_seconds_count") >= 4.0);
    assert!(sample(&after, "stockade_mcp_sessions") >= 1.0, "{after}");
    // The sum moves too: these are real durations, not just counts.
    assert!(
        sample(
            &after,
            "mcp_server_operation_duration_seconds_sum{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"greet\",error_type=\"\"}"
        ) > 0.0
    );

    // On the main listener, only with the token.
    let main = format!("{}/metrics", host.base_url());
    assert_eq!(http.get(&main).send().await.unwrap().status(), 401);
    let wrong = http
        .get(&main)
        .bearer_auth("scrape-token-wrong-000")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&main)
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains(ok_calls));
}

/// Issue 19: each era gets its results' shape. MCP 2026-07-28 requires
/// `resultType` on every result (the official Python SDK rejects a
/// `tools/list` without it), names the server in every result's `_meta`, and
/// puts caching hints on lists and reads: public for a minute when every
/// caller sees the same list, private and at once stale for a resource's
/// contents (plugin code may answer each caller differently). 2025-11-25
/// results keep the shape they had. The audit line of each call says which
/// revision and which client.
#[tokio::test(flavor = "multi_thread")]
async fn each_era_gets_its_result_shape() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    // (method, params, caching hints expected)
    let requests = [
        ("tools/list", json!({}), Some((60000, "public"))),
        (
            "tools/call",
            json!({"name": "touch", "arguments": {"uri": "kitchen://readme"}}),
            None,
        ),
        ("resources/list", json!({}), Some((60000, "public"))),
        (
            "resources/templates/list",
            json!({}),
            Some((60000, "public")),
        ),
        (
            "resources/read",
            json!({"uri": "kitchen://readme"}),
            Some((0, "private")),
        ),
        ("prompts/list", json!({}), Some((60000, "public"))),
        (
            "prompts/get",
            json!({"name": "kitchen_greeting", "arguments": {"name": "Ann"}}),
            None,
        ),
    ];
    for (i, (method, params, cache)) in requests.iter().enumerate() {
        let r = common::modern(
            None,
            &host.mcp_url(),
            i as u64 + 1,
            method,
            params,
            json!({}),
        )
        .await;
        let answer = common::rpc_answer(r).await;
        let result = &answer["result"];
        assert_eq!(
            result["resultType"], "complete",
            "{method} (2026-07-28): {answer}"
        );
        let info = &result["_meta"]["io.modelcontextprotocol/serverInfo"];
        assert_eq!(info["name"], "stockade", "{method}: {answer}");
        assert_eq!(
            info["version"],
            env!("CARGO_PKG_VERSION"),
            "{method}: {answer}"
        );
        match cache {
            Some((ttl, scope)) => {
                assert_eq!(result["ttlMs"], *ttl, "{method}: {answer}");
                assert_eq!(result["cacheScope"], *scope, "{method}: {answer}");
            }
            None => assert!(result.get("ttlMs").is_none(), "{method}: {answer}"),
        }
    }
    let discover = common::rpc_answer(
        common::modern(
            None,
            &host.mcp_url(),
            50,
            "server/discover",
            &json!({}),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            discover["result"]["ttlMs"].clone(),
            discover["result"]["cacheScope"].clone()
        ),
        (json!(3_600_000), json!("public")),
        "{discover}"
    );
    let legacy = common::RawSession::open(&host.mcp_url()).await;
    for (i, (method, params, _)) in requests.iter().enumerate() {
        let answer = common::rpc_answer(
            legacy
                .post(json!({"jsonrpc": "2.0", "id": i + 10, "method": method, "params": params}))
                .await,
        )
        .await;
        let result = &answer["result"];
        assert!(result.is_object(), "{method} (2025-11-25): {answer}");
        for field in ["resultType", "ttlMs", "cacheScope"] {
            assert!(
                result.get(field).is_none(),
                "{method} (2025-11-25) {field}: {answer}"
            );
        }
        assert!(
            result
                .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
                .is_none(),
            "{method} (2025-11-25): {answer}"
        );
    }
    // The audit log: the modern call says 2026-07-28 and its client, the
    // legacy one 2025-11-25 (the session's revision) and the session's client.
    let calls = common::audit_events(&host, "tool_call");
    let tools: Vec<&Value> = calls.iter().filter(|c| c["target"] == "touch").collect();
    assert_eq!(tools.len(), 2, "{calls:?}");
    assert_eq!(tools[0]["protocol"], "2026-07-28", "{}", tools[0]);
    assert_eq!(tools[0]["client"], "raw-client/1.2", "{}", tools[0]);
    assert_eq!(tools[1]["protocol"], "2025-11-25", "{}", tools[1]);
    assert!(tools[1]["client"].is_string(), "{}", tools[1]);
}

/// Issue 19: a 2026-07-28 request gets log messages only when it asks, at its
/// own level and above (`io.modelcontextprotocol/logLevel`); a value that is
/// not a level is refused (-32602); `logging/setLevel` does not exist
/// for it (-32601). A legacy session still sets its level with it.
#[tokio::test(flavor = "multi_thread")]
async fn modern_requests_get_the_log_messages_they_ask_for() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    let url = host.mcp_url();
    let call = json!({"name": "log_and_progress", "arguments": {}});
    let logs = |messages: &[Value]| {
        messages
            .iter()
            .filter(|m| m["method"] == "notifications/message")
            .count()
    };
    // The tool logs three `info` lines.
    for (level, expected) in [
        (None, 0),
        (Some("debug"), 3),
        (Some("info"), 3),
        (Some("warning"), 0),
    ] {
        let extra = level.map_or(
            json!({}),
            |l| json!({"io.modelcontextprotocol/logLevel": l}),
        );
        let messages =
            common::rpc_messages(common::modern(None, &url, 1, "tools/call", &call, extra).await)
                .await;
        assert_eq!(logs(&messages), expected, "level {level:?}: {messages:?}");
        let last = messages.last().unwrap();
        assert_eq!(
            last["result"]["content"][0]["text"], "logged and reported 3 steps",
            "{last}"
        );
    }
    let r = common::modern(
        None,
        &url,
        2,
        "tools/call",
        &call,
        json!({"io.modelcontextprotocol/logLevel": "loud"}),
    )
    .await;
    let e = common::rpc_answer(r).await;
    assert_eq!(e["error"]["code"], -32602, "{e}");
    assert_eq!(e["id"], 2, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a log level"),
        "{e}"
    );
    let r = common::modern(
        None,
        &url,
        3,
        "logging/setLevel",
        &json!({"level": "debug"}),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(common::rpc_answer(r).await["error"]["code"], -32601);

    let legacy = common::RawSession::open(&url).await;
    let set = legacy
        .post(json!({"jsonrpc": "2.0", "id": 4, "method": "logging/setLevel", "params": {"level": "warning"}}))
        .await;
    assert!(common::rpc_answer(set).await["result"].is_object());
    let messages = common::rpc_messages(
        legacy
            .post(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": call}))
            .await,
    )
    .await;
    assert_eq!(
        logs(&messages),
        0,
        "the session's level holds: {messages:?}"
    );
}

/// Issue 18.8: the host checks every call's arguments against the tool's
/// declared `inputSchema` before any plugin code runs, and a successful
/// result's `structuredContent` against its `outputSchema`. Kitchen-sink's
/// `unchecked` declares a schema by hand (`n`: an integer, at least 1,
/// required) and echoes whatever it gets without checking, as a plugin built
/// without the Rust SDK might; `miscount` returns `{"count": "many"}` under a
/// schema that says `count` is an integer.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_holds_calls_to_the_declared_schemas() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen-sink")
        .start();
    let client = host.client().await;

    // Arguments that break the schema never reach the plugin: the model is
    // told what is wrong (an error result it can act on, as MCP 2025-11-25
    // asks for input validation errors), naming the tool and each violation.
    for (arguments, violation) in [
        (json!({"n": 0}), "at `/n`: `n` must be at least 1, not 0"),
        (
            json!({"n": "lots"}),
            "at `/n`: invalid type: `n` must be an integer, not \"lots\"",
        ),
        (json!({}), "at the top level: missing field `n`"),
    ] {
        let r = client
            .call_tool(call("unchecked", arguments.clone()))
            .await
            .unwrap();
        let t = text(&r);
        assert_eq!(r.is_error, Some(true), "{arguments}: {t}");
        assert_eq!(
            t,
            format!("invalid arguments for tool `unchecked`: {violation}"),
            "{arguments}"
        );
    }
    // A value is quoted short, never echoed whole.
    let r = client
        .call_tool(call("unchecked", json!({"n": "x".repeat(100_000)})))
        .await
        .unwrap();
    assert!(
        r.is_error == Some(true) && text(&r).len() < 400,
        "{}",
        text(&r)
    );

    // Conforming arguments reach it as they were sent.
    let r = client
        .call_tool(call("unchecked", json!({"n": 2, "note": "hi"})))
        .await
        .unwrap();
    assert_eq!(
        (r.is_error, text(&r).as_str()),
        (Some(false), r#"ran with {"n":2,"note":"hi"}"#)
    );

    // The refusals are audited; the plugin was never instantiated for them (no
    // fuel burnt), while the call that ran was.
    let calls: Vec<Value> = common::audit_events(&host, "tool_call")
        .into_iter()
        .filter(|c| c["target"] == "unchecked")
        .collect();
    assert_eq!(calls.len(), 5, "{calls:?}");
    for refused in &calls[..4] {
        assert_eq!(refused["outcome"], "invalid_arguments", "{refused}");
        assert_eq!(refused["fuel"], 0, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("invalid arguments for tool `unchecked`: at ")),
            "{refused}"
        );
    }
    assert_eq!(calls[4]["outcome"], "ok", "{}", calls[4]);
    assert!(
        calls[4]["fuel"].as_u64().is_some_and(|f| f > 0),
        "{}",
        calls[4]
    );

    // A structured result that breaks the declared output schema is withheld
    // and turned into an error result; the operator sees it in the audit log
    // and in the host's log, with the plugin's name.
    let r = client.call_tool(call("miscount", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(r.structured_content, None);
    assert_eq!(
        text(&r),
        "the result of tool `miscount` (plugin `kitchen-sink`) did not match the tool's \
         declared output schema: at `/count`: invalid type: `count` must be an integer, not \"many\""
    );
    let audited = common::audit_events(&host, "tool_call")
        .into_iter()
        .find(|c| c["target"] == "miscount")
        .unwrap();
    assert_eq!(audited["outcome"], "invalid_result", "{audited}");
    // The log is read from the host's stderr as it comes: wait for the line.
    let needle = "did not match the tool's declared output schema";
    assert!(
        host.wait_log(needle, Duration::from_secs(10)),
        "{}",
        host.log()
    );
    let log = host.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("kitchen-sink") && l.contains(needle)),
        "{log}"
    );

    // Conforming structured content still passes untouched.
    let r = client
        .call_tool(call("stats", json!({"numbers": [1, 2, 3]})))
        .await
        .unwrap();
    assert_eq!(
        r.structured_content,
        Some(json!({"count": 3, "sum": 6.0, "mean": 2.0}))
    );
    client.cancel().await.unwrap();
}

/// Issue 18.6: resource reads are counted under the plugin's template, not
/// the client's URI: a caller reading a million URIs adds one row a bucket to
/// `metrics.db`, not a million (which also broke `get_metrics`).
#[tokio::test(flavor = "multi_thread")]
async fn resource_reads_are_metered_by_template() {
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    let client = host.client().await;
    for i in 0..25 {
        let r = client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(format!(
                "kitchen://echo/word-{i}"
            )))
            .await
            .unwrap();
        assert_eq!(r.contents.len(), 1);
    }
    client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "kitchen://readme",
        ))
        .await
        .unwrap();
    // SIGTERM flushes the figures.
    host.terminate().await;
    let db = rusqlite::Connection::open(host.data_dir().join("metrics.db")).unwrap();
    let mut q = db
        .prepare("SELECT DISTINCT target FROM op_buckets WHERE kind = 'resource' ORDER BY target")
        .unwrap();
    let targets: Vec<String> = q
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(targets, ["kitchen://echo/{text}", "kitchen://readme"]);
    let calls: i64 = db
        .query_row(
            "SELECT sum(calls) FROM op_buckets WHERE target = 'kitchen://echo/{text}'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(calls, 25);
}

/// Issue 18.6: subscriptions are bounded per session and per subject, in
/// number and in bytes (one user's many sessions cannot fill the host's
/// memory with long URIs; only the per-session count was bounded before).
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_bounded_per_session_and_per_subject() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    let uri = |s: usize, i: usize| format!("kitchen://echo/{s}-{i}-{}", "a".repeat(62_000));
    let subscribe = async |session: &common::RawSession, uri: String, id: usize| -> Value {
        common::rpc_answer(
            session
                .post(
                    json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe",
                    "params": {"uri": uri}}),
                )
                .await,
        )
        .await
    };
    let mut sessions = Vec::new();
    for s in 0..5 {
        sessions.push(common::RawSession::open(&host.mcp_url()).await);
        if s == 4 {
            break;
        }
        for i in 0..4 {
            let a = subscribe(&sessions[s], uri(s, i), 100 + i).await;
            assert!(a["result"].is_object(), "session {s}, uri {i}: {a}");
        }
    }
    // A fifth long URI in one session passes its 256 KiB.
    let a = subscribe(&sessions[0], uri(0, 9), 200).await;
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("this session's subscribed URIs would pass 256 KiB"),
        "{a}"
    );
    // A fifth session of the same subject: the subject's 1 MiB is full.
    let a = subscribe(&sessions[4], uri(4, 0), 201).await;
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("your sessions' subscribed URIs would pass 1024 KiB"),
        "{a}"
    );
    // Short URIs still fit, and an unsubscribe makes room again.
    let a = subscribe(&sessions[4], "kitchen://readme".into(), 202).await;
    assert!(a["result"].is_object(), "{a}");
    let a = common::rpc_answer(
        sessions[0]
            .post(
                json!({"jsonrpc": "2.0", "id": 203, "method": "resources/unsubscribe",
                "params": {"uri": uri(0, 0)}}),
            )
            .await,
    )
    .await;
    assert!(a["result"].is_object(), "{a}");
    let a = subscribe(&sessions[4], uri(4, 0), 204).await;
    assert!(a["result"].is_object(), "{a}");
}

/// Issue 19: a 2026-07-28 client mirrors a tool's `x-mcp-header` properties
/// into `Mcp-Param-*` headers, and the host checks them against the body
/// (-32020, HTTP 400, on a mismatch or a missing header): a proxy routing on
/// the header cannot be told something the tool never sees.
#[tokio::test(flavor = "multi_thread")]
async fn param_headers_must_match_the_body() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("conformance"), "conformance")
        .start();
    let url = host.mcp_url();
    let params = json!({"name": "test_header_param", "arguments": {"region": "us-west1"}});
    let send = |region: Option<&'static str>| {
        let mut body = params.clone();
        body["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let mut rq = reqwest::Client::new()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "test_header_param");
        if let Some(r) = region {
            rq = rq.header("mcp-param-region", r);
        }
        rq.json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": body}))
            .send()
    };
    let ok = send(Some("us-west1")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        common::rpc_answer(ok).await["result"]["content"][0]["text"],
        "region: us-west1"
    );
    for region in [None, Some("eu-central1")] {
        let r = send(region).await.unwrap();
        assert_eq!(r.status(), 400, "{region:?}");
        let e = common::rpc_answer(r).await;
        assert_eq!(e["error"]["code"], -32020, "{region:?}: {e}");
        assert_eq!(e["id"], 9, "{e}");
    }
}

/// Issue 19 (MRTR): under a 2026-07-28 request a plugin's question to its
/// client ends the call with `input_required` (the question under a key and
/// a sealed `requestState`); the retry with the answer completes it (the
/// plugin runs again and gets the answer). A changed state is refused
/// (-32602); a question the request did not declare a capability for, in a
/// call that then fails, is -32021 with HTTP 400 naming the capability. Each
/// round is one audit line.
#[tokio::test(flavor = "multi_thread")]
async fn modern_calls_ask_their_client_between_rounds() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("conformance"), "conformance")
        .config("[plugins.conformance.grants]\nclient = [\"sampling\", \"elicitation\"]\n")
        .start();
    let url = host.mcp_url();
    let sampling = json!({"io.modelcontextprotocol/clientCapabilities": {"sampling": {}}});
    let call = json!({"name": "test_sampling", "arguments": {"prompt": "Capital of France?"}});

    let first = common::rpc_answer(
        common::modern(None, &url, 1, "tools/call", &call, sampling.clone()).await,
    )
    .await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let ask = &result["inputRequests"]["sampling-1"];
    assert_eq!(ask["method"], "sampling/createMessage", "{first}");
    assert_eq!(
        ask["params"]["messages"][0]["content"]["text"], "Capital of France?",
        "{first}"
    );
    let state = result["requestState"]
        .as_str()
        .expect("a requestState")
        .to_owned();
    assert!(!state.contains("France"), "the state is sealed: {state}");

    let mut retry = call.clone();
    retry["inputResponses"] = json!({"sampling-1": {
        "role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "m",
        "stopReason": "endTurn"}});
    retry["requestState"] = state.clone().into();
    let done = common::rpc_answer(
        common::modern(None, &url, 2, "tools/call", &retry, sampling.clone()).await,
    )
    .await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"], "LLM response: Paris",
        "{done}"
    );

    // A state changed by the client, or used for other arguments: refused.
    let mut tampered = retry.clone();
    tampered["requestState"] = format!("{state}x").into();
    let e = common::rpc_answer(
        common::modern(None, &url, 3, "tools/call", &tampered, sampling.clone()).await,
    )
    .await;
    assert_eq!(e["error"]["code"], -32602, "{e}");
    let mut other = retry.clone();
    other["arguments"]["prompt"] = "Capital of Spain?".into();
    let e = common::rpc_answer(common::modern(None, &url, 4, "tools/call", &other, sampling).await)
        .await;
    assert_eq!(e["error"]["code"], -32602, "{e}");

    // No sampling declared: the plugin cannot ask, fails, and the client is
    // told what it lacks.
    let r = common::modern(None, &url, 5, "tools/call", &call, json!({})).await;
    assert_eq!(r.status(), 400);
    let e = common::rpc_answer(r).await;
    assert_eq!(e["error"]["code"], -32021, "{e}");
    assert_eq!(
        e["error"]["data"]["requiredCapabilities"],
        json!({"sampling": {}}),
        "{e}"
    );

    let outcomes: Vec<String> = common::audit_events(&host, "tool_call")
        .iter()
        .filter(|c| c["target"] == "test_sampling")
        .map(|c| c["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        ["input_required", "ok", "missing_client_capability"],
        "{outcomes:?}"
    );
}

/// Issue 19: `subscriptions/listen` (2026-07-28). The stream is acknowledged
/// with the filter honoured; a plugin dropped into the directory is heard as
/// `tools/list_changed`, and a subscribed resource a plugin says changed as
/// `resources/updated`, each tagged with the subscription's id; what was not
/// asked for (prompts) is not sent. A legacy session is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn listen_streams_hear_reloads_and_resource_updates() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("kitchen-sink"), "kitchen")
        .start();
    let url = host.mcp_url();
    let filter = json!({"notifications": {
        "toolsListChanged": true,
        "resourceSubscriptions": ["kitchen://readme"],
    }});
    let resp = common::modern(None, &url, 77, "subscriptions/listen", &filter, json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = common::SseReader::new(resp);
    let ack = stream
        .next(Duration::from_secs(5))
        .await
        .expect("an acknowledgement");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"], true,
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!(["kitchen://readme"]),
        "{ack}"
    );

    // A legacy session works beside the stream.
    let legacy = host.client().await;
    let r = legacy
        .call_tool(call("echo", json!({"text": "both"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "both");

    // A plugin dropped into the directory.
    std::fs::copy(
        bundled("template"),
        host.dir.path().join("plugins/template.wasm"),
    )
    .unwrap();
    let heard = stream
        .next(Duration::from_secs(15))
        .await
        .expect("list_changed");
    assert_eq!(
        heard["method"], "notifications/tools/list_changed",
        "{heard}"
    );
    assert_eq!(
        heard["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{heard}"
    );

    // A subscribed resource the plugin says changed.
    let touched = common::rpc_answer(
        common::modern(
            None,
            &url,
            78,
            "tools/call",
            &json!({"name": "touch", "arguments": {"uri": "kitchen://readme"}}),
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(touched["result"]["content"][0]["text"], "true", "{touched}");
    let updated = stream
        .next(Duration::from_secs(5))
        .await
        .expect("resources/updated");
    assert_eq!(
        updated["method"], "notifications/resources/updated",
        "{updated}"
    );
    assert_eq!(updated["params"]["uri"], "kitchen://readme", "{updated}");
    assert_eq!(
        updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        77
    );

    // Nothing else: prompts and resource lists were not asked for.
    if let Some(extra) = stream.next(Duration::from_millis(1500)).await {
        panic!("unrequested notification: {extra}");
    }

    // Shutting down ends the stream with its result at once (it does not hold
    // the drain for its whole grace period).
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let last = stream
        .next(Duration::from_secs(5))
        .await
        .expect("the stream's result");
    assert_eq!(last["id"], 77, "{last}");
    assert_eq!(last["result"]["resultType"], "complete", "{last}");
    assert_eq!(
        last["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{last}"
    );
}

/// Issue 19 (MRTR beyond tools): a prompt that asks the user while it renders
/// answers `input_required` to a 2026-07-28 `prompts/get`, and renders with the
/// answer on the retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_asks_its_client_between_rounds() {
    let host = HostBuilder::new()
        .plugin(&test_plugin("conformance"), "conformance")
        .config("[plugins.conformance.grants]\nclient = [\"elicitation\"]\n")
        .start();
    let url = host.mcp_url();
    let caps = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let get = json!({"name": "test_input_required_result_prompt"});
    let first =
        common::rpc_answer(common::modern(None, &url, 1, "prompts/get", &get, caps.clone()).await)
            .await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let ask = &first["result"]["inputRequests"]["elicitation-1"];
    assert_eq!(ask["method"], "elicitation/create", "{first}");
    assert_eq!(
        ask["params"]["requestedSchema"]["required"],
        json!(["context"]),
        "{first}"
    );
    let mut retry = get.clone();
    retry["inputResponses"] =
        json!({"elicitation-1": {"action": "accept", "content": {"context": "release notes"}}});
    retry["requestState"] = first["result"]["requestState"].clone();
    let done =
        common::rpc_answer(common::modern(None, &url, 2, "prompts/get", &retry, caps).await).await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["messages"][0]["content"]["text"], "Prompt with context: release notes",
        "{done}"
    );
}
