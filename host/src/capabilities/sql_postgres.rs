//! The PostgreSQL engine of the `sql` capability.
//!
//! - **Read-only.** The statement must start with `SELECT`, `WITH`, `VALUES`,
//!   `TABLE`, `EXPLAIN` or `SHOW`, runs as one prepared statement (so one
//!   statement only) inside `BEGIN TRANSACTION READ ONLY`, and the transaction is
//!   rolled back. Connections also default to read-only transactions. This stops
//!   writes through SQL; the operator's role decides the rest (give one that can
//!   only `SELECT`: a superuser could still reach the server's files through
//!   functions).
//! - **Deadline.** `SET LOCAL statement_timeout` to what is left of the call's
//!   deadline, so the server stops a runaway query itself.
//! - **One pool per source**, made on first use and kept while the source's
//!   settings stay the same (`max_connections` connections at most; a
//!   connection idle for a minute is closed).
//! - **Values.** `boolean`, integer, floating-point, text-like and `bytea`
//!   columns come back typed; any other type is refused with a message telling
//!   the plugin to cast it (`price::text`). Parameters are typed by their WIT
//!   value (`integer` is `int8`, `text` is `text`...): cast them in SQL where the
//!   column differs (`$1::date`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, Executor, Row, TypeInfo, ValueRef};

use super::{QueryError, QueryLimits};
use crate::bindings::sql::{Rows, Value};
use crate::config::SqlSource;

/// The statements a query may start with.
const READING: &[&str] = &["SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN", "SHOW"];

/// A source's pool key: URL, password file, size.
type PoolKey = (String, Option<std::path::PathBuf>, u32);

static POOLS: LazyLock<Mutex<HashMap<PoolKey, PgPool>>> = LazyLock::new(Default::default);

fn pool(source: &SqlSource) -> Result<PgPool, QueryError> {
    let url = source.postgres.clone().unwrap_or_default();
    let key = (
        url.clone(),
        source.password_file.clone(),
        source.max_connections,
    );
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&key) {
        return Ok(p.clone());
    }
    let options = crate::pgconn::options(
        &url,
        source.password_file.as_deref(),
        "stockade",
        "the source's URL",
        "the password file",
    )
    .map_err(QueryError::Failed)?
    .options([("default_transaction_read_only", "on")]);
    let pool = PgPoolOptions::new()
        .max_connections(source.max_connections.max(1))
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options);
    pools.insert(key, pool.clone());
    Ok(pool)
}

/// The statement's first word, upper case.
fn first_keyword(statement: &str) -> String {
    super::after_comments(statement)
        .trim_start_matches('(')
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

fn failed(e: sqlx::Error) -> QueryError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            // query_canceled: the statement_timeout.
            Some("57014") => return QueryError::Timeout,
            // read_only_sql_transaction.
            Some("25006") => {
                return QueryError::Refused(format!("a statement that writes ({})", db.message()));
            }
            _ => return QueryError::Failed(db.message().to_owned()),
        }
    }
    QueryError::Failed(e.to_string())
}

fn value(row: &PgRow, i: usize) -> Result<(Value, usize), QueryError> {
    let raw = row.try_get_raw(i).map_err(failed)?;
    if raw.is_null() {
        return Ok((Value::Null, 0));
    }
    let ty = raw.type_info().name().to_owned();
    let get = |e: sqlx::Error| QueryError::Failed(e.to_string());
    Ok(match ty.as_str() {
        "BOOL" => (Value::Boolean(row.try_get(i).map_err(get)?), 1),
        "INT2" => (
            Value::Integer(row.try_get::<i16, _>(i).map_err(get)?.into()),
            8,
        ),
        "INT4" => (
            Value::Integer(row.try_get::<i32, _>(i).map_err(get)?.into()),
            8,
        ),
        "INT8" => (Value::Integer(row.try_get(i).map_err(get)?), 8),
        "OID" => (
            Value::Integer(
                row.try_get::<sqlx::postgres::types::Oid, _>(i)
                    .map_err(get)?
                    .0
                    .into(),
            ),
            8,
        ),
        "FLOAT4" => (
            Value::Real(row.try_get::<f32, _>(i).map_err(get)?.into()),
            8,
        ),
        "FLOAT8" => (Value::Real(row.try_get(i).map_err(get)?), 8),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "CITEXT" => {
            let s: String = row.try_get_unchecked(i).map_err(get)?;
            let n = s.len();
            (Value::Text(s), n)
        }
        "BYTEA" => {
            let b: Vec<u8> = row.try_get(i).map_err(get)?;
            let n = b.len();
            (Value::Blob(b), n)
        }
        other => {
            let column = row.columns()[i].name().to_owned();
            return Err(QueryError::Failed(format!(
                "column `{column}` has the PostgreSQL type {other}, which the sql capability \
                 returns only as text: cast it in the query (`{column}::text`)"
            )));
        }
    })
}

/// Runs `statement` with `params` on `source` within `limits`.
pub(super) async fn query(
    source: &SqlSource,
    statement: &str,
    params: Vec<Value>,
    limits: QueryLimits,
) -> Result<Rows, QueryError> {
    let keyword = first_keyword(statement);
    if !READING.contains(&keyword.as_str()) {
        return Err(QueryError::Refused(if keyword.is_empty() {
            "an empty statement".into()
        } else {
            format!("a `{keyword}` statement")
        }));
    }
    let deadline = tokio::time::Instant::from_std(limits.deadline);
    let pool = pool(source)?;
    let mut conn = tokio::time::timeout_at(deadline, pool.acquire())
        .await
        .map_err(|_| QueryError::Timeout)?
        .map_err(failed)?;
    let mut tx = conn
        .begin_with("BEGIN TRANSACTION READ ONLY")
        .await
        .map_err(failed)?;
    let left = limits.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(QueryError::Timeout);
    }
    tx.execute(format!("SET LOCAL statement_timeout = {}", left.as_millis().max(1)).as_str())
        .await
        .map_err(failed)?;
    let mut q = sqlx::query(statement);
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<String>),
            Value::Integer(i) => q.bind(i),
            Value::Real(f) => q.bind(f),
            Value::Text(s) => q.bind(s),
            Value::Blob(b) => q.bind(b),
            Value::Boolean(b) => q.bind(b),
        };
    }
    let mut out = Rows {
        columns: Vec::new(),
        rows: Vec::new(),
        truncated: false,
    };
    let mut bytes = 0usize;
    {
        let mut stream = q.fetch(&mut *tx);
        while let Some(row) = stream.try_next().await.map_err(failed)? {
            if out.columns.is_empty() {
                out.columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            if out.rows.len() == limits.max_rows {
                out.truncated = true;
                break;
            }
            let mut values = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                let (v, n) = value(&row, i)?;
                bytes += n + 8;
                values.push(v);
            }
            if bytes > limits.max_result_bytes {
                return Err(QueryError::TooLarge);
            }
            out.rows.push(values);
        }
    }
    if out.columns.is_empty() {
        // No rows: the columns from the statement's description.
        let described = (&mut *tx).describe(statement).await.map_err(failed)?;
        out.columns = described
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
    }
    let _ = tx.rollback().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::first_keyword;

    #[test]
    fn the_first_keyword_skips_comments_and_parentheses() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert_eq!(first_keyword("-- hi\n/* x */ (SELECT 1)"), "SELECT");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("insert into t values (1)"), "INSERT");
        assert_eq!(first_keyword("COPY (SELECT 1) TO PROGRAM 'id'"), "COPY");
    }
}
