//! End-to-end: the audit log fails closed and recovers on its own (issue 11 item
//! 14), its signed checkpoints verify with the key `stockade audit key` prints
//! (item 15), `stockade audit verify` takes the audit directory (issue 9 item 5),
//! and unreadable request bodies are audited (item 13).

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{HostBuilder, audit_events, bundled, run_stockade, wait_audit};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

fn greet(name: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("greet").with_arguments(
        json!({ "name": name })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

/// Sets the soft file-size limit (RLIMIT_FSIZE) of process `pid`: writes
/// that would make a file larger fail with EFBIG. Needs no privilege.
fn file_size_limit(pid: u32, limit: &str) {
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={limit}:")])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(ok.success(), "prlimit --fsize={limit}: failed");
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.map_or(0, |r| r.status().as_u16())
}

/// Issue 11 item 14: with the audit log unable to grow, a tool call whose line
/// cannot be written is answered with an error and its output withheld, every
/// later request gets 503 (`/health` stays 200 and `/ready` says why), no
/// partial line is left, the host recovers without a restart once the log can
/// grow again, and the result verifies. The log's file stops growing through
/// the host's own file-size limit (RLIMIT_FSIZE): no privilege needed, so this
/// runs as any user (issue 23.2).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_audit_disk_fails_closed_and_recovers() {
    let builder = HostBuilder::new().plugin(&bundled("template"), "template");
    let data = builder.plugins_dir().parent().unwrap().join("data");
    let audit_dir = data.join("audit");
    let host = builder.start();
    let client = host.client().await;
    let r = client.call_tool(greet("Ada")).await.unwrap();
    assert_eq!(r.is_error, Some(false));

    let size = std::fs::metadata(audit_dir.join("audit.log"))
        .unwrap()
        .len();
    file_size_limit(host.pid(), &(size + 2048).to_string());
    // The file's last page may still hold a few lines; the call after that fails.
    let mut refused = None;
    for n in 0..50 {
        match client
            .call_tool(greet(&format!("call {n} {}", "x".repeat(300))))
            .await
        {
            Ok(_) => continue,
            Err(e) => {
                refused = Some((n, e.to_string()));
                break;
            }
        }
    }
    let (n, error) = refused.expect("a call failed once the disk was full");
    assert!(error.contains("audit"), "{error}");
    assert!(!error.contains("Hello"), "the result was withheld: {error}");
    // Fail closed: nothing is served while the log cannot be written; the
    // probes say so (README "Several hosts": /health is the process, /ready
    // what it can do).
    assert_eq!(status(&format!("{}/health", host.base_url())).await, 200);
    let ready = reqwest::get(format!("{}/ready", host.base_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let why: Value = ready.json().await.unwrap();
    assert!(
        why["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "the audit log cannot be written"),
        "{why}"
    );
    let mcp = reqwest::Client::new()
        .post(host.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 503);

    // Room again: the host resumes by itself.
    file_size_limit(host.pid(), "unlimited");
    let start = Instant::now();
    while status(&format!("{}/ready", host.base_url())).await != 200 {
        assert!(start.elapsed() < Duration::from_secs(10), "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = host.client().await;
    let r = client.call_tool(greet("again")).await.unwrap();
    assert_eq!(r.is_error, Some(false));

    let resumed = audit_events(&host, "audit_resumed");
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert!(resumed[0]["refused"].as_u64() >= Some(1), "{resumed:?}");
    let calls: Vec<String> = audit_events(&host, "tool_call")
        .iter()
        .filter_map(|l| l["arguments"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !calls.iter().any(|c| c.starts_with(&format!("call {n} "))),
        "the refused call is not in the log"
    );
    assert!(calls.contains(&"again".to_owned()), "{calls:?}");

    // The chain is whole: no partial line, no line the chain skipped.
    let (ok, out) = run_stockade(
        &["audit", "verify", "--data", "data", "data/audit"],
        host.dir.path(),
    );
    assert!(ok, "{out}");
    // With the key printed by `audit key`, and the files in the shell's order.
    let (ok, key) = run_stockade(&["audit", "key", "--data", "data"], host.dir.path());
    assert!(ok && key.contains("ed25519:"), "{key}");
    let key = key
        .lines()
        .find(|l| l.starts_with("ed25519:"))
        .unwrap()
        .trim()
        .to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let log = audit_dir.join("audit.log");
    let (ok, out) = run_stockade(
        &[
            "audit",
            "verify",
            "--public-key",
            &key,
            log.to_str().unwrap(),
        ],
        elsewhere.path(),
    );
    assert!(ok, "{out}");
    let (_, other) = run_stockade(&["audit", "key", "--data", "other"], elsewhere.path());
    let other = other.lines().find(|l| l.starts_with("ed25519:")).unwrap();
    let (ok, out) = run_stockade(
        &[
            "audit",
            "verify",
            "--public-key",
            other,
            log.to_str().unwrap(),
        ],
        elsewhere.path(),
    );
    assert!(!ok && out.contains("signature"), "{out}");
    drop(client);
    drop(host);
}

/// Issue 11 item 13: a body that cannot be read (bad chunked encoding) is
/// refused and audited, whichever handler read it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_body_is_audited() {
    let host = HostBuilder::new().start();
    let mut s = std::net::TcpStream::connect(host.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
         zz\r\n{{}}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let line = wait_audit(&host, Duration::from_secs(5), |l: &Value| {
        l["event"] == "request_denied"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("unreadable request body"))
    })
    .await;
    let line = line.unwrap_or_else(|| {
        panic!(
            "not audited; response {:?}",
            String::from_utf8_lossy(&response)
        )
    });
    assert_eq!(line["path"], "/mcp");
    assert!(line["status"].as_u64().is_some_and(|s| s >= 400), "{line}");
}

/// `greet` with seven more string arguments: its `tool_call` line carries about
/// 2 KiB of (truncated) arguments.
fn bulky_greet(n: usize) -> CallToolRequestParams {
    let mut args = json!({ "name": format!("bulk {n}") });
    for k in 0..7 {
        args[format!("f{k}")] = Value::from(format!("{n} {}", "x".repeat(300)));
    }
    CallToolRequestParams::new("greet").with_arguments(args.as_object().cloned().unwrap())
}

/// The JSON lines of an audit file.
fn file_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The file number of an audit file (in its first line, a checkpoint).
fn file_number(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let first: Value = serde_json::from_str(text.lines().next().unwrap_or("{}")).unwrap();
    first["file"].as_u64().unwrap_or(0)
}

/// Issue 23 (audit rotation with retention): with `rotate_mib = 1` and
/// `keep = 2`, a host that writes enough tool calls to rotate four times keeps
/// the current file and exactly two rotated ones: the host itself deleted the
/// two oldest (the test deletes nothing). Each rotated file ends with its
/// `rotate` checkpoint, the next starts with `continue` and the next file
/// number. `stockade audit verify` passes on what remains (and says the files
/// continue an older one), and fails once a line in a retained rotated file is
/// edited.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_only_keep_files_and_what_remains_verifies() {
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .config("[audit]\nrotate_mib = 1\nkeep = 2\n")
        .start();
    let audit_dir = host.data_dir().join("audit");
    let current = audit_dir.join("audit.log");
    let client = host.client().await;
    let started = Instant::now();
    let mut n = 0;
    // Four rotations: files 0 and 1 rotated out, 2 and 3 kept, 4 current.
    while file_number(&current) < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not rotated four times in 120 s: at file {}",
            file_number(&current)
        );
        let calls: Vec<_> = (0..8)
            .map(|t| {
                let peer = client.peer().clone();
                let first = n + t * 8;
                tokio::spawn(async move {
                    for i in first..first + 8 {
                        let r = peer.call_tool(bulky_greet(i)).await.unwrap();
                        assert_eq!(r.is_error, Some(false), "{r:?}");
                    }
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap();
        }
        n += 64;
    }
    drop(client);
    host.terminate().await;

    let mut names: Vec<String> = std::fs::read_dir(&audit_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["audit.log", "audit.log.1", "audit.log.2"],
        "keep = 2 rotated files, the oldest deleted by the host"
    );
    let newest = file_number(&current);
    for (k, rotated) in [(1, "audit.log.1"), (2, "audit.log.2")] {
        let path = audit_dir.join(rotated);
        let lines = file_lines(&path);
        let (first, last) = (&lines[0], lines.last().unwrap());
        assert_eq!(
            (&first["event"], &first["reason"], first["file"].as_u64()),
            (&json!("checkpoint"), &json!("continue"), Some(newest - k)),
            "{rotated}"
        );
        assert_eq!(
            (&last["event"], &last["reason"]),
            (&json!("checkpoint"), &json!("rotate"))
        );
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size >= 1 << 20, "{rotated} rotated at 1 MiB: {size} bytes");
        assert!(size < 2 << 20, "{rotated} rotated at 1 MiB: {size} bytes");
    }

    let (ok, out) = run_stockade(
        &["audit", "verify", "--data", "data", "data/audit"],
        host.dir.path(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("ok: 3 file(s)"), "{out}");
    assert!(out.contains("start: continues an older file"), "{out}");
    assert!(out.contains("end: a shutdown checkpoint"), "{out}");

    // One tool call line in the oldest retained file edited: verify fails there.
    let oldest = audit_dir.join("audit.log.2");
    let text = std::fs::read_to_string(&oldest).unwrap();
    let victim = text
        .lines()
        .position(|l| l.contains("\"event\":\"tool_call\""))
        .unwrap();
    let edited: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == victim {
                l.replacen("bulk ", "BULK ", 1)
            } else {
                l.to_owned()
            };
            l + "\n"
        })
        .collect();
    assert_ne!(edited, text);
    std::fs::write(&oldest, edited).unwrap();
    let (ok, out) = run_stockade(
        &["audit", "verify", "--data", "data", "data/audit"],
        host.dir.path(),
    );
    assert!(!ok, "an edited line verified:\n{out}");
    assert!(
        out.contains(&format!("audit.log.2:{}", victim + 2)),
        "the break is reported at the line after the edit:\n{out}"
    );
}

/// Issue 23 (`audit.stdout`): with `[audit] stdout = true`, every line the
/// host writes to its audit file is also printed on its standard output, the
/// same bytes in the same order, a tool call's line included.
#[tokio::test(flavor = "multi_thread")]
async fn audit_lines_are_also_printed_on_stdout() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(
        bundled("template"),
        dir.path().join("plugins/template.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("stockade.toml"), "[audit]\nstdout = true\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins", "plugins"])
        .args([
            "--data",
            "data",
            "--auth",
            "none",
            "--config",
            "stockade.toml",
        ])
        .env_remove("STOCKADE_CONFIG")
        .env_remove("STOCKADE_AUTH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("stockade listening on ") {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the host listens");
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    let client = rmcp::ServiceExt::serve((), transport).await.unwrap();
    let r = client.call_tool(greet("on stdout")).await.unwrap();
    assert_eq!(r.is_error, Some(false));
    drop(client);
    // A clean stop: the shutdown checkpoint is printed too, then stdout closes.
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let printed = printed.join().unwrap();

    let file = std::fs::read_to_string(dir.path().join("data/audit/audit.log")).unwrap();
    let written: Vec<&str> = file.lines().collect();
    assert_eq!(printed, written, "stdout carries the file's lines");
    let call = written
        .iter()
        .find(|l| l.contains("\"event\":\"tool_call\""))
        .expect("the call is audited");
    let call: Value = serde_json::from_str(call).unwrap();
    assert_eq!(call["arguments"]["name"], "on stdout");
    let last: Value = serde_json::from_str(printed.last().unwrap()).unwrap();
    assert_eq!(last["reason"], "shutdown");
}
