//! The bundled tools' operations done natively: what each costs without the
//! sandbox, MCP and HTTP (same closed loop as the HTTP workers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Map, Value, json};

/// One operation.
pub enum Op {
    /// Read a file and number its lines (`read_file`).
    ReadFile(String),
    /// Run a program and collect its output (`run_command`).
    Exec(String),
    /// `query_data`'s three statements on a SQLite file (the collection list,
    /// its columns, the page of rows), rows to JSON.
    Sql(String),
    /// Read the last hour of a host's metrics.db (`get_metrics`).
    Metrics(String),
}

impl Op {
    pub fn parse(op: &str, target: &str) -> anyhow::Result<Op> {
        Ok(match op {
            "read-file" => Op::ReadFile(target.into()),
            "exec" => Op::Exec(target.into()),
            "sql" => Op::Sql(target.into()),
            "metrics" => Op::Metrics(target.into()),
            _ => bail!("unknown --op {op}: read-file, exec, sql or metrics"),
        })
    }
}

fn rows_json(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<Value>> {
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut m = Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(i) => json!(i),
                rusqlite::types::ValueRef::Real(f) => json!(f),
                rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                rusqlite::types::ValueRef::Blob(b) => json!(b.len()),
            };
            m.insert(n.clone(), v);
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

fn open(path: &str) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// One operation; Ok(bytes of output).
fn once(op: &Op, db: &mut Option<rusqlite::Connection>) -> anyhow::Result<usize> {
    Ok(match op {
        Op::ReadFile(path) => {
            let text = std::fs::read_to_string(path)?;
            let numbered: String = text
                .lines()
                .enumerate()
                .map(|(i, l)| format!("{}\t{l}\n", i + 1))
                .collect();
            numbered.len()
        }
        Op::Exec(program) => {
            let out = std::process::Command::new(program).output()?;
            if !out.status.success() {
                bail!("{program} failed");
            }
            out.stdout.len()
        }
        Op::Sql(path) => {
            let conn = match db {
                Some(c) => c,
                None => db.insert(open(path)?),
            };
            let collections = rows_json(
                &mut *conn.prepare_cached(
                    "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') \
                     AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )?,
                &[],
            )?;
            let columns = rows_json(
                &mut *conn.prepare_cached(
                    "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid",
                )?,
                &[&"orders"],
            )?;
            let rows = rows_json(
                &mut *conn.prepare_cached(
                    "SELECT * FROM \"orders\" WHERE \"status\" = ?1 LIMIT 11 OFFSET 0",
                )?,
                &[&"paid"],
            )?;
            json!({"c": collections, "k": columns, "rows": rows})
                .to_string()
                .len()
        }
        Op::Metrics(path) => {
            let conn = match db {
                Some(c) => c,
                None => db.insert(open(path)?),
            };
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64
                - 3600;
            let rows = rows_json(
                &mut *conn.prepare_cached("SELECT * FROM op_buckets WHERE bucket >= ?1")?,
                &[&since],
            )?;
            json!(rows).to_string().len()
        }
    })
}

/// `c` tasks doing `op` in a closed loop (on the blocking pool, as the host
/// does file, SQL and process work); latencies (µs) after the warm-up.
pub async fn run(
    op: &Op,
    c: usize,
    warmup: Duration,
    measure: Duration,
) -> (Vec<u32>, Vec<String>) {
    let op = Arc::new(match op {
        Op::ReadFile(p) => Op::ReadFile(p.clone()),
        Op::Exec(p) => Op::Exec(p.clone()),
        Op::Sql(p) => Op::Sql(p.clone()),
        Op::Metrics(p) => Op::Metrics(p.clone()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let measure_from = Instant::now() + warmup;
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (op, stop) = (op.clone(), stop.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let (mut lat, mut errors, mut db) = (Vec::new(), Vec::new(), None);
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let r = once(&op, &mut db);
                if began >= measure_from {
                    match r {
                        Ok(_) => lat.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(warmup + measure).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors.extend(e);
        }
    }
    (lat, errors)
}
