//! The SQLite engine of the `sql` capability (blocking; runs on a SQL worker).
//!
//! What holds for every query:
//!
//! - The file is opened with `SQLITE_OPEN_READONLY`, `query_only` on, defensive
//!   mode on, the schema untrusted, no attached databases allowed
//!   (`SQLITE_LIMIT_ATTACHED = 0`).
//! - Exactly one statement: the text after the first statement may hold only
//!   whitespace, comments and `;` (only the first statement is ever handed to
//!   SQLite, so a tail could not run in any case), and it starts with `SELECT`,
//!   `WITH`, `VALUES`, `EXPLAIN` or `PRAGMA`.
//! - An authorizer allows only these actions while the statement is prepared:
//!   `SELECT`, reading columns of the main database, recursive CTEs, functions
//!   on [`SAFE_FUNCTIONS`] and the read-only pragmas of [`READ_PRAGMAS`] /
//!   [`TABLE_PRAGMAS`]. Everything else (ATTACH, DETACH, writes, schema changes,
//!   transactions, other pragmas, `load_extension` and any function not listed)
//!   is refused. A statement SQLite does not call read-only is refused too.
//! - A progress handler stops the statement at the deadline or when the call is
//!   cancelled; the caller can also interrupt it through the [`Stop`] it shares.
//! - No value may be longer than the result cap (`SQLITE_LIMIT_LENGTH`), and
//!   values are counted as rows are read: the query stops when the result would
//!   pass the cap, before the host holds more than that.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};

use super::{QueryError, QueryLimits};
use crate::bindings::sql::{Rows, Value};

/// Functions a query may call: pure computations on values. Notably absent:
/// `load_extension`, `readfile`, `writefile`, `edit`, `fts3_tokenizer` and
/// anything an extension might add.
#[rustfmt::skip]
pub const SAFE_FUNCTIONS: &[&str] = &[
    // Core scalar functions.
    "abs", "changes", "char", "coalesce", "concat", "concat_ws", "format", "glob",
    "hex", "if", "ifnull", "iif", "instr", "last_insert_rowid", "length", "like",
    "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "octet_length",
    "printf", "quote", "random", "randomblob", "replace", "round", "rtrim", "sign",
    "soundex", "sqlite_version", "substr", "substring", "total_changes", "trim",
    "typeof", "unhex", "unicode", "unistr", "unlikely", "upper", "zeroblob",
    // Aggregates and window functions.
    "avg", "count", "group_concat", "string_agg", "sum", "total", "row_number", "rank",
    "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
    // Date and time.
    "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
    "current_date", "current_time", "current_timestamp",
    // Math.
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling",
    "cos", "cosh", "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi",
    "pow", "power", "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
    // JSON (pure functions on text).
    "json", "jsonb", "json_array", "jsonb_array", "json_array_length",
    "json_error_position", "json_extract", "jsonb_extract", "json_insert",
    "jsonb_insert", "json_object", "jsonb_object", "json_patch", "jsonb_patch",
    "json_pretty", "json_quote", "json_remove", "jsonb_remove", "json_replace",
    "jsonb_replace", "json_set", "jsonb_set", "json_type", "json_valid",
    "json_group_array", "jsonb_group_array", "json_group_object", "jsonb_group_object",
    "json_each", "json_tree",
];

/// Pragmas that only report something, allowed without a value.
#[rustfmt::skip]
pub const READ_PRAGMAS: &[&str] = &[
    "application_id", "collation_list", "encoding", "foreign_keys", "freelist_count",
    "function_list", "module_list", "page_count", "page_size", "pragma_list",
    "schema_version", "table_list", "user_version",
];

/// Pragmas that report on the table or index named by their argument.
#[rustfmt::skip]
pub const TABLE_PRAGMAS: &[&str] = &[
    "foreign_key_list", "index_info", "index_list", "index_xinfo", "table_info",
    "table_xinfo",
];

/// How the async side stops a running query: a flag the progress handler reads,
/// and SQLite's interrupt for work between progress callbacks.
#[derive(Default)]
pub struct Stop {
    cancelled: AtomicBool,
    handle: Mutex<Option<InterruptHandle>>,
}

impl Stop {
    /// Stops the query (if it still runs) at its next check.
    pub fn stop(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(h) = &*self.handle.lock().unwrap_or_else(|e| e.into_inner()) {
            h.interrupt();
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Splits off exactly one statement: returns the text of the first statement
/// (without its `;`; empty when there is none), or `None` when anything but
/// whitespace, comments and `;` follows it. Strings (`'..'`), quoted identifiers (`".."`, `` `..` ``,
/// `[..]`) and comments are skipped as SQLite's tokenizer does.
pub fn single_statement(sql: &str) -> Option<&str> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut end = None;
    let mut after_end = false;
    let mut saw_token = false;
    while i < b.len() {
        let c = b[i];
        let skip_to = |i: usize, close: u8| -> usize {
            // Quoted text; a doubled closing quote is an escaped quote.
            let mut j = i + 1;
            while j < b.len() {
                if b[j] == close {
                    if close != b']' && j + 1 < b.len() && b[j + 1] == close {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            b.len()
        };
        let next = match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                sql[i..].find('\n').map_or(b.len(), |n| i + n + 1)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2)
            }
            _ if c.is_ascii_whitespace() => i + 1,
            b';' => {
                if end.is_none() {
                    end = Some(i);
                }
                after_end = true;
                i + 1
            }
            _ if after_end => return None,
            b'\'' | b'"' | b'`' => {
                saw_token = true;
                skip_to(i, c)
            }
            b'[' => {
                saw_token = true;
                skip_to(i, b']')
            }
            _ => {
                saw_token = true;
                i + 1
            }
        };
        i = next;
    }
    Some(if saw_token {
        &sql[..end.unwrap_or(sql.len())]
    } else {
        ""
    })
}

/// Statements a query may be, by first keyword. The authorizer decides what
/// they may touch; this only keeps statements the authorizer never sees
/// (`VACUUM`) away from SQLite.
const READING_KEYWORDS: &[&str] = &["select", "with", "values", "explain", "pragma"];

/// The first keyword of `statement`, after whitespace and comments.
pub(super) fn first_keyword(statement: &str) -> String {
    super::after_comments(statement)
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Whether the authorizer allows `ctx`; the refusal says what was refused.
fn authorize(ctx: &AuthContext<'_>) -> Result<(), String> {
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => Ok(()),
        AuthAction::Read { table_name, .. } => match ctx.database_name {
            None | Some("main") => Ok(()),
            Some(db) => Err(format!(
                "reading `{db}.{table_name}` (only the source itself)"
            )),
        },
        AuthAction::Function { function_name } => {
            if SAFE_FUNCTIONS.contains(&function_name.to_ascii_lowercase().as_str()) {
                Ok(())
            } else {
                Err(format!("the function `{function_name}`"))
            }
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            if TABLE_PRAGMAS.contains(&name.as_str())
                || (READ_PRAGMAS.contains(&name.as_str()) && pragma_value.is_none())
            {
                Ok(())
            } else {
                Err(format!(
                    "`PRAGMA {pragma_name}{}` (only reading pragmas: {}, {})",
                    pragma_value.map(|v| format!(" = {v}")).unwrap_or_default(),
                    READ_PRAGMAS.join(", "),
                    TABLE_PRAGMAS.join(", ")
                ))
            }
        }
        AuthAction::Attach { filename } => Err(format!("ATTACH of `{filename}`")),
        AuthAction::Detach { database_name } => Err(format!("DETACH of `{database_name}`")),
        AuthAction::Insert { table_name } => Err(format!("INSERT into `{table_name}`")),
        AuthAction::Update { table_name, .. } => Err(format!("UPDATE of `{table_name}`")),
        AuthAction::Delete { table_name } => Err(format!("DELETE from `{table_name}`")),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            Err("transaction control".to_owned())
        }
        other => Err(format!("{other:?}")),
    }
}

fn failed(e: rusqlite::Error) -> QueryError {
    QueryError::Failed(e.to_string())
}

/// Opens `path` read-only and configures the connection; installs nothing
/// guest-facing yet.
fn open(path: &Path, limits: &QueryLimits, stop: &Stop) -> Result<Connection, QueryError> {
    use rusqlite::config::DbConfig;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| QueryError::Failed(format!("cannot open the data source: {e}")))?;
    *stop.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.get_interrupt_handle());
    conn.pragma_update(None, "query_only", true)
        .map_err(failed)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(failed)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(failed)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
    conn.set_limit(
        Limit::SQLITE_LIMIT_LENGTH,
        i32::try_from(limits.max_result_bytes)
            .unwrap_or(i32::MAX)
            .max(1),
    );
    // A writer holding a lock makes readers wait, but never past the deadline.
    let left = limits.deadline.saturating_duration_since(Instant::now());
    conn.busy_timeout(left.min(Duration::from_secs(60)))
        .map_err(failed)?;
    Ok(conn)
}

/// Runs `statement` on the SQLite file `path` under `limits`, until `stop`.
pub fn query(
    path: &Path,
    statement: &str,
    params: Vec<Value>,
    limits: QueryLimits,
    stop: &std::sync::Arc<Stop>,
) -> Result<Rows, QueryError> {
    let Some(statement) = single_statement(statement) else {
        return Err(QueryError::Refused("several statements".into()));
    };
    if statement.is_empty() {
        return Err(QueryError::Failed("no statement".into()));
    }
    let keyword = first_keyword(statement);
    if !READING_KEYWORDS.contains(&keyword.as_str()) {
        return Err(QueryError::Refused(format!(
            "a statement starting with `{}`",
            keyword.to_ascii_uppercase()
        )));
    }
    let conn = open(path, &limits, stop)?;
    let refusal = std::sync::Arc::new(Mutex::new(None::<String>));
    let seen = refusal.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| match authorize(&ctx) {
        Ok(()) => Authorization::Allow,
        Err(why) => {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(why);
            Authorization::Deny
        }
    }));
    let deadline = limits.deadline;
    let flag = stop.clone();
    conn.progress_handler(
        1000,
        Some(move || flag.is_cancelled() || Instant::now() >= deadline),
    );
    let outcome = run(&conn, statement, params, &limits);
    let refused = refusal.lock().unwrap_or_else(|e| e.into_inner()).take();
    match outcome {
        Err(QueryError::Failed(_)) if refused.is_some() => {
            Err(QueryError::Refused(refused.unwrap_or_default()))
        }
        Err(QueryError::Interrupted) if stop.is_cancelled() => Err(QueryError::Cancelled),
        Err(QueryError::Interrupted) => Err(QueryError::Timeout),
        other => other,
    }
}

/// Prepares, checks and reads `statement`.
fn run(
    conn: &Connection,
    statement: &str,
    params: Vec<Value>,
    limits: &QueryLimits,
) -> Result<Rows, QueryError> {
    let mut stmt = conn.prepare(statement).map_err(classify)?;
    if !stmt.readonly() {
        return Err(QueryError::Refused("a statement that writes".into()));
    }
    if stmt.parameter_count() != params.len() {
        return Err(QueryError::Failed(format!(
            "the statement has {} parameter(s), {} given",
            stmt.parameter_count(),
            params.len()
        )));
    }
    for (i, p) in params.into_iter().enumerate() {
        use rusqlite::types::Value as V;
        let v = match p {
            Value::Null => V::Null,
            Value::Integer(v) => V::Integer(v),
            Value::Real(v) => V::Real(v),
            Value::Text(v) => V::Text(v),
            Value::Blob(v) => V::Blob(v),
            Value::Boolean(v) => V::Integer(i64::from(v)),
        };
        stmt.raw_bind_parameter(i + 1, v).map_err(classify)?;
    }
    let columns: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let mut used: usize = columns.iter().map(String::len).sum();
    let n = columns.len();
    let mut rows = Vec::new();
    let mut truncated = false;
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next().map_err(classify)? {
        if rows.len() == limits.max_rows {
            truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let v = row.get_ref(i).map_err(classify)?;
            used += match v {
                ValueRef::Null => 1,
                ValueRef::Integer(_) | ValueRef::Real(_) => 8,
                ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
            };
            if used > limits.max_result_bytes {
                return Err(QueryError::TooLarge);
            }
            values.push(match v {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Integer(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        rows.push(values);
    }
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

/// Maps SQLite's error codes to the failures the capability names.
fn classify(e: rusqlite::Error) -> QueryError {
    match e.sqlite_error_code() {
        Some(ErrorCode::OperationInterrupted) => QueryError::Interrupted,
        Some(ErrorCode::TooBig) => QueryError::TooLarge,
        _ => failed(e),
    }
}

#[cfg(test)]
#[path = "sql_sqlite_props.rs"]
mod props;
