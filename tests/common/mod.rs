//! Shared harness for the end-to-end tests: builds the plugins from source, starts
//! the real `stockade` binary on an ephemeral port, connects real MCP clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};

pub mod balancer;
pub mod postgres;
pub mod tap;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Builds every plugin (bundled and test) once per test process and returns the
/// folder holding `plugins/` and `test-plugins/`.
pub fn built_plugins() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = repo();
        let out = Command::new(root.join("scripts/build-plugins"))
            .arg("--quiet")
            .output()
            .expect("run scripts/build-plugins");
        assert!(
            out.status.success(),
            "scripts/build-plugins failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        root.join("target")
    })
}

/// The path of a built plugin: `bundled("template")` or `test_plugin("trap")`.
pub fn bundled(name: &str) -> PathBuf {
    built_plugins().join("plugins").join(format!("{name}.wasm"))
}

/// The path of a built test plugin.
pub fn test_plugin(name: &str) -> PathBuf {
    built_plugins()
        .join("test-plugins")
        .join(format!("{name}.wasm"))
}

/// A running `stockade serve`.
pub struct Host {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its working directory (holds `plugins/` and `data/`).
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// What earlier runs (before [`Host::restart`]) wrote.
    past_log: String,
    launch: Launch,
}

/// How a host was started (kept to restart it).
#[derive(Clone)]
struct Launch {
    config: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// Prepares a host: its plugin files and config.
///
/// Hosts run with `--auth none` unless [`HostBuilder::password`] or
/// [`HostBuilder::auth`] chooses an authentication mode.
pub struct HostBuilder {
    dir: tempfile::TempDir,
    config: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    auth: Option<String>,
}

impl HostBuilder {
    /// An empty plugin directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        Self {
            dir,
            config: None,
            env: Vec::new(),
            args: Vec::new(),
            auth: Some("none".into()),
        }
    }

    /// Built-in OAuth with this operator password (via `STOCKADE_PASSWORD`).
    pub fn password(mut self, password: &str) -> Self {
        self.auth = Some("builtin".into());
        self.env.push(("STOCKADE_PASSWORD".into(), password.into()));
        self
    }

    /// `--auth MODE`; `None` passes no `--auth` (the config file or default decides).
    pub fn auth(mut self, mode: Option<&str>) -> Self {
        self.auth = mode.map(str::to_owned);
        self
    }

    /// An extra command-line argument for `stockade serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Copies `src` into the plugin directory as `<name>.wasm`.
    pub fn plugin(self, src: &Path, name: &str) -> Self {
        std::fs::copy(src, self.plugins_dir().join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        // Distinct modification times keep "first come" ordering deterministic.
        std::thread::sleep(Duration::from_millis(20));
        self
    }

    /// Writes raw bytes as a plugin file.
    pub fn plugin_bytes(self, bytes: &[u8], file: &str) -> Self {
        std::fs::write(self.plugins_dir().join(file), bytes).unwrap();
        self
    }

    /// Uses this TOML as the config file.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Sets an environment variable for the host (an empty value removes it).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The plugin directory.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Starts the binary and waits until it listens.
    pub fn start(self) -> Host {
        let mut args = self.args.clone();
        if let Some(mode) = &self.auth {
            args.extend(["--auth".to_owned(), mode.clone()]);
        }
        let launch = Launch {
            config: self.config,
            env: self.env,
            args,
        };
        let (child, addr, log) = spawn(self.dir.path(), "127.0.0.1:0", &launch);
        Host {
            child,
            addr,
            dir: self.dir,
            log,
            past_log: String::new(),
            launch,
        }
    }
}

/// Starts `stockade serve` in `dir` on `listen`; returns the child, its address
/// and its captured stderr.
fn spawn(dir: &Path, listen: &str, launch: &Launch) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockade"));
    cmd.current_dir(dir)
        .arg("serve")
        .args(["--listen", listen, "--plugins", "plugins", "--data", "data"])
        .args(&launch.args)
        .env("STOCKADE_LOG", "info,stockade=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in [
        "STOCKADE_CONFIG",
        "STOCKADE_PASSWORD",
        "STOCKADE_PASSWORD_FILE",
        "STOCKADE_USERS_FILE",
        "STOCKADE_AUTH",
        "STOCKADE_PUBLIC_URL",
        "STOCKADE_AUTO_APPROVE",
    ] {
        cmd.env_remove(var);
    }
    if let Some(toml) = &launch.config {
        let path = dir.join("stockade.toml");
        std::fs::write(&path, toml).unwrap();
        cmd.arg("--config").arg(path);
    }
    for (k, v) in &launch.env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().expect("start stockade");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("stockade listening on http://") {
                let addr = rest.trim_end_matches("/mcp").parse::<SocketAddr>().unwrap();
                let _ = tx.send(addr);
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("stockade did not start:\n{}", log.lock().unwrap());
        }
    };
    (child, addr, log)
}

impl Host {
    /// The MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Everything the host wrote to stderr so far (across restarts).
    pub fn log(&self) -> String {
        format!("{}{}", self.past_log, self.log.lock().unwrap())
    }

    /// What the current run (since the last [`Host::restart`]) wrote to stderr.
    pub fn run_log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the host's log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Connects an rmcp client over Streamable HTTP.
    pub async fn client(&self) -> RunningService<RoleClient, ()> {
        let transport = StreamableHttpClientTransport::from_uri(self.mcp_url());
        ().serve(transport).await.expect("MCP client connects")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sends SIGTERM and waits for the host to exit (at most 15 s; its log
    /// in the panic message otherwise).
    pub async fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.is_running() {
            assert!(
                Instant::now() < deadline,
                "the host did not exit: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the host (SIGKILL: no shutdown, no flush) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the host (SIGKILL: nothing is flushed on the way out) and starts it
    /// again on the same address and data directory.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let old = self.log.lock().unwrap().clone();
        self.past_log.push_str(&old);
        let (child, addr, log) = spawn(self.dir.path(), &self.addr.to_string(), &self.launch);
        assert_eq!(addr, self.addr);
        self.child = child;
        self.log = log;
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `stockade serve ARGS` in `dir`, expecting it to fail within 30 s;
/// returns what it printed.
pub fn serve_must_fail(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stockade"));
    cmd.arg("serve").args(args).current_dir(dir);
    for var in ["STOCKADE_CONFIG", "STOCKADE_PASSWORD", "STOCKADE_AUTH"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("`stockade serve {args:?}` kept running; it should have failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the binary with `args` to completion; returns (success, stdout+stderr).
pub fn run_stockade(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .current_dir(cwd)
        .env_remove("STOCKADE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Like [`run_stockade`], with extra environment variables.
pub fn run_stockade_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockade"));
    cmd.args(args).current_dir(cwd);
    for var in [
        "STOCKADE_CONFIG",
        "STOCKADE_PASSWORD",
        "STOCKADE_AUTH",
        "STOCKADE_PUBLIC_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Like [`run_stockade`], writing `input` to its standard input.
pub fn run_stockade_stdin(args: &[&str], cwd: &Path, input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .current_dir(cwd)
        .env_remove("STOCKADE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---- Audit log ----------------------------------------------------------------

/// Every audit line so far.
pub fn read_audit(host: &Host) -> Vec<Value> {
    let path = host.data_dir().join("audit/audit.log");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The audit lines of `event`.
pub fn audit_events(host: &Host, event: &str) -> Vec<Value> {
    read_audit(host)
        .into_iter()
        .filter(|l| l["event"] == event)
        .collect()
}

/// Waits up to `timeout` for an audit line matching `pred`.
pub async fn wait_audit(
    host: &Host,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let start = Instant::now();
    loop {
        if let Some(l) = read_audit(host).into_iter().find(|l| pred(l)) {
            return Some(l);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Host process -----------------------------------------------------------

impl Host {
    /// The process id of the running host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A field of `/proc/<pid>/status` (`Threads`, `VmRSS`, ...) as a number (kB
/// for sizes).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system) the process has used, in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Whether any process's command line contains `needle`.
pub fn process_running_with(needle: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}

// ---- MCP helpers ---------------------------------------------------------------

/// The text blocks of a tool result, joined with newlines.
pub fn result_text(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| match c {
            rmcp::model::ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An MCP session spoken by hand over plain HTTP (no MCP client library), for
/// tests about the wire itself: stream order, dropped connections.
pub struct RawSession {
    http: reqwest::Client,
    url: String,
    sid: String,
}

impl RawSession {
    /// `initialize` and `notifications/initialized` against `url` (`--auth none`).
    pub async fn open(url: &str) -> RawSession {
        let mut s = RawSession {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            sid: String::new(),
        };
        let init = s
            .post(serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}))
            .await;
        s.sid = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        drop(init.text().await);
        s.post(serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
        s
    }

    /// Ends the session (`DELETE`); returns the status.
    pub async fn delete(&self) -> u16 {
        self.http
            .delete(&self.url)
            .header("mcp-session-id", &self.sid)
            .send()
            .await
            .expect("the DELETE reaches the host")
            .status()
            .as_u16()
    }

    /// POSTs one JSON-RPC message in the session; returns the response unread.
    pub async fn post(&self, body: Value) -> reqwest::Response {
        let mut rq = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if !self.sid.is_empty() {
            rq = rq.header("mcp-session-id", &self.sid);
        }
        rq.send().await.expect("the POST reaches the host")
    }
}

/// The JSON-RPC messages of an SSE response as they arrive.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Reads `resp` (an SSE response) message by message.
    pub fn new(resp: reqwest::Response) -> SseReader {
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next message, or `None` when nothing more came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment or an empty event
                }
                return Some(serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()?));
        }
    }
}

/// A 2026-07-28 request to `url` (no session; `_meta` names the revision, no
/// client capabilities and the client `raw-client/1.2`, and `extra` adds to or
/// replaces those keys), with the standard headers and `token` as bearer.
pub async fn modern(
    token: Option<&str>,
    url: &str,
    id: u64,
    method: &str,
    params: &Value,
    extra: Value,
) -> reqwest::Response {
    let mut params = params.clone();
    let mut meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-client", "version": "1.2"},
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        meta[k] = v.clone();
    }
    params["_meta"] = meta;
    let mut rq = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params
        .get("name")
        .or(params.get("uri"))
        .and_then(Value::as_str)
    {
        rq = rq.header("mcp-name", name);
    }
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    rq.json(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
}

/// The JSON-RPC response in a Streamable HTTP answer (plain JSON or the SSE
/// event carrying it).
pub async fn rpc_answer(r: reqwest::Response) -> Value {
    let body = r.text().await.unwrap();
    let json = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| d.contains("\"id\""))
        .unwrap_or(body.trim());
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {body}"))
}

/// Every JSON-RPC message of a Streamable HTTP answer, in order (one JSON
/// body, or the events of an SSE stream).
pub async fn rpc_messages(r: reqwest::Response) -> Vec<Value> {
    let body = r.text().await.unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}")))
        .collect();
    if events.is_empty() {
        vec![serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))]
    } else {
        events
    }
}
