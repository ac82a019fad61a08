//! `stockade-bench`: a closed-loop load harness for MCP servers over Streamable
//! HTTP, as a real client uses them.
//!
//! Each worker is one client: its own keep-alive connection, its own session
//! (`initialize`, `notifications/initialized`), then `tools/call` in a loop,
//! every answer parsed and checked (JSON-RPC id, no error, `isError` false, the
//! expected text). One JSON line per concurrency level: calls/s, latency
//! percentiles, errors and the server's RSS.
//!
//! `stockade-bench token` gets an access token through the server's real OAuth
//! flow (discovery, dynamic registration, PKCE, the login form, the code
//! exchange), the way a client does.
//!
//! `stockade-bench native` does a bundled tool's work natively, in this
//! process, with the same closed loop and output: the baseline that shows what
//! the sandbox, MCP and HTTP cost on top (`bench/tools`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Closed-loop load harness for MCP servers over Streamable HTTP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints an access token obtained through the server's OAuth flow.
    Token {
        /// The MCP endpoint (its origin is the authorization server).
        #[arg(long)]
        url: String,
        /// The operator password typed into the login form.
        #[arg(long, env = "BENCH_PASSWORD")]
        password: String,
    },
    /// Runs the closed loop at each concurrency; prints one JSON line per level.
    Run {
        /// The MCP endpoint; several (comma-separated): worker `i` uses the
        /// `i % n`th, as a load balancer would spread clients over hosts.
        #[arg(long, value_delimiter = ',', required = true)]
        url: Vec<String>,
        /// Bearer token (none: no Authorization header).
        #[arg(long, env = "BENCH_TOKEN")]
        token: Option<String>,
        /// The tool to call.
        #[arg(long, default_value = "greet")]
        tool: String,
        /// Its arguments (JSON object).
        #[arg(long, default_value = r#"{"name":"Ada"}"#)]
        args: String,
        /// Text every result must contain.
        #[arg(long, default_value = "Hello, Ada")]
        expect: String,
        /// Concurrency levels (clients).
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        concurrency: Vec<usize>,
        /// Measured seconds per level (after a one-second warm-up).
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        /// The server's PIDs (comma-separated), to report their summed RSS.
        #[arg(long, value_delimiter = ',')]
        server_pid: Vec<u32>,
        /// A label for the server in the output.
        #[arg(long, default_value = "server")]
        label: String,
        /// Speak MCP 2026-07-28 without sessions: no `initialize`, every
        /// request carries its protocol version and client capabilities in
        /// `_meta` and the `Mcp-Method`/`Mcp-Name` headers.
        #[arg(long)]
        stateless: bool,
        /// Measure in rounds of `--seconds` with the same clients (sessions,
        /// connections) until this many calls were measured at a level, one
        /// JSON line per round (`round`, `calls_so_far`): the memory
        /// benchmark's long run. Without it: one round per level.
        #[arg(long)]
        total_calls: Option<u64>,
    },
    /// Does a bundled tool's operation natively in a closed loop; one JSON line
    /// per level, labelled `native`.
    Native {
        /// `read-file` (PATH), `exec` (PROGRAM), `sql` (DB: the three statements
        /// of `query_data` on the example database) or `metrics` (DB: the read of
        /// the host's metrics.db).
        #[arg(long)]
        op: String,
        /// The file, program or database.
        #[arg(long)]
        target: String,
        /// The tool it stands for, in the output.
        #[arg(long)]
        tool: String,
        /// Concurrency levels (tasks).
        #[arg(long, value_delimiter = ',', default_value = "16")]
        concurrency: Vec<usize>,
        /// Measured seconds per level (after a one-second warm-up).
        #[arg(long, default_value_t = 8)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Token { url, password } => {
            println!("{}", oauth_token(&url, &password).await?);
        }
        Command::Run {
            url,
            token,
            tool,
            args,
            expect,
            concurrency,
            seconds,
            server_pid,
            label,
            stateless,
            total_calls,
        } => {
            let args: Value = serde_json::from_str(&args).context("--args is not JSON")?;
            let target = Arc::new(Target {
                urls: url,
                token,
                tool,
                args,
                expect,
                stateless,
            });
            let level = Level {
                measure: Duration::from_secs(seconds),
                server_pids: server_pid,
                label,
                total_calls,
            };
            for c in concurrency {
                run_level(&target, c, &level).await?;
            }
        }
        Command::Native {
            op,
            target,
            tool,
            concurrency,
            seconds,
        } => {
            let op = native::Op::parse(&op, &target)?;
            for c in concurrency {
                let (lat, errors) =
                    native::run(&op, c, Duration::from_secs(1), Duration::from_secs(seconds)).await;
                let line = summarize(
                    "native",
                    &tool,
                    c,
                    Duration::from_secs(seconds),
                    lat,
                    errors,
                    None,
                );
                println!("{line}");
            }
        }
    }
    Ok(())
}

mod native;

/// What every worker calls.
struct Target {
    urls: Vec<String>,
    token: Option<String>,
    tool: String,
    args: Value,
    expect: String,
    /// 2026-07-28 requests without a session.
    stateless: bool,
}

/// The MCP revision without sessions (SEP-2567).
const STATELESS_VERSION: &str = "2026-07-28";

/// One client: its connection and its session.
struct Worker {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    next_id: u64,
}

impl Worker {
    async fn open(t: &Target, index: usize) -> anyhow::Result<Worker> {
        // One client per worker: its own pool, so its own keep-alive connection.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()?;
        let mut w = Worker {
            http,
            url: t.urls[index % t.urls.len()].clone(),
            session: None,
            next_id: 1,
        };
        if t.stateless {
            return Ok(w);
        }
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "stockade-bench", "version": "0.1"}}});
        let (headers, body) = w.post(t, &init).await?;
        message_with_id(&body, 0).context("initialize")?;
        w.session = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        w.post(
            t,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await?;
        Ok(w)
    }

    async fn post(
        &self,
        t: &Target,
        body: &Value,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, String)> {
        let version = if t.stateless {
            STATELESS_VERSION
        } else {
            "2025-11-25"
        };
        let mut rq = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version)
            .body(body.to_string());
        if t.stateless {
            // SEP-2243: the method (and tool) ride in headers too, so a load
            // balancer can route without reading the body.
            if let Some(m) = body["method"].as_str() {
                rq = rq.header("mcp-method", m);
            }
            if let Some(n) = body["params"]["name"].as_str() {
                rq = rq.header("mcp-name", n);
            }
        }
        if let Some(tok) = &t.token {
            rq = rq.bearer_auth(tok);
        }
        if let Some(s) = &self.session {
            rq = rq.header("mcp-session-id", s);
        }
        let r = rq.send().await?;
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await?;
        if !status.is_success() {
            bail!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            );
        }
        Ok((headers, text))
    }

    /// One checked tool call.
    async fn call(&mut self, t: &Target) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let mut rq = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": t.tool, "arguments": t.args}});
        if t.stateless {
            rq["params"]["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "stockade-bench", "version": "0.1"}});
        }
        let (_, body) = self.post(t, &rq).await?;
        let msg = message_with_id(&body, id)?;
        if let Some(e) = msg.get("error") {
            bail!("JSON-RPC error: {e}");
        }
        let result = &msg["result"];
        if result["isError"] == true {
            bail!("tool error: {result}");
        }
        if !result.to_string().contains(&t.expect) {
            bail!("unexpected result: {result}");
        }
        Ok(())
    }
}

/// The JSON-RPC message with `id` in a JSON or SSE response body.
fn message_with_id(body: &str, id: u64) -> anyhow::Result<Value> {
    let candidates: Vec<&str> = if body.trim_start().starts_with('{') {
        vec![body]
    } else {
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect()
    };
    for c in candidates {
        if let Ok(v) = serde_json::from_str::<Value>(c)
            && v["id"] == id
        {
            return Ok(v);
        }
    }
    bail!(
        "no answer with id {id} in: {}",
        body.chars().take(200).collect::<String>()
    )
}

/// How each concurrency level is measured and reported.
struct Level {
    /// One round's measured time.
    measure: Duration,
    /// Whose RSS to report.
    server_pids: Vec<u32>,
    /// The server's label.
    label: String,
    /// Keep measuring rounds until this many calls (else one round).
    total_calls: Option<u64>,
}

/// What one worker measured since the last round ended.
type Tally = std::sync::Mutex<(Vec<u32>, Vec<String>)>;

/// Runs `c` workers, after a one-second warm-up, for one round of
/// `level.measure` (or rounds until `level.total_calls`), printing one JSON
/// line per round. The workers keep their sessions across rounds.
async fn run_level(t: &Arc<Target>, c: usize, level: &Level) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(1);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut tallies: Vec<Arc<Tally>> = Vec::new();
    for index in 0..c {
        let (t, stop) = (t.clone(), stop.clone());
        let tally = Arc::new(Tally::default());
        tallies.push(tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut w = match Worker::open(&t, index).await {
                Ok(w) => w,
                Err(e) => {
                    tally.lock().unwrap().1.push(format!("session: {e:#}"));
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let r = w.call(&t).await;
                let mut tally = tally.lock().unwrap();
                match r {
                    Ok(()) => tally
                        .0
                        .push(began.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => tally.1.push(format!("{e:#}")),
                }
            }
        }));
    }
    let take = |tallies: &[Arc<Tally>]| {
        let mut lat = Vec::new();
        let mut errors = Vec::new();
        for tally in tallies {
            let (l, e) = std::mem::take(&mut *tally.lock().unwrap());
            lat.extend(l);
            errors.extend(e);
        }
        (lat, errors)
    };
    tokio::time::sleep(warmup).await;
    // Sessions that failed to open stay counted as errors of the first round.
    let (_, mut carried) = take(&tallies);
    carried.retain(|e| e.starts_with("session:"));
    let mut so_far = 0u64;
    for round in 1.. {
        tokio::time::sleep(level.measure).await;
        let rss_mb = level
            .server_pids
            .iter()
            .map(|&p| rss_mb(p))
            .sum::<Option<f64>>()
            .filter(|_| !level.server_pids.is_empty())
            .map(|mb| (mb * 10.0).round() / 10.0);
        let (lat, mut errors) = take(&tallies);
        so_far += lat.len() as u64;
        let done = level.total_calls.is_none_or(|n| so_far >= n);
        if done {
            stop.store(true, Ordering::Relaxed);
        }
        errors.append(&mut carried);
        let mut line = summarize(&level.label, &t.tool, c, level.measure, lat, errors, rss_mb);
        if level.total_calls.is_some() {
            line["round"] = json!(round);
            line["calls_so_far"] = json!(so_far);
        }
        println!("{line}");
        if done {
            break;
        }
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// The JSON line of one level: calls/s, latency percentiles (ms), errors.
fn summarize(
    label: &str,
    tool: &str,
    c: usize,
    measure: Duration,
    mut lat: Vec<u32>,
    errors: Vec<String>,
    rss_mb: Option<f64>,
) -> Value {
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let secs = measure.as_secs_f64();
    let mut first_errors: Vec<&String> = errors.iter().take(3).collect();
    first_errors.dedup();
    json!({
        "label": label,
        "tool": tool,
        "c": c,
        "seconds": secs,
        "calls": lat.len(),
        "errors": errors.len(),
        "calls_per_s": (lat.len() as f64 / secs).round(),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "server_rss_mb": rss_mb,
        "first_errors": first_errors,
    })
}

/// The resident set of `pid`, in MiB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// An access token through the server's OAuth flow, as a client gets one.
async fn oauth_token(mcp_url: &str, password: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use rand::RngCore as _;
    use sha2::Digest as _;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = url::Url::parse(mcp_url)?;
    let origin = base.origin().ascii_serialization();
    let meta: Value = http
        .get(format!("{origin}/.well-known/oauth-authorization-server"))
        .send()
        .await?
        .json()
        .await
        .context("authorization server metadata")?;
    let str_of = |k: &str| {
        meta[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("metadata has no {k}"))
    };
    let (register, authorize, token) = (
        str_of("registration_endpoint")?,
        str_of("authorization_endpoint")?,
        str_of("token_endpoint")?,
    );
    let redirect = "http://127.0.0.1:1/callback";
    let reg: Value = http
        .post(register)
        .json(
            &json!({"client_name": "stockade-bench", "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}),
        )
        .send()
        .await?
        .json()
        .await?;
    let client_id = reg["client_id"]
        .as_str()
        .context("registration gave no client_id")?
        .to_owned();
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let verifier = B64.encode(raw);
    let challenge = B64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut page_url = url::Url::parse(&authorize)?;
    page_url
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "bench")
        .append_pair("resource", mcp_url);
    let page = http.get(page_url).send().await?.text().await?;
    let csrf = page
        .split("name=csrf value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("no login form on the authorization page")?
        .to_owned();
    let done = http
        .post(&authorize)
        .form(&[
            ("csrf", csrf.as_str()),
            ("password", password),
            ("action", "approve"),
        ])
        .send()
        .await?;
    let location = done
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .with_context(|| format!("the login was refused (HTTP {})", done.status()))?;
    let code = url::Url::parse(location)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context("no code in the redirect")?;
    let tokens: Value = http
        .post(token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("redirect_uri", redirect),
        ])
        .send()
        .await?
        .json()
        .await?;
    tokens["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no access token: {tokens}"))
}
