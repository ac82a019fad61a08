use std::path::{Path, PathBuf};

use super::sqlite::single_statement;
use super::*;

fn make_db(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
}

fn source(path: PathBuf) -> SqlSource {
    SqlSource {
        sqlite: Some(path),
        postgres: None,
        password_file: None,
        max_connections: 4,
        max_rows: 3,
        timeout_ms: 1000,
        max_result_kib: 64,
    }
}

fn limits(src: &SqlSource) -> QueryLimits {
    QueryLimits {
        max_rows: src.max_rows as usize,
        max_result_bytes: (src.max_result_kib as usize) << 10,
        deadline: Instant::now() + Duration::from_millis(src.timeout_ms),
    }
}

async fn run(src: &SqlSource, sql: &str) -> Result<Rows, QueryError> {
    run_query(src, sql.into(), vec![], limits(src)).await
}

#[test]
fn exactly_one_statement() {
    assert_eq!(single_statement("SELECT 1"), Some("SELECT 1"));
    assert_eq!(single_statement("SELECT 1; ;  -- done\n"), Some("SELECT 1"));
    assert_eq!(
        single_statement("SELECT ';x' AS \"a;\" /* ; */"),
        Some("SELECT ';x' AS \"a;\" /* ; */")
    );
    assert_eq!(
        single_statement("SELECT 'it''s; ok'"),
        Some("SELECT 'it''s; ok'")
    );
    assert_eq!(single_statement("-- only a comment"), Some(""));
    assert_eq!(single_statement("SELECT 1; SELECT 2"), None);
    assert_eq!(single_statement("SELECT 1;ATTACH 'x' AS y"), None);
    assert_eq!(single_statement("SELECT [a;b]; VACUUM INTO '/tmp/x'"), None);
    assert_eq!(single_statement("SELECT 1; /* c */ 'x'"), None);
}

#[tokio::test]
async fn queries_are_read_only_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut sql = "create table m (name text, v real, n integer, b blob);".to_owned();
    for i in 0..5 {
        sql.push_str(&format!(
            "insert into m values ('row{i}', {}, {i}, x'0{i}');",
            i as f64 / 2.0
        ));
    }
    make_db(&path, &sql);
    let src = source(path);
    let rows = run_query(
        &src,
        "select name, v, n, b, null as z from m where n >= ?1 order by n".into(),
        vec![Value::Integer(1)],
        limits(&src),
    )
    .await
    .unwrap();
    assert_eq!(rows.columns, ["name", "v", "n", "b", "z"]);
    assert_eq!(rows.rows.len(), 3);
    assert!(rows.truncated);
    assert!(matches!(&rows.rows[0][0], Value::Text(t) if t == "row1"));
    assert!(matches!(rows.rows[0][1], Value::Real(v) if v == 0.5));
    assert!(matches!(rows.rows[0][2], Value::Integer(1)));
    assert!(matches!(&rows.rows[0][3], Value::Blob(b) if b == &[1]));
    assert!(matches!(rows.rows[0][4], Value::Null));
    // Reading pragmas and safe functions work.
    run(&src, "PRAGMA main.user_version").await.unwrap();
    let rows = run(&src, "PRAGMA table_info(m)").await.unwrap();
    assert_eq!(rows.rows.len(), 3, "capped at max_rows");
    let rows = run(
        &src,
        "SELECT upper(name), json_object('n', n) FROM m LIMIT 1",
    )
    .await
    .unwrap();
    assert!(matches!(&rows.rows[0][0], Value::Text(t) if t == "ROW0"));

    let err = run(
        &src,
        "with x as (select 1) insert into m select 'x', 1, 1, null from x",
    )
    .await;
    assert!(
        matches!(err, Err(QueryError::Refused(ref w)) if w.contains("INSERT")),
        "{err:?}"
    );
    let mut missing = source(dir.path().join("missing.db"));
    missing.timeout_ms = 100;
    let err = run(&missing, "select 1").await.unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
    assert!(!dir.path().join("missing.db").exists());
}

#[tokio::test]
async fn statements_that_reach_outside_the_source_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let other = dir.path().join("secret.db");
    make_db(&path, "create table t (x); insert into t values (1);");
    make_db(
        &other,
        "create table secrets (secret); insert into secrets values ('hunter2');",
    );
    let src = source(path);
    let out = dir.path().join("copy.db");
    let o = other.display();
    let c = out.display();
    for (sql, why) in [
        (
            format!("SELECT 1; ATTACH DATABASE '{o}' AS o; SELECT secret FROM o.secrets"),
            "several statements",
        ),
        (format!("ATTACH DATABASE '{o}' AS o"), "ATTACH"),
        (format!("SELECT 1; VACUUM INTO '{c}'"), "several statements"),
        (format!("VACUUM INTO '{c}'"), "starting with `VACUUM`"),
        (
            format!("/* x */ vacuum into '{c}'"),
            "starting with `VACUUM`",
        ),
        ("PRAGMA writable_schema = 1".into(), "writable_schema"),
        ("PRAGMA writable_schema".into(), "writable_schema"),
        ("PRAGMA query_only = 0".into(), "query_only"),
        ("PRAGMA user_version = 7".into(), "user_version"),
        (
            "SELECT load_extension('/tmp/x.so')".into(),
            "load_extension",
        ),
        ("SELECT fts3_tokenizer('simple')".into(), "fts3_tokenizer"),
        ("BEGIN".into(), "starting with `BEGIN`"),
        ("DELETE FROM t".into(), "starting with `DELETE`"),
        (
            "WITH x AS (SELECT 1) DELETE FROM t".into(),
            "DELETE from `t`",
        ),
        (
            "WITH x AS (SELECT 1) SELECT * FROM x; CREATE TABLE u (y)".into(),
            "several",
        ),
    ] {
        let err = run(&src, &sql).await.unwrap_err();
        assert!(
            matches!(&err, QueryError::Refused(w) if w.contains(why)),
            "{sql}: {err:?}"
        );
    }
    // Issue 23: `readfile` is not in this SQLite build (SQLite says so before
    // any authorizer runs), and a build that had it would meet the authorizer,
    // which refuses every function off the list. Either, and nothing else:
    // any other failure (a source that cannot be opened, a file not found)
    // used to pass as a refusal.
    let err = run(&src, &format!("SELECT readfile('{o}')"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::Failed(m) if m.starts_with("no such function: readfile "))
            || matches!(&err, QueryError::Refused(w) if w == "the function `readfile`"),
        "{err:?}"
    );
    assert!(!out.exists(), "VACUUM INTO wrote nothing");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no file created"
    );
}

#[tokio::test]
async fn runaway_and_huge_queries_stop_at_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    make_db(&path, "create table t (x);");
    let mut src = source(path);
    src.timeout_ms = 300;
    let started = Instant::now();
    let err = run(
        &src,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
    )
    .await
    .unwrap_err();
    assert_eq!(err, QueryError::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    // One value past the cap never gets built; many below it stop at the cap.
    let err = run(&src, "SELECT randomblob(1000000000)")
        .await
        .unwrap_err();
    assert_eq!(err, QueryError::TooLarge);
    src.max_rows = 1000;
    let err = run(
        &src,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100) \
         SELECT randomblob(10000) FROM c",
    )
    .await
    .unwrap_err();
    assert_eq!(err, QueryError::TooLarge);
    // A dropped call stops its query and frees the worker.
    let stop = tokio::time::timeout(
        Duration::from_millis(50),
        run_query(
            &src,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
                .into(),
            vec![],
            QueryLimits {
                deadline: Instant::now() + Duration::from_secs(60),
                ..limits(&src)
            },
        ),
    )
    .await;
    assert!(stop.is_err());
    // Its worker comes back (other tests may hold workers for a moment).
    let freed = Instant::now();
    while WORKERS.available_permits() < MAX_SQL_WORKERS {
        assert!(
            freed.elapsed() < Duration::from_secs(3),
            "a worker stayed busy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
