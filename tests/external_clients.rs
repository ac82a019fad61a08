//! End-to-end: MCP clients nobody here wrote. The official TypeScript SDK
//! (`tests/clients/ts/flow.mjs`, on Node 22) and the official Python SDK
//! (`tests/clients/py/flow.py`) each go through discovery, dynamic registration,
//! PKCE, the login form, the code exchange, a tool call, a refresh and another
//! tool call against the real binary.
//!
//! The clients are installed by `scripts/setup-clients` (run by `scripts/test`).
//! When they are missing these tests fail; they never skip.

mod common;
mod oauth;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{HostBuilder, bundled, repo};
use oauth::{assert_audited, audit_text};
use serde_json::Value;

const PASSWORD: &str = "an-operator-password-for-sdk-tests";

fn node() -> PathBuf {
    let p = repo().join("tests/clients/ts/node_modules/node/bin/node");
    assert!(
        p.exists()
            && repo()
                .join("tests/clients/ts/node_modules/@modelcontextprotocol/sdk")
                .exists(),
        "the TypeScript SDK client is not installed ({} missing): run scripts/setup-clients",
        p.display()
    );
    p
}

fn python() -> PathBuf {
    let p = repo().join("target/py/bin/python");
    assert!(
        p.exists(),
        "the Python SDK client is not installed ({} missing): run scripts/setup-clients",
        p.display()
    );
    p
}

/// Runs a client script to completion (bounded) and parses its JSON line.
fn run(mut cmd: Command, what: &str) -> Value {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {what} client: {e}"));
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("the {what} client did not finish within 180 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the {what} client failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from {what}: {stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from {what} ({e}): {line}"))
}

fn check(result: &Value, who: &str) {
    assert_eq!(result["ok"], true, "{who}: {result}");
    assert_eq!(result["refreshed"], true, "{who}: {result}");
    assert!(
        result["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "greet"),
        "{who}: {result}"
    );
    assert!(
        result["greet"].as_str().unwrap().contains("Hello,"),
        "{who}: {result}"
    );
    assert!(
        result["greet_after_refresh"]
            .as_str()
            .unwrap()
            .contains("Hello, again"),
        "{who}: {result}"
    );
    assert!(
        result["registered_client"]
            .as_str()
            .unwrap()
            .starts_with("stk_"),
        "{who}: {result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_client_logs_in_calls_and_refreshes() {
    let node = node();
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .start();
    let mut cmd = Command::new(node);
    cmd.current_dir(repo().join("tests/clients/ts"))
        .arg("flow.mjs")
        .arg(host.mcp_url())
        .arg(PASSWORD);
    let result = tokio::task::spawn_blocking(move || run(cmd, "TypeScript"))
        .await
        .unwrap();
    check(&result, "TypeScript SDK");
    assert_eq!(result["pkce_method"], "S256");
    assert_eq!(
        result["resource"],
        host.mcp_url(),
        "RFC 8707 resource sent by the SDK"
    );
    let client = result["registered_client"].as_str().unwrap();
    let data = host.data_dir();
    assert_audited(
        &data,
        "client_registered",
        &[
            ("client_id", client),
            ("client_name", "TypeScript SDK flow test"),
        ],
    );
    assert_audited(&data, "login_succeeded", &[("client_id", client)]);
    assert_audited(&data, "token_issued", &[("client_id", client)]);
    assert_audited(&data, "token_refreshed", &[("client_id", client)]);
    assert_audited(&data, "tool_call", &[("target", "greet")]);
    assert!(!host.log().contains(PASSWORD) && !audit_text(&data).contains(PASSWORD));
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_client_logs_in_calls_and_refreshes() {
    let python = python();
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .password(PASSWORD)
        .start();
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/clients/py/flow.py"))
        .arg(host.mcp_url())
        .arg(PASSWORD);
    let result = tokio::task::spawn_blocking(move || run(cmd, "Python"))
        .await
        .unwrap();
    check(&result, "Python SDK");
    let client = result["registered_client"].as_str().unwrap();
    let data = host.data_dir();
    assert_audited(
        &data,
        "client_registered",
        &[
            ("client_id", client),
            ("client_name", "Python SDK flow test"),
        ],
    );
    assert_audited(&data, "token_refreshed", &[("client_id", client)]);
    assert_audited(&data, "tool_call", &[("target", "greet")]);
    assert!(!host.log().contains(PASSWORD) && !audit_text(&data).contains(PASSWORD));
    assert!(host.is_running());
}
