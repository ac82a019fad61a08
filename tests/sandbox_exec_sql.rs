//! Issue 11, items 1–4: the `exec` and `sql` grants hold against a hostile
//! guest. The real `stockade` binary, the `hostile-exec` and `hostile` test
//! plugins built from source, real MCP clients.
//!
//! - exec: the guest cannot choose the environment (`BASH_ENV`, `LD_PRELOAD`,
//!   `GIT_CONFIG_COUNT`) or a working directory outside its granted dirs; the
//!   refusal is typed, audited, and nothing runs (11.1). A program's whole
//!   process group goes when it exits or times out (11.2).
//! - sql: exactly one reading statement; ATTACH, writable_schema, VACUUM INTO and
//!   load_extension are refused and audited (11.3). A runaway query stops at its
//!   timeout and gives its thread and CPU back; a huge result fails naming the
//!   limit without the host's memory growing (11.4).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Host, HostBuilder, audit_events, proc_cpu_ticks, proc_status, process_running_with, test_plugin,
};
use rmcp::RoleClient;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ()>;

/// Calls `tool` and returns its text (the test plugins answer `OK:`/`ERR:`).
async fn call(client: &Client, tool: &str, args: Value) -> String {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(args.as_object().unwrap().clone());
    let r = tokio::time::timeout(Duration::from_secs(30), client.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("no answer to `{tool}` within 30 s"))
        .unwrap_or_else(|e| panic!("protocol error calling `{tool}`: {e}"));
    common::result_text(&r)
}

/// The `capability_denied` audit lines of `capability` whose detail holds
/// `needle`, once there is at least one (waiting up to 5 s for it).
fn denied(host: &Host, capability: &str, needle: &str) -> usize {
    let started = Instant::now();
    loop {
        let n = audit_events(host, "capability_denied")
            .iter()
            .filter(|l| {
                l["capability"] == capability
                    && l["detail"].as_str().is_some_and(|d| d.contains(needle))
            })
            .count();
        if n > 0 || started.elapsed() > Duration::from_secs(5) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- exec -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn exec_refuses_guest_env_and_cwd_outside_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap().join("data");
    std::fs::create_dir(&data).unwrap();
    let marker = data.join("ran");
    let config = format!(
        r#"
[plugins.hostile-exec.grants]
dirs = [{{ host = "{}", guest = "/data", mode = "rw" }}]
[[plugins.hostile-exec.grants.exec]]
program = "/bin/sh"
guest_cwd = true
env = {{ LANG = "C" }}
guest_env = {{ GREETING = "[a-z ]{{1,20}}" }}
timeout_ms = 5000
"#,
        data.display()
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile-exec"), "hostile-exec")
        .config(&config)
        .start();
    let client = host.client().await;
    let touch = format!("touch {}", marker.display());

    // The demonstrated attacks: each refused with a typed denial, nothing runs.
    for (var, value) in [
        ("BASH_ENV", "$(touch /tmp/x)"),
        ("LD_PRELOAD", "/data/evil.so"),
        ("GIT_CONFIG_COUNT", "1"),
        ("GREETING", "$(id)"),
        ("PATH", "/data"),
    ] {
        let t = call(
            &client,
            "run",
            json!({"program": "/bin/sh", "args": ["-c", touch], "env": {var: value}}),
        )
        .await;
        assert!(
            t.starts_with("ERR:plugin `hostile-exec` was refused: may not set") && t.contains(var),
            "{var}: {t}"
        );
        assert_eq!(denied(&host, "exec", var), 1, "{var} audited");
    }
    for cwd in ["/", "/etc", "/data/../..", "data"] {
        let t = call(
            &client,
            "run",
            json!({"program": "/bin/sh", "args": ["-c", touch], "cwd": cwd}),
        )
        .await;
        assert!(
            t.starts_with("ERR:plugin `hostile-exec` was refused")
                && t.contains("must lie inside one of the plugin's granted `dirs`"),
            "{cwd}: {t}"
        );
    }
    assert!(denied(&host, "exec", "must lie inside") >= 4);
    assert!(!marker.exists(), "a refused command ran");

    // What the grant allows works: its env, an allowed guest variable, a cwd
    // inside the granted dir.
    let t = call(
        &client,
        "run",
        json!({"program": "/bin/sh", "args": ["-c", "echo \"$LANG $GREETING\"; pwd; env | wc -l"],
               "env": {"GREETING": "hello there"}, "cwd": "/data"}),
    )
    .await;
    // sh itself adds PWD (and may add SHLVL, _): the program got LANG and
    // GREETING only.
    let mut lines = t.lines();
    assert_eq!(
        lines.next(),
        Some("OK:exit=0;timed_out=false;truncated=false"),
        "{t}"
    );
    assert_eq!(lines.next(), Some("C hello there"), "{t}");
    assert_eq!(lines.next(), Some(data.to_str().unwrap()), "{t}");
    let n: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(n <= 5, "{t}");
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_kills_the_programs_whole_process_group() {
    let config = r#"
[[plugins.hostile-exec.grants.exec]]
program = "/bin/sh"
timeout_ms = 1500
"#;
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile-exec"), "hostile-exec")
        .config(config)
        .start();
    let client = host.client().await;
    // Unique `sleep` arguments mark the processes each script leaves behind.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag = format!("{}{nanos}", std::process::id());
    let exits = format!("1000.{tag}1");
    let hangs = format!("1000.{tag}2");

    // Exits at once, leaving a background sleep that holds its stdout.
    let started = Instant::now();
    let t = call(
        &client,
        "run",
        json!({"program": "/bin/sh", "args": ["-c", format!("sleep {exits} & echo started")]}),
    )
    .await;
    assert!(
        t.starts_with("OK:exit=0;timed_out=false") && t.contains("\nstarted\n"),
        "{t}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "returned when the script exited"
    );

    // Runs past its timeout: killed with its group; the output so far comes back.
    let t = call(
        &client,
        "run",
        json!({"program": "/bin/sh",
               "args": ["-c", format!("sleep {hangs} & echo partial; sleep {hangs}")]}),
    )
    .await;
    assert!(t.starts_with("OK:exit=none;timed_out=true"), "{t}");
    assert!(
        t.contains("\npartial\n") && t.contains("killed after 1500 ms"),
        "{t}"
    );

    std::thread::sleep(Duration::from_millis(200));
    for m in [&exits, &hangs] {
        assert!(!process_running_with(m), "`sleep {m}` outlived its call");
    }
    assert!(host.is_running());
}

// ---- sql --------------------------------------------------------------------------

/// A SQLite file at `path` built from `sql`.
async fn make_db(path: &Path, sql: &str) {
    use sqlx::{ConnectOptions, Connection, Executor};
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    c.execute(sql).await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_refuses_everything_but_one_reading_statement() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let db = root.join("app.db");
    let secret = root.join("secret.db");
    let copy = root.join("copy.db");
    make_db(
        &db,
        "CREATE TABLE people(id INTEGER, name TEXT); INSERT INTO people VALUES (1, 'ada');",
    )
    .await;
    make_db(
        &secret,
        "CREATE TABLE secrets(secret TEXT); INSERT INTO secrets VALUES ('hunter2');",
    )
    .await;
    let config = format!(
        "[sql.main]\nsqlite = \"{}\"\n\n[plugins.hostile.grants]\nsql = [\"main\"]\n",
        db.display()
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;
    let s = secret.display();
    let c = copy.display();
    for (stmt, why) in [
        (
            format!("SELECT 1; ATTACH DATABASE '{s}' AS o; SELECT secret FROM o.secrets"),
            "several statements",
        ),
        (format!("ATTACH DATABASE '{s}' AS o"), "ATTACH"),
        ("PRAGMA writable_schema=1".to_owned(), "writable_schema"),
        (format!("SELECT 1; VACUUM INTO '{c}'"), "several statements"),
        (format!("VACUUM INTO '{c}'"), "VACUUM"),
        (
            "SELECT load_extension('/tmp/evil.so')".to_owned(),
            "load_extension",
        ),
    ] {
        let t = call(&client, "sql", json!({"source": "main", "statement": stmt})).await;
        assert!(
            t.starts_with("ERR:plugin `hostile` may only read from `main`: ") && t.contains(why),
            "{stmt}: {t}"
        );
        assert!(!t.contains("hunter2"));
        assert!(denied(&host, "sql", why) >= 1, "{stmt} audited");
    }
    assert!(!copy.exists(), "VACUUM INTO created a file");
    let files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "no file created next to the sources: {files:?}"
    );
    let t = call(
        &client,
        "sql",
        json!({"source": "main", "statement": "SELECT name FROM people"}),
    )
    .await;
    assert_eq!(t, "OK:name\nada");
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_runaway_and_huge_queries_stop_at_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("app.db");
    make_db(&db, "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1);").await;
    let config = format!(
        "[sql.main]\nsqlite = \"{}\"\ntimeout_ms = 400\nmax_result_kib = 1024\nmax_rows = 100000\n\n\
         [plugins.hostile.grants]\nsql = [\"main\"]\n",
        db.display()
    );
    let mut host = HostBuilder::new()
        .plugin(&test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;
    let pid = host.pid();
    // Warm up the worker and blocking pools.
    for _ in 0..3 {
        let t = call(
            &client,
            "sql",
            json!({"source": "main", "statement": "SELECT x FROM t"}),
        )
        .await;
        assert_eq!(t, "OK:x\n1");
    }
    let threads = proc_status(pid, "Threads");

    let runaway =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
    for _ in 0..3 {
        let started = Instant::now();
        let t = call(
            &client,
            "sql",
            json!({"source": "main", "statement": runaway}),
        )
        .await;
        assert!(
            t.starts_with("ERR:") && t.contains("timed out after 400 ms (sql.main.timeout_ms)"),
            "{t}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let busy = proc_cpu_ticks(pid) - before;
    assert!(
        busy < 30,
        "the host used {busy} ticks of CPU in 1 s after the queries stopped"
    );
    let after = proc_status(pid, "Threads");
    assert!(
        after <= threads + 2,
        "threads: {threads} before, {after} after"
    );

    // A huge result: one giant value, then many large ones.
    let rss = proc_status(pid, "VmRSS");
    for stmt in [
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 3) \
         SELECT randomblob(100000000) FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 400) \
         SELECT randomblob(500000) FROM c",
    ] {
        let t = call(&client, "sql", json!({"source": "main", "statement": stmt})).await;
        assert!(
            t.starts_with("ERR:") && t.contains("exceeds 1024 KiB (sql.main.max_result_kib)"),
            "{t}"
        );
    }
    let grown = proc_status(pid, "VmRSS").saturating_sub(rss);
    assert!(grown < 64 * 1024, "host RSS grew by {grown} kB");
    assert!(host.is_running());
}
