//! Hot-reload timings through the real binary (not a test: it asserts nothing
//! about speed). Reports:
//!
//! 1. start-up to serving with 100 plugins, cold (empty compiled-code cache) and
//!    warm (cache filled by the previous run);
//! 2. the time from a plugin file landing in the watched directory (atomic rename)
//!    to its tool answering a call, for a freshly written file and for a file
//!    written well before the rename, with new code (compiled) and with code
//!    already in the cache.
//!
//! The 100 plugins are 100 distinct components: copies of the `numbered` test
//! plugin whose fixed-width tool name `numbered_tool_000` is rewritten in the
//! binary to `numbered_tool_001` ... `numbered_tool_100`. Each copy has its own
//! sha256 (so each is compiled and cached on its own) and its own tool name (so
//! all 100 serve; the host refuses clashing tool names).
//!
//! Run: `scripts/build-plugins && cargo bench -p stockade --bench reload`
//! (results go in BENCHMARKS.md, section "Hot reload").

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};

const PLACEHOLDER: &[u8] = b"numbered_tool_000";
const PLUGINS: usize = 100;
const STARTUP_RUNS: usize = 3;
const LANDINGS: usize = 10;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The `numbered` component with its tool renamed to `numbered_tool_{n:03}`.
fn numbered(template: &[u8], n: usize) -> Vec<u8> {
    let name = format!("numbered_tool_{n:03}");
    assert_eq!(name.len(), PLACEHOLDER.len());
    let mut out = template.to_vec();
    let mut hits = 0;
    let mut i = 0;
    while i + PLACEHOLDER.len() <= out.len() {
        if &out[i..i + PLACEHOLDER.len()] == PLACEHOLDER {
            out[i..i + PLACEHOLDER.len()].copy_from_slice(name.as_bytes());
            hits += 1;
            i += PLACEHOLDER.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "placeholder not found in numbered.wasm");
    out
}

struct Host {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stockade serve` in `dir`; returns once it listens.
fn start(dir: &Path) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .current_dir(dir)
        .args(["serve", "--auth", "none", "--listen", "127.0.0.1:0"])
        .args(["--plugins", "plugins", "--data", "data"])
        .env("STOCKADE_LOG", "warn")
        .env_remove("STOCKADE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stockade");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("stockade listening on http://") {
                let _ = tx.send(rest.trim_end_matches("/mcp").parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("stockade listens");
    Host { child, addr }
}

async fn client(host: &Host) -> RunningService<RoleClient, ()> {
    let t = StreamableHttpClientTransport::from_uri(format!("http://{}/mcp", host.addr));
    ().serve(t).await.expect("client connects")
}

async fn call_ok(client: &RunningService<RoleClient, ()>, tool: &str) -> bool {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()))
        .await
        .is_ok_and(|r| r.is_error != Some(true))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "median {:7.1} ms   min {:7.1}   max {:7.1}   (n={})",
        s[s.len() / 2],
        s[0],
        s[s.len() - 1],
        s.len()
    )
}

/// Start-up: spawn → listening, and spawn → first tools/list with every tool +
/// a call of the last plugin's tool answered.
async fn startup(dir: &Path) -> (f64, f64) {
    let t0 = Instant::now();
    let host = start(dir);
    let listening = t0.elapsed();
    let c = client(&host).await;
    let tools = c.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), PLUGINS, "every plugin serves");
    assert!(call_ok(&c, &format!("numbered_tool_{PLUGINS:03}")).await);
    let serving = t0.elapsed();
    let _ = c.cancel().await;
    (ms(listening), ms(serving))
}

/// Renames a `.tmp` file into the plugin dir as `name`; returns the time until
/// `tool` answers.
async fn landing(
    dir: &Path,
    c: &RunningService<RoleClient, ()>,
    bytes: &[u8],
    name: &str,
    tool: &str,
    aged: bool,
) -> f64 {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    if aged {
        // Written well before it is moved in (the recommended `cp` then `mv`).
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let t0 = Instant::now();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    loop {
        if call_ok(c, tool).await {
            return ms(t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{tool} never became callable"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let template_path = repo().join("target/test-plugins/numbered.wasm");
    let template = std::fs::read(&template_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build-plugins first",
            template_path.display()
        )
    });
    println!(
        "reload benchmark: stockade {} ({} cores), {PLUGINS} distinct plugins of {} KiB each",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        template.len() / 1024
    );

    // ---- Start-up with 100 plugins --------------------------------------------
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for n in 1..=PLUGINS {
        std::fs::write(
            plugins.join(format!("numbered-{n:03}.wasm")),
            numbered(&template, n),
        )
        .unwrap();
    }
    let (mut cold_listen, mut cold_serve, mut warm_listen, mut warm_serve) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..STARTUP_RUNS {
        let _ = std::fs::remove_dir_all(dir.path().join("data/cache"));
        let (l, s) = startup(dir.path()).await;
        cold_listen.push(l);
        cold_serve.push(s);
        let (l, s) = startup(dir.path()).await;
        warm_listen.push(l);
        warm_serve.push(s);
    }
    println!(
        "\nstart-up with {PLUGINS} plugins (spawn → listening / → 100 tools listed and one called):"
    );
    println!("  cold cache, listening  {}", summary(&cold_listen));
    println!("  cold cache, serving    {}", summary(&cold_serve));
    println!("  warm cache, listening  {}", summary(&warm_listen));
    println!("  warm cache, serving    {}", summary(&warm_serve));

    // ---- File landing → callable ------------------------------------------------
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let host = start(dir.path());
    let c = client(&host).await;
    let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
    for (label, aged, reuse) in [
        ("fresh file, new code (compiled)", false, false),
        (
            "file written 0.6 s before the rename, new code",
            true,
            false,
        ),
        (
            "file written 0.6 s before the rename, code in cache",
            true,
            true,
        ),
    ] {
        let mut times = Vec::new();
        for i in 0..LANDINGS {
            // New code: a number never used before. Cached code: the bytes of an
            // earlier landing, removed again meanwhile.
            let n = if reuse {
                200 + i
            } else {
                200 + i + if aged { 100 } else { 0 }
            };
            let name = format!("land-{n:03}.wasm");
            let tool = format!("numbered_tool_{n:03}");
            let t = landing(&plugins, &c, &numbered(&template, n), &name, &tool, aged).await;
            times.push(t);
            // Remove it so the next landing starts from the same state.
            std::fs::remove_file(plugins.join(&name)).unwrap();
            while call_ok(&c, &tool).await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        results.push((label, times));
    }
    println!("\nfile landing (rename into the watched directory) → tool answers a call:");
    for (label, times) in &results {
        println!("  {label:<52} {}", summary(times));
    }
    let _ = c.cancel().await;
    drop(host);
}
