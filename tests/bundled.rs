//! End-to-end: the bundled plugins (issue 8) inside the real `stockade` binary,
//! with the grants an operator writes, called by a real MCP client.

mod common;
mod oauth;

use common::{HostBuilder, bundled};
use rmcp::RoleClient;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ()>;

/// Calls `tool`; (is_error, text).
async fn call(client: &Client, tool: &str, args: Value) -> (bool, String) {
    let r = client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("protocol error calling `{tool}`: {e}"));
    (r.is_error == Some(true), common::result_text(&r))
}

async fn ok(client: &Client, tool: &str, args: Value) -> String {
    let (is_error, t) = call(client, tool, args.clone()).await;
    assert!(!is_error, "`{tool}` {args} failed: {t}");
    t
}

async fn fails(client: &Client, tool: &str, args: Value) -> String {
    let (is_error, t) = call(client, tool, args.clone()).await;
    assert!(is_error, "`{tool}` {args} should have failed: {t}");
    t
}

/// `files`: an operator grants one read-write and one read-only directory; the
/// model lists, reads, searches and edits, and the operator sees every change on
/// disk (and the model sees the operator's) while the host runs.
#[tokio::test(flavor = "multi_thread")]
async fn files_reads_and_edits_only_under_its_granted_directories() {
    let work = tempfile::tempdir().unwrap();
    let rw = work.path().join("notes");
    let ro = work.path().join("reference");
    std::fs::create_dir_all(rw.join("sub")).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("todo.md"), "hello\nworld\nhello again\n").unwrap();
    std::fs::write(rw.join("sub/deep.txt"), "needle in a haystack\n").unwrap();
    std::fs::write(rw.join("blob.bin"), [0u8, 1, 2, 3, 0, 9]).unwrap();
    std::fs::write(rw.join("big.log"), "x".repeat(3 << 10)).unwrap();
    std::fs::write(ro.join("policy.txt"), "read me\n").unwrap();
    let config = format!(
        r#"
[plugins.files.grants]
env = {{ FILES_MAX_READ_KIB = "2" }}
dirs = [
  {{ host = "{}", guest = "/notes", mode = "rw" }},
  {{ host = "{}", guest = "/reference", mode = "ro" }},
]
"#,
        rw.display(),
        ro.display()
    );
    let host = HostBuilder::new()
        .plugin(&bundled("files"), "files")
        .config(&config)
        .start();
    let client = host.client().await;

    let listed = ok(&client, "list_files", json!({"glob": "**/*.md"})).await;
    assert!(
        listed.contains("todo.md") && !listed.contains("deep.txt"),
        "{listed}"
    );
    let listed = ok(&client, "list_files", json!({"path": "/notes"})).await;
    assert!(
        listed.contains("sub/deep.txt") && listed.contains("blob.bin  6 bytes"),
        "{listed}"
    );

    let read = ok(
        &client,
        "read_file",
        json!({"path": "todo.md", "start_line": 2, "end_line": 3}),
    )
    .await;
    assert_eq!(read, "2\tworld\n3\thello again\n");
    let found = ok(&client, "search_files", json!({"pattern": "needle"})).await;
    assert_eq!(found, "/notes/sub/deep.txt:1: needle in a haystack");
    let found = ok(
        &client,
        "search_files",
        json!({"pattern": "^hel+o$", "regex": true}),
    )
    .await;
    assert_eq!(found, "/notes/todo.md:1: hello");

    // The edit coding agents use most: exactly one occurrence, or a clear refusal.
    let e = fails(
        &client,
        "edit_file",
        json!({"path": "todo.md", "old_text": "hello", "new_text": "bye"}),
    )
    .await;
    assert!(
        e.contains("occurs 2 times") && e.contains("replace_all"),
        "{e}"
    );
    let e = fails(
        &client,
        "edit_file",
        json!({"path": "todo.md", "old_text": "absent", "new_text": "x"}),
    )
    .await;
    assert!(e.contains("does not occur"), "{e}");
    ok(
        &client,
        "edit_file",
        json!({"path": "/notes/todo.md", "old_text": "hello again", "new_text": "goodbye"}),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(rw.join("todo.md")).unwrap(),
        "hello\nworld\ngoodbye\n"
    );

    // The operator edits the file while the host runs; the model reads the change.
    std::fs::write(rw.join("todo.md"), "edited by the operator\n").unwrap();
    assert_eq!(
        ok(&client, "read_file", json!({"path": "todo.md"})).await,
        "1\tedited by the operator\n"
    );

    ok(
        &client,
        "write_file",
        json!({"path": "new/dir/plan.txt", "content": "step 1\n"}),
    )
    .await;
    ok(
        &client,
        "append_file",
        json!({"path": "new/dir/plan.txt", "content": "step 2\n"}),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(rw.join("new/dir/plan.txt")).unwrap(),
        "step 1\nstep 2\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(rw.join("new/dir")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    ok(&client, "delete_file", json!({"path": "new/dir/plan.txt"})).await;
    assert!(!rw.join("new/dir/plan.txt").exists());
    let e = fails(&client, "delete_file", json!({"path": "sub"})).await;
    assert!(
        e.contains("is a directory") && rw.join("sub/deep.txt").exists(),
        "{e}"
    );

    // Refusals that say what to do.
    for path in [
        "/etc/passwd",
        "../../../../etc/passwd",
        "/notes/../../etc/shadow",
    ] {
        let e = fails(&client, "read_file", json!({"path": path})).await;
        assert!(
            e.contains("outside the granted directories (/notes, /reference)"),
            "{path}: {e}"
        );
    }
    let e = fails(&client, "read_file", json!({"path": "blob.bin"})).await;
    assert!(e.contains("binary file"), "{e}");
    let e = fails(&client, "read_file", json!({"path": "big.log"})).await;
    assert!(
        e.contains("over the read limit of 2 KiB (FILES_MAX_READ_KIB)"),
        "{e}"
    );
    let e = fails(&client, "read_file", json!({"path": "missing.md"})).await;
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(
        ok(
            &client,
            "read_file",
            json!({"path": "/reference/policy.txt"})
        )
        .await,
        "1\tread me\n"
    );
    let e = fails(
        &client,
        "write_file",
        json!({"path": "/reference/policy.txt", "content": "changed"}),
    )
    .await;
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(
        std::fs::read_to_string(ro.join("policy.txt")).unwrap(),
        "read me\n"
    );
    let e = fails(
        &client,
        "search_files",
        json!({"pattern": "(", "regex": true}),
    )
    .await;
    assert!(e.contains("not a valid regex"), "{e}");
}

/// Without a directory grant the plugin has nothing, and says how to grant it.
#[tokio::test(flavor = "multi_thread")]
async fn files_without_a_grant_says_how_to_grant_one() {
    let host = HostBuilder::new()
        .plugin(&bundled("files"), "files")
        .start();
    let client = host.client().await;
    let e = fails(&client, "list_files", json!({})).await;
    assert!(
        e.contains("no directory is granted") && e.contains("[plugins.files.grants]"),
        "{e}"
    );
}

/// `shell`: `run_command` runs only what the exec grant allows, split into
/// words without a shell, with the seeds' result shape; the model can ask what
/// is allowed; every limit of the grant holds.
#[tokio::test(flavor = "multi_thread")]
async fn shell_runs_only_the_granted_programs_without_a_shell() {
    let config = r#"
[[plugins.shell.grants.exec]]
program = "/usr/bin/uptime"
args = []
[[plugins.shell.grants.exec]]
program = "/usr/bin/echo"
[[plugins.shell.grants.exec]]
program = "/usr/bin/false"
[[plugins.shell.grants.exec]]
program = "/usr/bin/seq"
args = ["1", "[0-9]{1,7}"]
max_output_kib = 16
[[plugins.shell.grants.exec]]
program = "/usr/bin/sleep"
args = ["[0-9]"]
timeout_ms = 500
"#;
    let host = HostBuilder::new()
        .plugin(&bundled("shell"), "shell")
        .config(config)
        .start();
    let client = host.client().await;
    let result =
        |t: &str| -> Value { serde_json::from_str(t).unwrap_or_else(|e| panic!("{e}: {t}")) };

    let allowed = ok(&client, "list_allowed_commands", json!({})).await;
    for line in [
        "uptime (no arguments)",
        "echo (any arguments)",
        "seq with exactly 2 arguments matching /1/ /[0-9]{1,7}/",
    ] {
        assert!(allowed.contains(line), "`{line}` missing: {allowed}");
    }

    let r = result(&ok(&client, "run_command", json!({"command": "uptime"})).await);
    assert_eq!(r["exitCode"], 0);
    assert!(
        r["stdout"].as_str().unwrap().contains("load average"),
        "{r}"
    );
    assert!(r["durationMs"].is_u64() && r["timedOut"] == false, "{r}");
    let r = result(
        &ok(
            &client,
            "run_command",
            json!({"command": "/usr/bin/uptime"}),
        )
        .await,
    );
    assert_eq!(r["exitCode"], 0);

    // POSIX word splitting, and no shell: `$(id)`, `;` and `|` are plain words.
    let r = result(
        &ok(
            &client,
            "run_command",
            json!({"command": "echo 'two  spaces' \"q\\\"d\" $(id); ls | wc"}),
        )
        .await,
    );
    assert_eq!(r["stdout"], "two  spaces q\"d $(id); ls | wc\n", "{r}");

    // A non-zero exit is an error result with the same shape.
    let (is_error, t) = call(&client, "run_command", json!({"command": "false"})).await;
    assert!(is_error, "{t}");
    assert_eq!(result(&t)["exitCode"], 1);

    // Programs and arguments outside the grant: refused, with what is allowed.
    let e = fails(&client, "run_command", json!({"command": "rm -rf /tmp/x"})).await;
    assert!(
        e.contains("`rm` is not an allowed program") && e.contains("uptime (no arguments)"),
        "{e}"
    );
    let e = fails(
        &client,
        "run_command",
        json!({"command": "/bin/rm -rf /tmp/x"}),
    )
    .await;
    assert!(e.contains("`/bin/rm` is not an allowed program"), "{e}");
    let e = fails(&client, "run_command", json!({"command": "uptime --since"})).await;
    assert!(
        e.contains("plugin `shell` was refused") && e.contains("Allowed:"),
        "{e}"
    );
    let e = fails(&client, "run_command", json!({"command": "echo 'unclosed"})).await;
    assert!(e.contains("cannot be split into words"), "{e}");

    // The grant's limits: output cap and timeout.
    let (is_error, t) = call(&client, "run_command", json!({"command": "seq 1 200000"})).await;
    let r = result(&t);
    assert!(is_error && r["truncated"] == true, "{}", r["stderr"]);
    assert!(
        r["note"].as_str().unwrap().contains("max_output_kib"),
        "{r}"
    );
    assert!(r["stdout"].as_str().unwrap().len() <= 16 << 10);
    let (is_error, t) = call(&client, "run_command", json!({"command": "sleep 5"})).await;
    let r = result(&t);
    assert!(
        is_error && r["timedOut"] == true && r["note"].is_string(),
        "{t}"
    );
    assert!(r["durationMs"].as_u64().unwrap() < 3000, "{r}");
}

/// Without an exec grant, the model is told that nothing is allowed and how the
/// operator grants it.
#[tokio::test(flavor = "multi_thread")]
async fn shell_without_a_grant_says_how_to_grant_one() {
    let host = HostBuilder::new()
        .plugin(&bundled("shell"), "shell")
        .start();
    let client = host.client().await;
    let t = ok(&client, "list_allowed_commands", json!({})).await;
    assert!(
        t.contains("no program is allowed") && t.contains("[[plugins.shell.grants.exec]]"),
        "{t}"
    );
    let e = fails(&client, "run_command", json!({"command": "uptime"})).await;
    assert!(e.contains("not an allowed program"), "{e}");
}

/// `data`: the model lists, describes, filters and fetches rows of the example
/// database (made by `scripts/make-example-db`) through the host's read-only
/// `sql` capability; names are checked against the live schema and values are
/// bound, so injection-shaped input finds nothing and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn data_queries_the_granted_source_and_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("example.db");
    let made = std::process::Command::new(common::repo().join("scripts/make-example-db"))
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = format!(
        "[sql.example]\nsqlite = \"{}\"\n[plugins.data.grants]\nsql = [\"example\"]\n",
        db.display()
    );
    let host = HostBuilder::new()
        .plugin(&bundled("data"), "data")
        .config(&config)
        .start();
    let client = host.client().await;
    let json_of =
        |t: String| -> Value { serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}")) };

    let listed = json_of(ok(&client, "list_collections", json!({})).await);
    let names: Vec<&str> = listed["sources"]["example"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customers", "order_totals", "orders", "products"]);

    let d = json_of(
        ok(
            &client,
            "describe_collection",
            json!({"collection": "products"}),
        )
        .await,
    );
    assert_eq!(d["primary_key"], json!(["sku"]));
    assert_eq!(d["rows"], 5);
    assert_eq!(
        d["columns"][2],
        json!({"name": "price_cents", "type": "INTEGER", "nullable": false, "primary_key": false})
    );

    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "orders",
        "filters": [{"field": "status", "op": "=", "value": "paid"}], "limit": 100}),
        )
        .await,
    );
    assert_eq!(q["count"], 50);
    assert_eq!(q["more"], false);
    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "customers",
        "filters": [{"field": "country", "op": "in", "value": ["FR", "SE"]},
                    {"field": "name", "op": "like", "value": "A%"}],
        "order_by": "id", "order": "desc", "limit": 2}),
        )
        .await,
    );
    assert_eq!(q["count"], 2);
    assert!(
        q["rows"][0]["id"].as_i64() > q["rows"][1]["id"].as_i64(),
        "{q}"
    );
    assert!(
        q["rows"][0]["name"].as_str().unwrap().starts_with('A'),
        "{q}"
    );
    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "orders",
        "filters": [{"field": "note", "op": "is null"}], "limit": 5, "offset": 10}),
        )
        .await,
    );
    assert_eq!(
        (q["count"].as_u64(), q["more"].as_bool()),
        (Some(5), Some(true))
    );
    let q = json_of(ok(&client, "query_data", json!({"collection": "order_totals"})).await);
    assert_eq!(q["count"], 10, "default limit");

    let r = json_of(
        ok(
            &client,
            "get_record",
            json!({"collection": "customers", "id": 7}),
        )
        .await,
    );
    assert_eq!(r["email"], "customer7@example.com");
    let r = json_of(
        ok(
            &client,
            "get_record",
            json!({"collection": "products", "id": "MS-02"}),
        )
        .await,
    );
    assert_eq!(r["title"], "Mouse");
    let e = fails(
        &client,
        "get_record",
        json!({"collection": "customers", "id": 999}),
    )
    .await;
    assert!(e.contains("no record in `customers` with id = 999"), "{e}");

    // Bad input: unknown names, injection-shaped values and names, limits.
    let e = fails(&client, "query_data", json!({"collection": "users"})).await;
    assert!(
        e.contains("unknown collection `users`") && e.contains("customers, order_totals"),
        "{e}"
    );
    let e = fails(
        &client,
        "query_data",
        json!({"collection": "customers\"; DROP TABLE orders; --"}),
    )
    .await;
    assert!(e.contains("unknown collection"), "{e}");
    let e = fails(
        &client,
        "query_data",
        json!({"collection": "customers",
        "filters": [{"field": "name) OR 1=1 --", "op": "=", "value": "x"}]}),
    )
    .await;
    assert!(
        e.contains("unknown field") && e.contains("fields: id, name, email"),
        "{e}"
    );
    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "customers",
        "filters": [{"field": "name", "op": "=", "value": "x' OR '1'='1"}]}),
        )
        .await,
    );
    assert_eq!(q["count"], 0, "the value is bound, not spliced: {q}");
    let e = fails(
        &client,
        "query_data",
        json!({"collection": "orders", "limit": 1000}),
    )
    .await;
    assert!(e.contains("`limit` must be 1 to 100"), "{e}");
    let e = fails(
        &client,
        "query_data",
        json!({"collection": "orders",
        "filters": [{"field": "status", "op": "between", "value": 1}]}),
    )
    .await;
    assert!(e.contains("invalid arguments"), "{e}");
    let e = fails(
        &client,
        "query_data",
        json!({"collection": "orders", "source": "prod"}),
    )
    .await;
    assert!(e.contains("unknown source `prod`; granted: example"), "{e}");
    let d = json_of(
        ok(
            &client,
            "describe_collection",
            json!({"collection": "orders"}),
        )
        .await,
    );
    assert_eq!(d["rows"], 200, "nothing was dropped or written");
}

/// `data` on PostgreSQL (a real server, a fresh cluster): the same tools over
/// a source the operator defines with a URL and a password file; names come
/// from the live catalog, values are bound and cast to the column's type, and
/// the host's `sql` capability keeps every statement read-only, one at a time,
/// under its deadline and byte cap (checked with the hostile plugin's raw SQL).
#[tokio::test(flavor = "multi_thread")]
async fn data_queries_postgresql_read_only_through_the_host() {
    let pg = common::postgres::Postgres::start();
    pg.run(
        "postgres",
        "CREATE ROLE reader LOGIN PASSWORD 'reader-pw-1'",
    );
    pg.run("postgres", "CREATE DATABASE shop");
    pg.run(
        "shop",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, \
           email varchar(100), joined date NOT NULL, vip boolean NOT NULL DEFAULT false);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int REFERENCES customers, \
           total numeric(10,2) NOT NULL, placed timestamptz NOT NULL, note text);
         INSERT INTO customers (name, email, joined, vip) \
           SELECT 'Customer ' || i, 'c' || i || '@example.com', date '2024-01-01' + i, i % 5 = 0 \
           FROM generate_series(1, 40) i;
         INSERT INTO customers (name, joined) VALUES ('Ada', '2023-12-10');
         INSERT INTO customers (name, email, joined) VALUES ('Long', repeat('e', 100), '2030-01-01');
         INSERT INTO orders SELECT i, 1 + i % 40, (i * 7.25)::numeric(10,2), \
           timestamptz '2025-01-01 00:00+00' + i * interval '1 hour', \
           CASE WHEN i % 10 = 0 THEN 'gift' END FROM generate_series(1, 120) i;
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 500;
         CREATE TABLE big (id int PRIMARY KEY, blob text);
         INSERT INTO big SELECT i, repeat('x', 1000) FROM generate_series(1, 3000) i;
         CREATE TABLE huge (v text, b bytea);
         INSERT INTO huge SELECT repeat('y', 60 * 1024 * 1024), convert_to(repeat('z', 60 * 1024 * 1024), 'UTF8');
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader;",
    );
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("pg-password");
    std::fs::write(&password_file, "reader-pw-1\n").unwrap();
    // Roles that reach past the data from a SELECT (issue 18.5).
    pg.run(
        "postgres",
        "CREATE ROLE boss LOGIN SUPERUSER PASSWORD 'reader-pw-1'; \
         CREATE ROLE signaler LOGIN PASSWORD 'reader-pw-1' IN ROLE pg_signal_backend",
    );
    let config = format!(
        "[sql.shop]\npostgres = \"postgres://reader@127.0.0.1:{port}/shop\"\npassword_file = \"{pw}\"\n\
         timeout_ms = 1500\nmax_result_kib = 512\n\
         [sql.boss]\npostgres = \"postgres://boss@127.0.0.1:{port}/shop\"\npassword_file = \"{pw}\"\n\
         [sql.signaler]\npostgres = \"postgres://signaler@127.0.0.1:{port}/shop\"\npassword_file = \"{pw}\"\n\
         [plugins.data.grants]\nsql = [\"shop\"]\n[plugins.hostile.grants]\nsql = [\"shop\", \"boss\", \"signaler\"]\n",
        port = pg.port,
        pw = password_file.display()
    );
    let host = HostBuilder::new()
        .plugin(&bundled("data"), "data")
        .plugin(&common::test_plugin("hostile"), "hostile")
        .config(&config)
        .start();
    let client = host.client().await;
    let json_of =
        |t: String| -> Value { serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}")) };

    let listed = json_of(ok(&client, "list_collections", json!({})).await);
    assert_eq!(
        listed["sources"]["shop"],
        json!([{"name": "big", "type": "table"}, {"name": "big_orders", "type": "view"},
               {"name": "customers", "type": "table"}, {"name": "huge", "type": "table"},
               {"name": "orders", "type": "table"}])
    );
    let d = json_of(
        ok(
            &client,
            "describe_collection",
            json!({"collection": "orders"}),
        )
        .await,
    );
    assert_eq!(d["primary_key"], json!(["id"]));
    assert_eq!(d["rows"], 120);
    assert_eq!(
        d["columns"][2],
        json!({"name": "total", "type": "numeric(10,2)", "nullable": false, "primary_key": false})
    );

    // Filters of every kind on typed columns: numbers, dates, booleans, text.
    let q = json_of(ok(&client, "query_data", json!({"collection": "orders",
        "filters": [{"field": "total", "op": ">", "value": 700}, {"field": "note", "op": "is not null"}],
        "order_by": "total", "order": "desc", "limit": 2})).await);
    assert_eq!(
        (q["count"].as_u64(), q["more"].as_bool()),
        (Some(2), Some(true)),
        "orders 100, 110, 120: {q}"
    );
    assert_eq!(
        q["rows"][0]["total"], "870.00",
        "numeric is read as text: {q}"
    );
    assert_eq!(q["rows"][0]["id"], 120);
    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "customers",
        "filters": [{"field": "joined", "op": "<", "value": "2024-01-05"},
                    {"field": "vip", "op": "=", "value": false}], "order_by": "id"}),
        )
        .await,
    );
    let names: Vec<&str> = q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Customer 1", "Customer 2", "Customer 3", "Ada"],
        "{q}"
    );
    assert_eq!(q["rows"][3]["joined"], "2023-12-10");
    let q = json_of(ok(&client, "query_data", json!({"collection": "customers",
        "filters": [{"field": "id", "op": "in", "value": [5, "10", 15]}, {"field": "name", "op": "like", "value": "Customer 1%"}]})).await);
    assert_eq!(
        (q["count"].as_u64(), &q["rows"][0]["vip"]),
        (Some(2), &json!(true)),
        "{q}"
    );
    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "big_orders", "limit": 100, "offset": 40}),
        )
        .await,
    );
    assert_eq!(
        (q["count"].as_u64(), q["more"].as_bool()),
        (Some(12), Some(false)),
        "{q}"
    );
    let r = json_of(
        ok(
            &client,
            "get_record",
            json!({"collection": "customers", "id": 41}),
        )
        .await,
    );
    assert_eq!(
        (r["name"].as_str(), r["email"].is_null()),
        (Some("Ada"), true),
        "{r}"
    );

    // Issue 18.6: values are cast to the column's type without its modifiers:
    // a cast to varchar(100) truncated, to numeric(10,2) rounded, and a
    // filter matched more than it said.
    let count = async |filters: Value| -> u64 {
        let q = json_of(
            ok(
                &client,
                "query_data",
                json!({"collection": "customers", "filters": filters}),
            )
            .await,
        );
        q["count"].as_u64().unwrap()
    };
    let long = "e".repeat(100);
    assert_eq!(
        count(json!([{"field": "email", "op": "=", "value": long}])).await,
        1
    );
    assert_eq!(
        count(json!([{"field": "email", "op": "=", "value": format!("{long}zzz")}])).await,
        0
    );
    let totals = async |v: Value| -> u64 {
        let q = json_of(
            ok(
                &client,
                "query_data",
                json!({"collection": "orders",
                "filters": [{"field": "total", "op": "=", "value": v}]}),
            )
            .await,
        );
        q["count"].as_u64().unwrap()
    };
    assert_eq!(totals(json!(7.25)).await, 1);
    assert_eq!(totals(json!(7.254)).await, 0, "not rounded into a match");

    // Bad input.
    let e = fails(&client, "query_data", json!({"collection": "pg_authid"})).await;
    assert!(e.contains("unknown collection `pg_authid`"), "{e}");
    let q = json_of(
        ok(
            &client,
            "query_data",
            json!({"collection": "customers",
        "filters": [{"field": "name", "op": "=", "value": "x'; DROP TABLE orders; --"}]}),
        )
        .await,
    );
    assert_eq!(q["count"], 0, "bound, not spliced: {q}");
    let e = fails(
        &client,
        "query_data",
        json!({"collection": "customers",
        "filters": [{"field": "id", "op": "=", "value": "1 OR 1=1"}]}),
    )
    .await;
    assert!(e.contains("invalid input syntax for type integer"), "{e}");

    // The capability itself, with raw SQL from a hostile plugin.
    let raw = async |statement: &str| -> String {
        let (_, t) = call(
            &client,
            "sql",
            json!({"source": "shop", "statement": statement}),
        )
        .await;
        t
    };
    for (statement, why) in [
        (
            "INSERT INTO customers (name, joined) VALUES ('x', now())",
            "`INSERT` statement",
        ),
        ("DELETE FROM orders", "`DELETE` statement"),
        ("COPY (SELECT 1) TO PROGRAM 'id'", "`COPY` statement"),
        (
            // Refused by the role's privileges before the read-only
            // transaction's own check (the statement runs as a subquery).
            "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
            "permission denied for table orders",
        ),
        (
            "SELECT set_config('default_transaction_read_only', 'off', false); DELETE FROM orders",
            "cannot insert multiple commands",
        ),
    ] {
        let t = raw(statement).await;
        assert!(t.starts_with("ERR:") && t.contains(why), "{statement}: {t}");
    }
    let t = raw("SELECT pg_sleep(5)").await;
    assert!(
        t.contains("timed out after 1500 ms (sql.shop.timeout_ms)"),
        "{t}"
    );
    let t = raw("SELECT blob FROM big").await;
    assert!(t.contains("exceeds 512 KiB"), "{t}");
    let t = raw("SELECT total FROM orders LIMIT 1").await;
    assert!(t.contains("cast it in the query (`total::text`)"), "{t}");
    let t = raw("SELECT name, vip FROM customers WHERE id = 5").await;
    assert_eq!(t, "OK:name\tvip\nCustomer 5\ttrue", "{t}");
    let t = raw("SELECT id FROM customers WHERE false").await;
    assert_eq!(t, "OK:id", "columns of an empty result");
    let t =
        raw("SELECT name AS a, name AS a FROM customers WHERE id = 3; -- same name twice").await;
    assert_eq!(t, "OK:a\ta\nCustomer 3\tCustomer 3", "{t}");

    // Issue 18.4: a huge value is withheld by the server, never received by the
    // host: four concurrent reads of 60 MB values under a 512 KiB cap leave
    // the host's peak memory where it was (it grew by ~500 MB when the host
    // received whole rows before measuring them).
    let peak_before = common::proc_status(host.pid(), "VmHWM");
    let reads = [
        "SELECT v FROM huge",
        "SELECT b FROM huge",
        "SELECT v, b FROM huge",
        "SELECT upper(v) FROM huge",
    ];
    let answers = futures_util::future::join_all(reads.iter().map(|q| raw(q))).await;
    for (q, t) in reads.iter().zip(&answers) {
        assert!(t.contains("exceeds 512 KiB"), "{q}: {t}");
    }
    let peak_after = common::proc_status(host.pid(), "VmHWM");
    assert!(
        peak_after < peak_before + 64 * 1024,
        "host peak RSS grew from {peak_before} kB to {peak_after} kB"
    );

    // Issue 18.5: a role that could end other sessions or read the server's
    // files is refused before any statement runs.
    for (source, why) in [
        ("boss", "is a superuser"),
        ("signaler", "is a member of pg_signal_backend"),
    ] {
        let (_, t) = call(
            &client,
            "sql",
            json!({"source": source, "statement": "SELECT pg_terminate_backend(pg_backend_pid())"}),
        )
        .await;
        assert!(t.starts_with("ERR:") && t.contains(why), "{source}: {t}");
    }

    // Issue 18.5: a session-level advisory lock does not outlive the call (it
    // survived the rollback on the pooled connection, stalling whoever else
    // takes that lock).
    let t = raw("SELECT pg_try_advisory_lock(4242)").await;
    assert_eq!(t, "OK:pg_try_advisory_lock\ntrue", "{t}");
    assert_eq!(
        pg.run(
            "shop",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .trim(),
        "0",
        "no advisory lock is left once the call ended"
    );
    assert_eq!(
        pg.run("shop", "SELECT count(*) FROM orders").trim(),
        "120",
        "nothing was written"
    );
}

/// An rmcp client on `url` with a bearer token.
async fn client_with(url: &str, token: &str) -> Client {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned()),
    );
    ().serve(transport)
        .await
        .expect("MCP client connects with a bearer token")
}

/// `get_metrics` as JSON.
async fn metrics(client: &Client, args: Value) -> Value {
    let text = ok(client, "get_metrics", args).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The row of `rows` whose `key` is `name`.
fn row<'a>(rows: &'a Value, key: &str, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[key] == name)
        .unwrap_or_else(|| panic!("no {key} `{name}` in {rows}"))
}

/// `metrics`: `get_metrics` in the seeds' shape answers from the host's own
/// figures: calls per tool and per user (two users logged in through the real
/// OAuth flow), latency and error rates per tool, the host's health with a
/// refused plugin and why; the figures survive a restart; bad arguments say
/// what is allowed.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_reports_usage_performance_and_health_across_restarts() {
    const ALICE_PW: &str = "alice-password-1";
    const BOB_PW: &str = "bob-password-22";
    let users_dir = tempfile::tempdir().unwrap();
    let users = oauth::users_file(
        users_dir.path(),
        &[("alice", ALICE_PW, &["mcp"]), ("bob", BOB_PW, &["mcp"])],
    );
    let mut host = HostBuilder::new()
        .plugin(&bundled("template"), "template")
        .plugin(&bundled("metrics"), "metrics")
        .plugin_bytes(b"this is not WebAssembly", "broken.wasm")
        .auth(Some("builtin"))
        .arg("--users-file")
        .arg(users.to_str().unwrap())
        .config("[plugins.metrics.grants]\nmetrics = true\n")
        .start();
    let o = oauth::Oauth::new(&host.base_url());
    let (_, alice) = o.full_login_as("alice", ALICE_PW, "").await;
    let (_, bob) = o.full_login_as("bob", BOB_PW, "").await;
    let a = client_with(&host.mcp_url(), &alice.access).await;
    let b = client_with(&host.mcp_url(), &bob.access).await;
    for name in ["Ada", "Grace", "Edsger"] {
        ok(&a, "greet", json!({"name": name})).await;
    }
    ok(&b, "greet", json!({"name": "Barbara"})).await;
    fails(&b, "add", json!({"a": "one"})).await;

    let usage = metrics(&a, json!({"metricType": "usage", "timeRange": "1h"})).await;
    assert_eq!(usage["totals"]["calls"], 5, "{usage}");
    assert_eq!(usage["totals"]["errors"], 1, "{usage}");
    assert_eq!(row(&usage["byTool"], "tool", "greet")["calls"], 4);
    assert_eq!(row(&usage["byTool"], "tool", "add")["errors"], 1);
    assert_eq!(row(&usage["byPlugin"], "plugin", "template")["calls"], 5);
    assert_eq!(row(&usage["bySubject"], "subject", "alice")["calls"], 3);
    let bob_row = row(&usage["bySubject"], "subject", "bob");
    assert_eq!(
        (&bob_row["calls"], &bob_row["errors"]),
        (&json!(2), &json!(1))
    );
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let since = usage["window"]["dataSince"].as_str().unwrap();
    assert_eq!(since[..10], today[..10], "ISO dates in UTC: {since}");

    let perf = metrics(&b, json!({"metricType": "performance", "timeRange": "24h"})).await;
    let greet = row(&perf["byTool"], "tool", "greet");
    let l = &greet["latencyMs"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= max && max < 10_000.0,
        "{greet}"
    );
    assert_eq!(greet["errorRate"], 0.0);
    let add = row(&perf["byTool"], "tool", "add");
    assert_eq!((&add["calls"], &add["errorRate"]), (&json!(1), &json!(1.0)));
    // The usage call itself is counted, as a call of `get_metrics`.
    assert_eq!(row(&perf["byTool"], "tool", "get_metrics")["calls"], 1);

    let health = metrics(&a, json!({"metricType": "health"})).await;
    assert_eq!(health["status"], "degraded", "a refused plugin: {health}");
    let broken = row(&health["plugins"]["list"], "name", "broken");
    assert_eq!(broken["state"], "refused");
    assert!(
        broken["reason"].as_str().unwrap().contains("WebAssembly"),
        "{broken}"
    );
    assert_eq!(
        row(&health["plugins"]["list"], "name", "template")["state"],
        "serving"
    );
    assert_eq!(health["plugins"]["serving"], 2);
    assert!(health["openSessions"].as_u64().unwrap() >= 2, "{health}");
    assert!(
        health["memory"]["hostRssBytes"].as_u64().unwrap() > 1 << 20,
        "{health}"
    );
    assert!(
        health["dataDisk"]["freeBytes"].as_u64().unwrap() > 0,
        "{health}"
    );
    assert_eq!(
        health["load"].as_object().map(|l| l.len()),
        Some(3),
        "{health}"
    );

    let e = fails(&a, "get_metrics", json!({"metricType": "bogus"})).await;
    assert!(
        e.contains("usage") && e.contains("performance") && e.contains("health"),
        "{e}"
    );
    let e = fails(
        &a,
        "get_metrics",
        json!({"metricType": "usage", "timeRange": "2h"}),
    )
    .await;
    assert!(e.contains("1h, 24h, 7d, 30d"), "{e}");

    // SIGTERM writes what is pending; the next host reads it back.
    drop((a, b));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        host.wait_log("stopped", std::time::Duration::from_secs(15)),
        "{}",
        host.log()
    );
    let db = host.data_dir().join("metrics.db");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "metrics.db names subjects");
    host.restart();
    let a = client_with(&host.mcp_url(), &alice.access).await;
    let usage = metrics(&a, json!({"metricType": "usage", "timeRange": "30d"})).await;
    assert_eq!(
        row(&usage["byTool"], "tool", "greet")["calls"],
        4,
        "{usage}"
    );
    assert_eq!(
        row(&usage["bySubject"], "subject", "bob")["errors"],
        1,
        "{usage}"
    );
}

/// Without `metrics = true` the plugin sees nothing and says how to grant it.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_without_a_grant_says_how_to_grant_one() {
    let host = HostBuilder::new()
        .plugin(&bundled("metrics"), "metrics")
        .start();
    let client = host.client().await;
    let e = fails(&client, "get_metrics", json!({"metricType": "health"})).await;
    assert!(
        e.contains("metrics = true") && e.contains("[plugins.metrics]"),
        "{e}"
    );
}

/// Issue 18.6: the diagnostics grant the shell README recommends, taken from
/// the README itself: its `ls` pattern lists the granted directories and
/// nothing reached through `..` (it listed the data directory's keys before).
#[tokio::test(flavor = "multi_thread")]
async fn the_shell_readme_grant_admits_no_dot_dot() {
    let readme = std::fs::read_to_string(common::repo().join("plugins/shell/README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README's first TOML block");
    assert!(block.contains("/usr/bin/ls"), "{block}");
    let host = HostBuilder::new()
        .plugin(&bundled("shell"), "shell")
        .config(block)
        .start();
    let client = host.client().await;
    let listed = ok(
        &client,
        "run_command",
        json!({"command": "ls -la /var/log"}),
    )
    .await;
    assert!(
        listed.contains("\"exitCode\":0") || listed.contains("\"exitCode\": 0"),
        "{listed}"
    );
    for path in [
        "/var/log/..",
        "/var/log/../../etc",
        "/var/log/./../lib",
        "/etc/nginx/../shadow",
        "/var/log/.",
    ] {
        let (is_error, t) = call(
            &client,
            "run_command",
            json!({"command": format!("ls -la {path}")}),
        )
        .await;
        assert!(is_error && t.contains("Allowed:"), "{path}: {t}");
    }
}
