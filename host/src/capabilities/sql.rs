//! `stockade:plugin/sql`: read-only queries on named data sources.
//!
//! A plugin may query only the sources listed in its `grants.sql`. What a query
//! may do is the engine's business (SQLite in `sql_sqlite.rs`: one reading
//! statement, an authorizer allow-list, a read-only connection; PostgreSQL in
//! `sql_postgres.rs`: one reading statement in a read-only transaction under
//! `statement_timeout`, a pool per source); this module holds what every
//! engine shares:
//!
//! - **Bounded workers.** At most [`MAX_SQL_WORKERS`] queries run at once for
//!   the whole host, on either engine (SQLite's on blocking threads); a query
//!   waits for a worker no longer than its deadline.
//! - **Deadline and cancellation.** The source's `timeout_ms` is the query's
//!   deadline, enforced inside the engine (SQLite's progress handler), so a
//!   runaway query stops and frees its worker. If the call is dropped (the
//!   client cancelled, the plugin's own deadline passed), a drop guard stops the
//!   query too.
//! - **Result size.** Values are counted as rows are read; a query whose result
//!   would pass the source's `max_result_kib` fails naming that limit, and the
//!   row cap (`max_rows`) truncates.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::bindings::sql::{Host, Rows, Value};
use crate::bindings::types::CapabilityError;
use crate::call::CallContext;
use crate::config::SqlSource;

#[path = "sql_postgres.rs"]
mod postgres;
#[path = "sql_sqlite.rs"]
mod sqlite;

/// Most queries running at once in the host (each holds one blocking thread).
pub const MAX_SQL_WORKERS: usize = 4;

static WORKERS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_SQL_WORKERS)));

/// The engine behind a data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlEngine {
    /// A SQLite file, opened read-only.
    Sqlite,
    /// A PostgreSQL database, in read-only transactions.
    Postgres,
}

impl SqlEngine {
    /// The engine of `source`.
    pub fn of(source: &SqlSource) -> Self {
        if source.postgres.is_some() {
            SqlEngine::Postgres
        } else {
            SqlEngine::Sqlite
        }
    }

    /// Its name, as plugins see it (`sql.engine`).
    pub fn name(self) -> &'static str {
        match self {
            SqlEngine::Sqlite => "sqlite",
            SqlEngine::Postgres => "postgres",
        }
    }
}

/// The bounds of one query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryLimits {
    /// Rows returned at most (more: `truncated`).
    pub max_rows: usize,
    /// Bytes of values the result may hold.
    pub max_result_bytes: usize,
    /// When the query is stopped.
    pub deadline: Instant,
}

/// Why a query returned no rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum QueryError {
    /// The statement is not one the capability runs; says what was refused
    /// (`several statements`, `ATTACH of ...`, `the function ...`).
    #[error("refused {0}")]
    Refused(String),
    /// The engine failed (bad SQL, missing table, unreadable file...).
    #[error("{0}")]
    Failed(String),
    /// The result would pass `max_result_kib`.
    #[error("the result is too large")]
    TooLarge,
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The call was dropped while the query ran.
    #[error("cancelled")]
    Cancelled,
    /// The engine was interrupted (mapped to `Timeout` or `Cancelled`).
    #[error("interrupted")]
    Interrupted,
}

/// `statement` without its leading whitespace and `--` / `/* */` comments as
/// SQLite reads them (its first keyword is read from here; PostgreSQL's
/// comments nest and end differently, see `postgres::first_keyword`).
fn after_comments(statement: &str) -> &str {
    let mut s = statement.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return s;
        }
    }
}

/// For `fuzz/` (`stockade::fuzzing`): reads `statement` as both engines do
/// and panics if what always holds does not.
#[doc(hidden)]
pub fn fuzz_statement(statement: &str) {
    let cut = postgres::up_to_semicolon(statement);
    assert!(statement.starts_with(cut));
    assert!(cut.len() == statement.len() || statement[cut.len()..].starts_with(';'));
    let _ = postgres::first_keyword(statement);
    let _ = postgres::first_keyword(cut);
    if let Some(one) = sqlite::single_statement(statement) {
        assert!(statement.starts_with(one));
        let _ = sqlite::first_keyword(one);
    }
}

/// Stops the query when dropped: the call's future went away, or the query
/// ended (then stopping is a no-op).
struct StopOnDrop(Arc<sqlite::Stop>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Runs `statement` on `source` on a SQL worker, within `limits`.
pub(crate) async fn run_query(
    source: &SqlSource,
    statement: String,
    params: Vec<Value>,
    limits: QueryLimits,
) -> Result<Rows, QueryError> {
    let deadline = tokio::time::Instant::from_std(limits.deadline);
    let permit = tokio::time::timeout_at(deadline, WORKERS.clone().acquire_owned())
        .await
        .map_err(|_| QueryError::Timeout)?
        .map_err(|_| QueryError::Failed("the SQL workers are shut down".into()))?;
    if SqlEngine::of(source) == SqlEngine::Postgres {
        // The server enforces the deadline (statement_timeout); the grace
        // covers a server that does not answer at all. Dropping the future
        // closes the connection, which ends the query. The worker slot is
        // held until then.
        let _permit = permit;
        return tokio::time::timeout_at(
            deadline + Duration::from_secs(1),
            postgres::query(source, &statement, params, limits),
        )
        .await
        .unwrap_or(Err(QueryError::Timeout));
    }
    let stop = Arc::new(sqlite::Stop::default());
    let _guard = StopOnDrop(stop.clone());
    let path = source.sqlite.clone().unwrap_or_default();
    let worker = tokio::task::spawn_blocking(move || {
        // The worker slot is released when the engine returns, not when the
        // call goes away: the number of SQL threads stays bounded.
        let _permit = permit;
        sqlite::query(&path, &statement, params, limits, &stop)
    });
    // The engine enforces the deadline itself; the grace covers a query stuck
    // where SQLite does not check (the guard then interrupts it).
    match tokio::time::timeout_at(deadline + Duration::from_secs(1), worker).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Err(QueryError::Failed(format!("the SQL worker failed: {e}"))),
        Err(_) => Err(QueryError::Timeout),
    }
}

impl Host for CallContext {
    async fn sources(&mut self) -> Vec<String> {
        self.sql.keys().cloned().collect()
    }

    async fn engine(&mut self, source: String) -> Option<String> {
        self.sql
            .get(&source)
            .map(|s| SqlEngine::of(s).name().to_owned())
    }

    async fn query(
        &mut self,
        source: String,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Rows, CapabilityError> {
        let cx = self;
        let Some(src) = cx.sql.get(&source).cloned() else {
            let msg = cx.denied(
                &format!("the SQL source `{source}`"),
                &format!("grants.sql = [\"{source}\"]"),
            );
            return Err(cx.deny("sql", msg).await);
        };
        // The source's cap and the plugin's result limit, whichever is smaller.
        let (max_result_kib, limit_key) = if cx.max_result_kib < src.max_result_kib {
            (
                cx.max_result_kib.max(1),
                format!("plugins.{}.limits.max_result_kib", cx.plugin),
            )
        } else {
            (
                src.max_result_kib.max(1),
                format!("sql.{source}.max_result_kib"),
            )
        };
        let limits = QueryLimits {
            max_rows: src.max_rows as usize,
            max_result_bytes: (max_result_kib as usize) << 10,
            deadline: Instant::now() + Duration::from_millis(src.timeout_ms),
        };
        match run_query(&src, statement, params, limits).await {
            Ok(rows) => Ok(rows),
            Err(QueryError::Refused(why)) => {
                let msg = format!(
                    "plugin `{}` may only read from `{source}`: refused {why} (a query is one \
                     reading statement — SELECT, WITH, VALUES, EXPLAIN or a reading PRAGMA — \
                     calling only pure functions; see `grants.sql`)",
                    cx.plugin
                );
                Err(cx.deny("sql", msg).await)
            }
            Err(QueryError::TooLarge) => Err(CapabilityError::LimitExceeded(format!(
                "the result of the query on `{source}` exceeds {max_result_kib} KiB ({limit_key})"
            ))),
            Err(QueryError::Timeout | QueryError::Interrupted) => {
                Err(CapabilityError::LimitExceeded(format!(
                    "query on `{source}` timed out after {} ms (sql.{source}.timeout_ms)",
                    src.timeout_ms
                )))
            }
            Err(QueryError::Cancelled) => Err(CapabilityError::Failed(format!(
                "query on `{source}` was cancelled"
            ))),
            Err(QueryError::Failed(e)) => Err(CapabilityError::Failed(format!(
                "query on `{source}` failed: {e}"
            ))),
        }
    }
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
