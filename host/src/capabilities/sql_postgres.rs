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
//! - **Bounded before it arrives.** A query's result is bounded by the
//!   server, not after the host has received it: the statement is described
//!   first, then run wrapped (`SELECT ... FROM (statement) AS q(c1, ...) LIMIT
//!   max_rows + 1`) so that every value of a variable-size type is withheld by
//!   PostgreSQL when it alone passes the byte cap, and each row carries its
//!   size; the host stops at the first row past the cap. A 60 MB value never
//!   crosses the link for a 64 KiB cap. (`EXPLAIN` and `SHOW` cannot be
//!   wrapped; their output is the server's, not the data's.)
//! - **No powerful role.** A query on a source whose role is a superuser or
//!   may signal other backends or touch the server's files is refused before
//!   it runs (it would make a reading statement reach past the data).
//! - **Nothing outlives the call.** After the transaction is rolled back,
//!   session-level advisory locks the statement took are released
//!   (`pg_advisory_unlock_all()`); a connection that cannot be reset is closed.
//! - **Bounded workers.** A query holds one of the host-wide SQL worker slots
//!   (shared with SQLite) while it runs.
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

/// Roles whose members reach past the database's data from a reading
/// statement: kill or cancel other sessions, read or write the server's
/// files, run programs.
const POWERFUL_ROLES: &[&str] = &[
    "pg_signal_backend",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
];

/// Refuses a source whose role is a superuser or a member of one of
/// [`POWERFUL_ROLES`]: a "read-only" grant must not let a plugin terminate
/// other sessions (`pg_terminate_backend`) or read the server's files
/// (`pg_read_file`) with a `SELECT`. Checked in every query's transaction, so
/// a role granted more later is refused from then on.
fn refuse_powerful_role(superuser: bool, powerful: &[String]) -> Result<(), QueryError> {
    let why = if superuser {
        "is a superuser".to_owned()
    } else if !powerful.is_empty() {
        format!("is a member of {}", powerful.join(", "))
    } else {
        return Ok(());
    };
    Err(QueryError::Failed(format!(
        "the source's database role {why}, which reaches past the data (other sessions, the \
         server's files): give the source a role that can only SELECT (see the data plugin's \
         README)"
    )))
}

/// The statement's first word, upper case, as PostgreSQL reads it: after
/// whitespace, opening parentheses and comments, in any order. PostgreSQL's
/// comments differ from SQLite's ([`super::after_comments`]): block comments
/// nest and a `--` comment also ends at a carriage return, so reading them the
/// SQLite way would take `/* /* */ SELECT */ INSERT ...` or
/// `-- x\rLOCK\nTABLE t ...` for reading statements.
pub(super) fn first_keyword(statement: &str) -> String {
    let mut s = statement;
    let rest = loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = t.strip_prefix("--") {
            s = comment.find(['\n', '\r']).map_or("", |i| &comment[i..]);
        } else if t.starts_with("/*") {
            s = &t[block_comment_len(t.as_bytes())..];
        } else {
            break t;
        }
    };
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// The length of the block comment `b` starts with (`/*`), nested comments
/// included; all of `b` when it is not closed.
fn block_comment_len(b: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Whether `c` may continue an identifier: letters, digits, `_`, `$` and any
/// byte of a non-ASCII character (PostgreSQL's `ident_cont`).
fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
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

/// Value `i` of `row`, and its size; `column` names it in errors.
fn value(row: &PgRow, i: usize, column: &str) -> Result<(Value, usize), QueryError> {
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
    let conn = tokio::time::timeout_at(deadline, pool.acquire())
        .await
        .map_err(|_| QueryError::Timeout)?
        .map_err(failed)?;
    let mut conn = ResetOnDrop(Some(conn));
    let result = run(conn.get(), statement, &keyword, params, limits).await;
    // Session-level advisory locks survive a rollback: release them before
    // the connection serves anyone else, or close it.
    let reset = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT pg_advisory_unlock_all()").execute(conn.get()),
    )
    .await;
    if matches!(reset, Ok(Ok(_))) {
        // Reset: back to the pool.
        drop(conn.0.take());
    } else {
        tracing::warn!("sql: a PostgreSQL connection could not be reset; closing it");
    }
    result
}

/// A pooled connection that is closed, not returned to the pool, unless it
/// was reset (taken out of the guard): a call dropped mid-query (cancelled,
/// past its deadline) must not hand its session's locks to the next query.
struct ResetOnDrop(Option<sqlx::pool::PoolConnection<sqlx::Postgres>>);

impl ResetOnDrop {
    fn get(&mut self) -> &mut sqlx::PgConnection {
        self.0
            .as_mut()
            .expect("the connection is held until dropped")
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            tracing::debug!("sql: closing a PostgreSQL connection that was not reset");
            let conn = conn.detach();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = conn.close().await;
                });
            }
        }
    }
}

/// The query itself, in a read-only transaction on `conn` that is rolled back.
async fn run(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    keyword: &str,
    params: Vec<Value>,
    limits: QueryLimits,
) -> Result<Rows, QueryError> {
    let mut tx = conn
        .begin_with("BEGIN TRANSACTION READ ONLY")
        .await
        .map_err(failed)?;
    let left = limits.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(QueryError::Timeout);
    }
    // One round trip: the deadline (`SET LOCAL`) and who the role is.
    let (superuser, powerful, _): (bool, Vec<String>, String) = sqlx::query_as(
        "SELECT r.rolsuper, ARRAY(SELECT p FROM unnest($2::text[]) AS p \
         WHERE pg_has_role(current_user, p, 'MEMBER')), \
         set_config('statement_timeout', $1, true) \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .bind(left.as_millis().max(1).to_string())
    .bind(POWERFUL_ROLES)
    .fetch_one(&mut *tx)
    .await
    .map_err(failed)?;
    refuse_powerful_role(superuser, &powerful)?;
    // The columns first (name and type), then the statement wrapped so the
    // server withholds what would pass the cap.
    let described = (&mut *tx).describe(statement).await.map_err(failed)?;
    let columns: Vec<(String, String)> = described
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
        .collect();
    let wrapped = wrap(statement, &columns, keyword, limits);
    let mut q = sqlx::query(wrapped.as_deref().unwrap_or(statement));
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
    out.columns = columns.iter().map(|(name, _)| name.clone()).collect();
    let data_columns = columns.len();
    let mut bytes = 0usize;
    {
        let mut stream = q.fetch(&mut *tx);
        while let Some(row) = stream.try_next().await.map_err(failed)? {
            if out.rows.len() == limits.max_rows {
                out.truncated = true;
                break;
            }
            if wrapped.is_some() {
                // The row's size as the server measured it, before any value
                // of it is read.
                let size: i64 = row.try_get(data_columns).map_err(failed)?;
                if bytes.saturating_add(size.max(0) as usize) > limits.max_result_bytes {
                    return Err(QueryError::TooLarge);
                }
            }
            let mut values = Vec::with_capacity(data_columns);
            for i in 0..data_columns.min(row.len()) {
                let (v, n) = value(&row, i, &out.columns[i])?;
                bytes += n + 8;
                values.push(v);
            }
            if bytes > limits.max_result_bytes {
                return Err(QueryError::TooLarge);
            }
            out.rows.push(values);
        }
    }
    let _ = tx.rollback().await;
    Ok(out)
}

/// `statement` up to its first `;` outside literals, quoted identifiers and
/// comments (a statement is one statement, so what follows is only space or
/// comments), so it can be put in parentheses. A statement this misreads
/// fails as a syntax error: never unbounded.
pub(super) fn up_to_semicolon(statement: &str) -> &str {
    let b = statement.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return &statement[..i],
            b'-' if b.get(i + 1) == Some(&b'-') => {
                // To the end of the line: a newline or a carriage return.
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                i += block_comment_len(&b[i..]);
                continue;
            }
            b'\'' => {
                // E'...' strings take backslash escapes; '' is a quote in both.
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !ident_byte(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
            }
            b'$' if !b.get(i + 1).is_some_and(u8::is_ascii_digit)
                && (i == 0 || !ident_byte(b[i - 1])) =>
            {
                // A dollar quote: $tag$ ... $tag$ (tag may be empty; it is
                // identifier-like, non-ASCII letters included).
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|&c| !(ident_byte(c) && c != b'$'))
                    .map(|p| i + 1 + p);
                if let Some(end) = tag_end.filter(|&e| b[e] == b'$') {
                    let tag = &statement[i..=end];
                    match statement[end + 1..].find(tag) {
                        Some(close) => i = end + 1 + close + tag.len() - 1,
                        None => return statement,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    statement
}

/// Types whose values have a small fixed size: returned as they are.
const FIXED_SIZE: &[&str] = &["BOOL", "INT2", "INT4", "INT8", "OID", "FLOAT4", "FLOAT8"];

/// `statement` wrapped so the server bounds its result: every value of a
/// variable-size type that alone passes the byte cap is withheld (NULL), one
/// more column holds the row's size in bytes, and at most `max_rows + 1` rows
/// come back. `None` for statements that cannot be a subquery (`EXPLAIN`,
/// `SHOW`) or that have no columns.
fn wrap(
    statement: &str,
    columns: &[(String, String)],
    keyword: &str,
    limits: QueryLimits,
) -> Option<String> {
    if columns.is_empty() || matches!(keyword, "EXPLAIN" | "SHOW") {
        return None;
    }
    let inner = up_to_semicolon(statement);
    let cap = limits.max_result_bytes;
    let mut select = Vec::with_capacity(columns.len() + 1);
    let mut sizes = Vec::new();
    for (i, (_, ty)) in columns.iter().enumerate() {
        let c = format!("stockade_q.c{i}");
        if FIXED_SIZE.contains(&ty.as_str()) {
            select.push(c);
            sizes.push("8".to_owned());
            continue;
        }
        // bytea is measured as bytes; anything else as its text form.
        let len = if ty == "BYTEA" {
            format!("octet_length({c})")
        } else {
            format!("octet_length({c}::text)")
        };
        select.push(format!("CASE WHEN {len} <= {cap} THEN {c} END"));
        sizes.push(format!("COALESCE({len}, 0)::int8 + 8"));
    }
    select.push(format!("({})::int8", sizes.join(" + ")));
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    // The newline ends a trailing `--` comment of the statement.
    Some(format!(
        "SELECT {} FROM (\n{inner}\n) AS stockade_q({}) LIMIT {}",
        select.join(", "),
        aliases.join(", "),
        limits.max_rows.saturating_add(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::{first_keyword, up_to_semicolon};

    #[test]
    fn the_statement_ends_at_its_first_semicolon_outside_quotes_and_comments() {
        for (statement, body) in [
            ("SELECT 1", "SELECT 1"),
            ("SELECT 1;", "SELECT 1"),
            ("SELECT 1 ; -- done", "SELECT 1 "),
            ("SELECT ';' AS s; ", "SELECT ';' AS s"),
            ("SELECT 'it''s;' ;", "SELECT 'it''s;' "),
            ("SELECT E'a\\';b' ;", "SELECT E'a\\';b' "),
            ("SELECT \"a;b\" FROM t;", "SELECT \"a;b\" FROM t"),
            ("SELECT 1 -- a ; comment\n;", "SELECT 1 -- a ; comment\n"),
            (
                "SELECT /* a /* nested ; */ ; */ 1;",
                "SELECT /* a /* nested ; */ ; */ 1",
            ),
            ("SELECT $$a;b$$;", "SELECT $$a;b$$"),
            ("SELECT $x$a;$$;b$x$ ;", "SELECT $x$a;$$;b$x$ "),
            ("SELECT $1::int;", "SELECT $1::int"),
            ("SELECT 'unterminated;", "SELECT 'unterminated;"),
        ] {
            assert_eq!(up_to_semicolon(statement), body, "{statement}");
        }
    }

    #[test]
    fn the_first_keyword_skips_comments_and_parentheses() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert_eq!(first_keyword("-- hi\n/* x */ (SELECT 1)"), "SELECT");
        assert_eq!(first_keyword("/* unterminated"), "");
        assert_eq!(first_keyword("insert into t values (1)"), "INSERT");
        assert_eq!(first_keyword("COPY (SELECT 1) TO PROGRAM 'id'"), "COPY");
    }
}

#[cfg(test)]
#[path = "sql_postgres_props.rs"]
mod props;
