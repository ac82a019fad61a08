//! `stockade:plugin/sql`: read-only queries on named data sources.
//!
//! A plugin may query only the sources listed in its `grants.sql`. Each query
//! opens the SQLite file read-only (`SQLITE_OPEN_READONLY`) with `query_only`
//! set, accepts only statements that start with `SELECT`, `WITH`, `VALUES` or
//! `EXPLAIN`, stops after the source's row cap and is bounded by its timeout.

use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Column, ConnectOptions, Connection, Row, TypeInfo, ValueRef};

use crate::bindings::sql::{Host, Rows, Value};
use crate::bindings::types::CapabilityError;
use crate::config::SqlSource;
use crate::runtime::CallState;

/// Whether `statement` reads only, judged by its first keyword.
fn is_read_statement(statement: &str) -> bool {
    let mut s = statement.trim_start();
    // Skip leading comments.
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    matches!(
        word.to_ascii_lowercase().as_str(),
        "select" | "with" | "values" | "explain"
    )
}

fn to_value(row: &SqliteRow, i: usize) -> Value {
    let Ok(raw) = row.try_get_raw(i) else {
        return Value::Null;
    };
    if raw.is_null() {
        return Value::Null;
    }
    match raw.type_info().name() {
        "INTEGER" => row
            .try_get::<i64, _>(i)
            .map(Value::Integer)
            .unwrap_or(Value::Null),
        "REAL" => row
            .try_get::<f64, _>(i)
            .map(Value::Real)
            .unwrap_or(Value::Null),
        "BLOB" => row
            .try_get::<Vec<u8>, _>(i)
            .map(Value::Blob)
            .unwrap_or(Value::Null),
        "BOOLEAN" => row
            .try_get::<bool, _>(i)
            .map(Value::Boolean)
            .unwrap_or(Value::Null),
        _ => row
            .try_get::<String, _>(i)
            .map(Value::Text)
            .unwrap_or(Value::Null),
    }
}

async fn run_query(
    source: &SqlSource,
    statement: &str,
    params: Vec<Value>,
) -> Result<Rows, String> {
    let mut conn = SqliteConnectOptions::new()
        .filename(&source.sqlite)
        .read_only(true)
        .create_if_missing(false)
        .pragma("query_only", "ON")
        .connect()
        .await
        .map_err(|e| format!("cannot open the data source: {e}"))?;
    let mut query = sqlx::query(statement);
    for p in params {
        query = match p {
            Value::Null => query.bind(Option::<i64>::None),
            Value::Integer(v) => query.bind(v),
            Value::Real(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Blob(v) => query.bind(v),
            Value::Boolean(v) => query.bind(v),
        };
    }
    let max = source.max_rows as usize;
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    let mut truncated = false;
    {
        let mut stream = query.fetch(&mut conn);
        while let Some(row) = stream.try_next().await.map_err(|e| e.to_string())? {
            if columns.is_empty() {
                columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            if rows.len() == max {
                truncated = true;
                break;
            }
            rows.push((0..row.len()).map(|i| to_value(&row, i)).collect());
        }
    }
    let _ = conn.close().await;
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

impl Host for CallState {
    async fn sources(&mut self) -> Vec<String> {
        self.cx.sql.keys().cloned().collect()
    }

    async fn query(
        &mut self,
        source: String,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Rows, CapabilityError> {
        let cx = &self.cx;
        let Some(src) = cx.sql.get(&source).cloned() else {
            let msg = cx.denied(
                &format!("the SQL source `{source}`"),
                &format!("grants.sql = [\"{source}\"]"),
            );
            return Err(cx.deny("sql", msg).await);
        };
        if !is_read_statement(&statement) {
            let msg = format!(
                "plugin `{}` may only read from `{source}`: statements must start with SELECT, WITH, VALUES or EXPLAIN",
                cx.plugin
            );
            return Err(cx.deny("sql", msg).await);
        }
        let timeout = Duration::from_millis(src.timeout_ms);
        match tokio::time::timeout(timeout, run_query(&src, &statement, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(CapabilityError::Failed(format!(
                "query on `{source}` failed: {e}"
            ))),
            Err(_) => Err(CapabilityError::LimitExceeded(format!(
                "query on `{source}` timed out after {} ms",
                src.timeout_ms
            ))),
        }
    }
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
