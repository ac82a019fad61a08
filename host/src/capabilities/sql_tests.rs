use super::*;

#[test]
fn only_reads_pass_the_keyword_guard() {
    assert!(is_read_statement("SELECT 1"));
    assert!(is_read_statement("  with x as (select 1) select * from x"));
    assert!(is_read_statement("-- note\nselect 1"));
    assert!(is_read_statement("/* c */ VALUES (1)"));
    assert!(!is_read_statement("DELETE FROM t"));
    assert!(!is_read_statement("attach database 'x' as y"));
    assert!(!is_read_statement("PRAGMA writable_schema=1"));
    assert!(!is_read_statement("-- select\ndrop table t"));
}

#[tokio::test]
async fn queries_are_read_only_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let mut c = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("create table m (name text, v real, n integer, b blob)")
            .execute(&mut c)
            .await
            .unwrap();
        for i in 0..5 {
            sqlx::query("insert into m values (?, ?, ?, ?)")
                .bind(format!("row{i}"))
                .bind(i as f64 / 2.0)
                .bind(i as i64)
                .bind(vec![i as u8])
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let src = SqlSource {
        sqlite: path.clone(),
        max_rows: 3,
        timeout_ms: 1000,
    };
    let rows = run_query(
        &src,
        "select name, v, n, b, null as z from m where n >= ?1 order by n",
        vec![Value::Integer(1)],
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

    // Writes fail at the engine even if they slip past the keyword guard.
    let err = run_query(
        &src,
        "with x as (select 1) insert into m select 'x', 1, 1, null from x",
        vec![],
    )
    .await;
    assert!(err.is_err(), "read-only connection refuses writes");
    let err = run_query(
        &SqlSource {
            sqlite: dir.path().join("missing.db"),
            max_rows: 1,
            timeout_ms: 100,
        },
        "select 1",
        vec![],
    )
    .await;
    assert!(err.unwrap_err().contains("cannot open"));
}
