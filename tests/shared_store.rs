//! End-to-end: what holds on the link between hosts and their shared
//! PostgreSQL store (issue 18): TLS with the server verified, nothing secret
//! in what a passive observer of a plaintext link sees, revocation reaching a
//! host whose change listener was cut silently, sessions kept alive by use,
//! and the store purged without the built-in server.

mod common;
mod oauth;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::postgres::{Postgres, Tls};
use common::tap::Tap;
use common::{Host, HostBuilder, bundled};
use oauth::{Oauth, initialize};
use reqwest::StatusCode;

const ALICE_PW: &str = "alice-long-password-1";

/// A role and a database for the hosts, and the files their `[store]` names.
struct StoreFiles {
    dir: tempfile::TempDir,
    password: PathBuf,
    secret: PathBuf,
    users: PathBuf,
}

fn prepare(pg: &Postgres) -> StoreFiles {
    pg.run(
        "postgres",
        "CREATE ROLE stockade LOGIN PASSWORD 'shared-store-pw'",
    );
    pg.run("postgres", "CREATE DATABASE stockade OWNER stockade");
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("store-password");
    std::fs::write(&password, "shared-store-pw\n").unwrap();
    let secret = dir.path().join("store-secret");
    std::fs::write(&secret, "every-host-holds-this-same-store-secret-0123\n").unwrap();
    let users = oauth::users_file(dir.path(), &[("alice", ALICE_PW, &["mcp"])]);
    StoreFiles {
        dir,
        password,
        secret,
        users,
    }
}

/// A config for a built-in-auth host on the store at `url` (public URL: its
/// own address unless given).
fn config(files: &StoreFiles, public_url: &str, url: &str, host_id: &str) -> String {
    let public_url = if public_url.is_empty() {
        String::new()
    } else {
        format!("public_url = \"{public_url}\"\n")
    };
    format!(
        "[auth]\n{public_url}users_file = \"{}\"\n\n[store]\nurl = \"{url}\"\n\
         password_file = \"{}\"\nsecret_file = \"{}\"\nhost_id = \"{host_id}\"\n",
        files.users.display(),
        files.password.display(),
        files.secret.display(),
    )
}

fn host(config: &str) -> Host {
    HostBuilder::new()
        .auth(Some("builtin"))
        .plugin(&bundled("template"), "template")
        .config(config)
        .start()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `stockade ARGS --config CONFIG` in `dir`: (ok, output).
fn stockade_with(config: &str, dir: &Path, args: &[&str]) -> (bool, String) {
    let file = dir.join(format!("cli-{}.toml", free_port()));
    std::fs::write(&file, config).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", file.to_str().unwrap()]);
    common::run_stockade(&all, dir)
}

/// Issue 18.1: a PostgreSQL that requires TLS, with the server verified
/// against the operator's CA (`sslmode=verify-full`): the host serves a login
/// and a call over it; a CA that did not sign the server's certificate, or
/// no TLS, is refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn tls_to_postgresql_with_the_server_verified() {
    let tls = Tls::new("store");
    let pg = Postgres::start_tls(&tls);
    let files = prepare(&pg);
    let public = "";
    let url = format!(
        "postgres://stockade@localhost:{}/stockade?sslmode=verify-full&sslrootcert={}",
        pg.port,
        tls.ca.display()
    );
    let h = HostBuilder::new()
        .auth(Some("builtin"))
        .plugin(&bundled("template"), "template")
        .config(&config(&files, public, &url, "tls-a"))
        .start();
    let o = Oauth::new(&h.base_url());
    let (_, alice) = o.full_login_as("alice", ALICE_PW, "").await;
    let r = o.mcp(Some(&alice.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Every connection of the host's role is encrypted.
    let (tls_conns, plain_conns) = {
        let out = pg.run(
            "postgres",
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'stockade'",
        );
        let mut it = out.trim().split('|').map(|n| n.parse::<u32>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(
        tls_conns >= 1 && plain_conns == 0,
        "{tls_conns} TLS, {plain_conns} plain"
    );

    // A CA that did not sign the server's certificate: refused, saying why.
    let other = Tls::new("other");
    let wrong_ca = format!(
        "postgres://stockade@localhost:{}/stockade?sslmode=verify-full&sslrootcert={}",
        pg.port,
        other.ca.display()
    );
    let (ok, out) = stockade_with(
        &config(&files, public, &wrong_ca, "cli"),
        files.dir.path(),
        &["keys", "rotate"],
    );
    assert!(!ok, "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    // No TLS at all: the server's rule refuses it (and the host says so).
    let plain = format!(
        "postgres://stockade@127.0.0.1:{}/stockade?sslmode=disable",
        pg.port
    );
    let (ok, out) = stockade_with(
        &config(&files, public, &plain, "cli"),
        files.dir.path(),
        &["keys", "rotate"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("no encryption") || out.contains("pg_hba"),
        "{out}"
    );
    drop(h);
}

/// Two hosts behind a balancer: A talks to PostgreSQL directly, B through a
/// tap that records the link and can cut B's listening connection silently.
struct Pair {
    pg: Postgres,
    tap: Tap,
    files: StoreFiles,
    a: Host,
    b: Host,
    lb: Balancer,
    cli: String,
}

async fn pair() -> Pair {
    let pg = Postgres::start();
    let files = prepare(&pg);
    let tap = Tap::start(([127, 0, 0, 1], pg.port).into()).await;
    let lb_port = free_port();
    let public = format!("http://127.0.0.1:{lb_port}");
    let direct = format!("postgres://stockade@127.0.0.1:{}/stockade", pg.port);
    let tapped = format!("postgres://stockade@127.0.0.1:{}/stockade", tap.port);
    let a = host(&config(&files, &public, &direct, "host-a"));
    let b = host(&config(&files, &public, &tapped, "host-b"));
    let lb = Balancer::start_on(lb_port, vec![a.addr, b.addr]).await;
    let cli = config(&files, &public, &direct, "cli");
    Pair {
        pg,
        tap,
        files,
        a,
        b,
        lb,
        cli,
    }
}

/// Issue 18.1 and 18.2: a passive observer of host B's plaintext link sees
/// no signing key, even across a key rotation B reads through it; and when
/// B's listening connection is cut without a word, a revocation made on A
/// still stops alice's token on B within 30 s (it was served at +60 s
/// before: B kept trusting its cache).
#[tokio::test(flavor = "multi_thread")]
async fn a_watched_or_silently_cut_link_keeps_keys_and_revocations() {
    let p = pair().await;
    let through_lb = Oauth::unpooled(&p.lb.base_url());
    p.lb.send_to(1);
    let (_, alice) = through_lb.full_login_as("alice", ALICE_PW, "").await;
    let on_b = Oauth::new(&p.b.base_url());
    let r = on_b.mcp(Some(&alice.access), &initialize()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A rotation from the command line (direct link); B reads the new key
    // through the tap within its reload period.
    let (ok, out) = stockade_with(&p.cli, p.files.dir.path(), &["keys", "rotate"]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_b.get("/jwks.json").await.json()["keys"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "B never read the new key");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seen = p.tap.seen();
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("sealed-v1:"),
        "B read the keys through the tap"
    );
    assert!(!text.contains("PRIVATE KEY"), "a PEM crossed the link");
    for h in [&p.a, &p.b] {
        let pem = std::fs::read_to_string(h.data_dir().join("keys/es256.pem")).unwrap_or_default();
        for line in pem
            .lines()
            .filter(|l| l.len() > 20 && !l.starts_with("-----"))
        {
            assert!(
                !text.contains(line),
                "key material crossed the link: {line}"
            );
        }
    }

    // B's listener goes quiet; its cached verification of alice's token must
    // not outlive a revocation made elsewhere.
    for _ in 0..3 {
        assert_eq!(
            on_b.mcp(Some(&alice.access), &initialize()).await.status,
            StatusCode::OK
        );
    }
    assert!(p.tap.silence_listeners() >= 1, "B listens through the tap");
    let (ok, out) = stockade_with(
        &p.cli,
        p.files.dir.path(),
        &["tokens", "revoke", "--subject", "alice"],
    );
    assert!(ok, "{out}");
    let revoked_at = Instant::now();
    loop {
        let status = on_b.mcp(Some(&alice.access), &initialize()).await.status;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(30),
            "B still served a revoked token after 30 s:\n{}",
            p.b.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        p.b.log().contains("the change listener heard nothing"),
        "{}",
        p.b.log()
    );
    // A, listening directly, refuses it too.
    let on_a = Oauth::new(&p.a.base_url());
    assert_eq!(
        on_a.mcp(Some(&alice.access), &initialize()).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 18.6: a session in use is not purged as abandoned: its `seen_at`
/// moves when another host serves it.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_in_use_stays_alive() {
    let p = pair().await;
    let on_a = Oauth::new(&p.a.base_url());
    let on_b = Oauth::new(&p.b.base_url());
    p.lb.send_to(0);
    let (_, alice) = Oauth::unpooled(&p.lb.base_url())
        .full_login_as("alice", ALICE_PW, "")
        .await;
    let r = on_a.mcp(Some(&alice.access), &initialize()).await;
    let sid = r.header("mcp-session-id").expect("a session id");
    on_a.in_session(
        reqwest::Method::POST,
        &alice.access,
        &sid,
        Some(&oauth::initialized()),
    )
    .await;
    // As if opened two days ago and not touched since.
    p.pg.run(
        "stockade",
        &format!(
            "UPDATE mcp_sessions SET seen_at = extract(epoch from now())::bigint - 172800 WHERE id = '{sid}'"
        ),
    );
    let r = on_b
        .in_session(
            reqwest::Method::POST,
            &alice.access,
            &sid,
            Some(&oauth::tools_list()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let age: i64 = p
            .pg
            .run(
                "stockade",
                &format!(
                    "SELECT extract(epoch from now())::bigint - seen_at FROM mcp_sessions WHERE id = '{sid}'"
                ),
            )
            .trim()
            .parse()
            .unwrap();
        if age < 60 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seen_at was not refreshed ({age} s old)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 18.3: with an external identity provider nothing purged the shared
/// store (relayed replies, rate counters, sessions, login forms grew for
/// ever); now a host purges it whatever its authentication mode.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_is_purged_in_external_mode_too() {
    let pg = Postgres::start();
    let files = prepare(&pg);
    let url = format!("postgres://stockade@127.0.0.1:{}/stockade", pg.port);
    let store = format!(
        "[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nsecret_file = \"{}\"\nhost_id = \"HOST\"\n",
        files.password.display(),
        files.secret.display()
    );
    let external = |host_id: &str| {
        format!(
            "[auth]\nmode = \"external\"\nissuer = \"https://sso.example.com\"\n\
             jwks_url = \"http://127.0.0.1:9/jwks.json\"\naudience = \"stockade\"\n\n{}",
            store.replace("HOST", host_id)
        )
    };
    // The first host creates the schema.
    let first = HostBuilder::new()
        .auth(None)
        .config(&external("ext-a"))
        .start();
    let old = "extract(epoch from now())::bigint - 3 * 86400";
    pg.run(
        "stockade",
        &format!(
            "INSERT INTO mcp_replies (session, body, created_at) VALUES ('s', '{{}}', {old});
             INSERT INTO rate_counters (key, window_start, count) VALUES ('k', {old}, 1);
             INSERT INTO mcp_sessions (id, subject, host_id, created_at, seen_at) VALUES ('old', 'x', 'h', {old}, {old});
             INSERT INTO login_forms (csrf_hash, addr, data, created_at, expires_at) VALUES ('f', 'a', '{{}}', {old}, {old});"
        ),
    );
    drop(first);
    // A host starting purges at once, then every few minutes.
    let _second = HostBuilder::new()
        .auth(None)
        .config(&external("ext-b"))
        .start();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = pg.run(
            "stockade",
            "SELECT (SELECT count(*) FROM mcp_replies) + (SELECT count(*) FROM rate_counters) + \
             (SELECT count(*) FROM mcp_sessions) + (SELECT count(*) FROM login_forms)",
        );
        if left.trim() == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "{left} expired rows are left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every process of `pg`'s cluster stopped (SIGSTOP): its connections stay
/// open and nothing answers on them, as with a database that hangs or a link
/// that drops every packet. The processes continue when this is dropped.
struct Frozen(Vec<u32>);

fn signal(sig: &str, pids: &[u32]) {
    let mut kill = std::process::Command::new("kill");
    kill.arg(sig).args(pids.iter().map(u32::to_string));
    assert!(kill.status().unwrap().success(), "kill {sig} {pids:?}");
}

impl Frozen {
    fn new(pg: &Postgres) -> Frozen {
        let data = pg.run("postgres", "SHOW data_directory");
        let pid_file = Path::new(data.trim()).join("postmaster.pid");
        let main: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The postmaster first: it forks no new backend after this.
        signal("-STOP", &[main]);
        let mut frozen = Frozen(vec![main]);
        let children: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let ppid: u32 = stat[stat.rfind(')')? + 2..]
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == main).then_some(pid)
            })
            .collect();
        assert!(!children.is_empty(), "the cluster has no backends");
        frozen.0.extend(&children);
        signal("-STOP", &children);
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut kill = std::process::Command::new("kill");
        kill.arg("-CONT").args(self.0.iter().map(u32::to_string));
        let _ = kill.status();
    }
}

/// `/ready` and `/health` as a balancer reads them: a new connection each
/// time, and an answer within 2 s (a probe that waits on the database
/// would time out at the balancer): (status, body).
async fn probe(base: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let r = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} did not answer within 2 s: {e}"));
    (r.status(), r.json().await.unwrap())
}

/// Issue 23 (`/ready` during a store outage): a host on PostgreSQL answers
/// `/ready` 503 naming the store while the database hangs (every process of
/// the cluster stopped), at once on every probe rather than hanging with the
/// database; `/health` stays 200 throughout; `/ready` is 200 again once the
/// database answers. (Readiness used to query the store on every probe: each
/// probe then hung as long as the database did.)
#[tokio::test(flavor = "multi_thread")]
async fn ready_is_503_while_the_store_is_down_and_200_once_it_is_back() {
    let pg = Postgres::start();
    let files = prepare(&pg);
    let url = format!("postgres://stockade@127.0.0.1:{}/stockade", pg.port);
    let h = host(&config(&files, "", &url, "outage"));
    let base = h.base_url();
    let (status, body) = probe(&base, "/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["problems"], serde_json::json!([]), "{body}");

    let frozen = Frozen::new(&pg);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = probe(&base, "/ready").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            Instant::now() < deadline,
            "/ready still 200 10 s into the outage: {}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(
        body["problems"],
        serde_json::json!(["the auth store does not answer: no answer within 2 s"]),
        "{body}"
    );
    // Still 503, still at once, while the outage lasts; the process lives.
    for _ in 0..3 {
        let (status, body) = probe(&base, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let (status, body) = probe(&base, "/health").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ok", "{body}");
    }

    drop(frozen);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = probe(&base, "/ready").await;
        if status == StatusCode::OK {
            assert_eq!(body["problems"], serde_json::json!([]), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready still 503 20 s after the database came back: {body}\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        h.log()
            .contains("not ready: the auth store does not answer"),
        "{}",
        h.log()
    );
}
