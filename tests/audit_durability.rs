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
