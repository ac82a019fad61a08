//! `data`: read-only queries over the SQL sources the operator grants
//! (`[sql.NAME]` sources, `grants.sql = ["NAME"]`), in the shape the seeds'
//! `query_data` uses: a collection, filters as field/op/value, order, limit and
//! offset. The model never writes SQL: collection and field names are checked
//! against the live schema, and every value is a bound parameter. The host
//! runs each statement read-only, under its deadline and byte cap.
//!
//! SQLite and PostgreSQL sources: the host says which (`sql::engine`), and the
//! plugin speaks that dialect (catalog queries, `?1` or `$1` placeholders; on
//! PostgreSQL, values are cast to the column's type in SQL and columns of types
//! the capability does not return typed are read as text).

use std::collections::BTreeMap;

use stockade_sdk::prelude::*;
use stockade_sdk::serde_json::{self, Map, Value as Json, json};
use stockade_sdk::sql::{self, Rows, Value};

const DEFAULT_LIMIT: u32 = 10;
const MAX_LIMIT: u32 = 100;

/// The source to use: the one named, or the only one granted.
fn source(named: Option<&str>) -> Result<String, ToolError> {
    let granted = sql::sources();
    match named {
        Some(s) if granted.iter().any(|g| g == s) => Ok(s.to_owned()),
        Some(s) => Err(ToolError::invalid_arguments(format!(
            "unknown source `{s}`; granted: {}",
            list_or_none(&granted)
        ))),
        None => match granted.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ToolError::failed(
                "no data source is granted to this plugin: the operator defines one with \
                 `[sql.NAME] sqlite = \"/path/to.db\"` and grants it with `sql = [\"NAME\"]` \
                 under `[plugins.data.grants]`",
            )),
            many => Err(ToolError::invalid_arguments(format!(
                "several sources are granted ({}); name one in `source`",
                many.join(", ")
            ))),
        },
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

fn run(source: &str, statement: &str, params: &[Value]) -> Result<Rows, ToolError> {
    sql::query(source, statement, params).map_err(|e| ToolError::failed(e.to_string()))
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(format!("<{} bytes of binary data>", b.len())),
        Value::Boolean(b) => json!(b),
    }
}

fn to_sql(field: &str, v: &Json) -> Result<Value, ToolError> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Text(s.clone()),
        _ => {
            return Err(ToolError::invalid_arguments(format!(
                "filter on `{field}`: the value must be a string, number, boolean or null"
            )));
        }
    })
}

/// The SQL dialect of a source.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn of(source: &str) -> Dialect {
        match sql::engine(source).as_deref() {
            Some("postgres") => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    /// The placeholder of the `n`th parameter (1-based).
    fn mark(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// Column types the host's PostgreSQL engine returns typed; others are read
/// as text.
fn pg_typed(ty: &str) -> bool {
    let base = ty.split('(').next().unwrap_or(ty).trim();
    matches!(
        base,
        "boolean"
            | "smallint"
            | "integer"
            | "bigint"
            | "real"
            | "double precision"
            | "text"
            | "character varying"
            | "character"
            | "name"
            | "bytea"
            | "oid"
    )
}

/// The tables and views of a source.
fn collections(source: &str) -> Result<Vec<(String, String)>, ToolError> {
    let statement = match Dialect::of(source) {
        Dialect::Sqlite => {
            "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Dialect::Postgres => {
            "SELECT table_name::text, CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END \
             FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
        }
    };
    let rows = run(source, statement, &[])?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| match (&r[0], &r[1]) {
            (Value::Text(n), Value::Text(t)) => Some((n.clone(), t.clone())),
            _ => None,
        })
        .collect())
}

/// A column of a collection.
struct Column {
    name: String,
    ty: String,
    /// The type without its modifiers (`character varying` for
    /// `varchar(10)`, `numeric` for `numeric(6,2)`): what values are cast to,
    /// since a cast to the full type truncates or rounds the value and a
    /// filter would then match more than it says. Empty on SQLite.
    base: String,
    not_null: bool,
    pk: i64,
}

/// The collection's columns; the name must be one of the source's collections.
fn columns(source: &str, collection: &str) -> Result<Vec<Column>, ToolError> {
    let known = collections(source)?;
    if !known.iter().any(|(n, _)| n == collection) {
        return Err(ToolError::invalid_arguments(format!(
            "unknown collection `{collection}` in source `{source}`; collections: {}",
            list_or_none(&known.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
        )));
    }
    let statement = match Dialect::of(source) {
        Dialect::Sqlite => {
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid"
        }
        Dialect::Postgres => {
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
             COALESCE((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
             WHERE k.attnum = a.attnum), 0)::int8, format_type(a.atttypid, NULL) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = current_schema() AND c.relname = $1 \
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        }
    };
    let rows = run(source, statement, &[Value::Text(collection.to_owned())])?;
    Ok(rows
        .rows
        .iter()
        .map(|r| Column {
            name: match &r[0] {
                Value::Text(s) => s.clone(),
                _ => String::new(),
            },
            ty: match &r[1] {
                Value::Text(s) => s.clone(),
                _ => String::new(),
            },
            not_null: matches!(r[2], Value::Integer(1) | Value::Boolean(true)),
            pk: match r[3] {
                Value::Integer(i) => i,
                _ => 0,
            },
            base: match r.get(4) {
                Some(Value::Text(s)) => s.clone(),
                _ => String::new(),
            },
        })
        .collect())
}

/// An identifier quoted for SQL (only ever one the live schema named).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `SELECT <columns> FROM <collection>`: every column, those PostgreSQL would
/// not return typed read as text.
fn select_all(dialect: Dialect, collection: &str, cols: &[Column]) -> String {
    let list = match dialect {
        Dialect::Sqlite => "*".to_owned(),
        Dialect::Postgres => cols
            .iter()
            .map(|c| {
                if pg_typed(&c.ty) {
                    ident(&c.name)
                } else {
                    format!("{}::text AS {}", ident(&c.name), ident(&c.name))
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!("SELECT {list} FROM {}", ident(collection))
}

/// A bound value compared with column `col`. On PostgreSQL the value travels
/// as text and is cast to the column's type without its modifiers in SQL
/// (`$1::date`, `$1::numeric` for `numeric(6,2)`), so any type compares and
/// nothing is truncated or rounded into a match; a value of the wrong shape
/// fails with PostgreSQL's message.
fn compared(
    dialect: Dialect,
    col: &Column,
    v: &Json,
    params: &mut Vec<Value>,
) -> Result<String, ToolError> {
    let n = params.len() + 1;
    match dialect {
        Dialect::Sqlite => params.push(to_sql(&col.name, v)?),
        Dialect::Postgres => params.push(match v {
            Json::Null => Value::Null,
            Json::String(s) => Value::Text(s.clone()),
            Json::Bool(_) | Json::Number(_) => Value::Text(v.to_string()),
            _ => {
                return Err(ToolError::invalid_arguments(format!(
                    "filter on `{}`: the value must be a string, number, boolean or null",
                    col.name
                )));
            }
        }),
    }
    Ok(match dialect {
        Dialect::Sqlite => dialect.mark(n),
        Dialect::Postgres => format!("{}::{}", dialect.mark(n), col.base),
    })
}

fn rows_json(rows: &Rows) -> Vec<Json> {
    rows.rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (c, v) in rows.columns.iter().zip(r) {
                m.insert(c.clone(), to_json(v));
            }
            Json::Object(m)
        })
        .collect()
}

// ---- tools -------------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
struct SourceArgs {
    /// The data source (default: the only one granted).
    #[serde(default)]
    source: Option<String>,
}

fn list_collections(args: SourceArgs, _: &Call) -> Result<Output, ToolError> {
    let names: Vec<String> = match &args.source {
        Some(s) => vec![source(Some(s))?],
        None => {
            let all = sql::sources();
            if all.is_empty() {
                source(None)?;
            }
            all
        }
    };
    let mut out = BTreeMap::new();
    for s in names {
        let list: Vec<Json> = collections(&s)?
            .into_iter()
            .map(|(n, t)| json!({"name": n, "type": t}))
            .collect();
        out.insert(s, list);
    }
    Output::json(&json!({ "sources": out }))
}

#[derive(Deserialize, JsonSchema)]
struct DescribeArgs {
    /// The table or view.
    collection: String,
    /// The data source (default: the only one granted).
    #[serde(default)]
    source: Option<String>,
}

fn describe_collection(args: DescribeArgs, _: &Call) -> Result<Output, ToolError> {
    let src = source(args.source.as_deref())?;
    let cols = columns(&src, &args.collection)?;
    let count = run(
        &src,
        &format!("SELECT count(*) FROM {}", ident(&args.collection)),
        &[],
    )?;
    let mut keys: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
    keys.sort_by_key(|c| c.pk);
    Output::json(&json!({
        "source": src,
        "collection": args.collection,
        "columns": cols.iter().map(|c| json!({
            "name": c.name, "type": c.ty, "nullable": !c.not_null, "primary_key": c.pk > 0,
        })).collect::<Vec<_>>(),
        "primary_key": keys.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "rows": count.rows.first().and_then(|r| r.first()).map(to_json),
    }))
}

/// A comparison.
#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
enum Op {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "like")]
    Like,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "is null")]
    IsNull,
    #[serde(rename = "is not null")]
    IsNotNull,
}

#[derive(Deserialize, JsonSchema)]
struct Filter {
    /// A column of the collection.
    field: String,
    /// The comparison.
    op: Op,
    /// The value (a list for `in`; none for `is null`). `like` uses `%` and `_`.
    #[serde(default)]
    value: Option<Json>,
}

/// Sort direction.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Direction {
    Asc,
    Desc,
}

#[derive(Deserialize, JsonSchema)]
struct QueryArgs {
    /// The table or view to read.
    collection: String,
    /// Conditions, all of which must hold.
    #[serde(default)]
    filters: Vec<Filter>,
    /// A column to sort by.
    #[serde(default)]
    order_by: Option<String>,
    /// The sort direction (default asc).
    #[serde(default)]
    order: Option<Direction>,
    /// Rows to return (default 10, at most 100).
    #[serde(default)]
    limit: Option<u32>,
    /// Rows to skip first (for the next page).
    #[serde(default)]
    offset: Option<u32>,
    /// The data source (default: the only one granted).
    #[serde(default)]
    source: Option<String>,
}

fn query_data(args: QueryArgs, _: &Call) -> Result<Output, ToolError> {
    let src = source(args.source.as_deref())?;
    let dialect = Dialect::of(&src);
    let cols = columns(&src, &args.collection)?;
    let column = |field: &str| -> Result<&Column, ToolError> {
        if let Some(c) = cols.iter().find(|c| c.name == field) {
            Ok(c)
        } else {
            Err(ToolError::invalid_arguments(format!(
                "unknown field `{field}` of `{}`; fields: {}",
                args.collection,
                cols.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let mut clauses = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    for f in &args.filters {
        let column = column(&f.field)?;
        let col = ident(&column.name);
        let needs_value = !matches!(f.op, Op::IsNull | Op::IsNotNull);
        let value = match (&f.value, needs_value) {
            (Some(v), true) => v.clone(),
            (None, true) => {
                return Err(ToolError::invalid_arguments(format!(
                    "filter on `{}` needs a `value`",
                    f.field
                )));
            }
            (_, false) => Json::Null,
        };
        let mut bind = |v: &Json| compared(dialect, column, v, &mut params);
        let clause = match f.op {
            Op::Eq => format!("{col} = {}", bind(&value)?),
            Op::Ne => format!("{col} != {}", bind(&value)?),
            Op::Lt => format!("{col} < {}", bind(&value)?),
            Op::Le => format!("{col} <= {}", bind(&value)?),
            Op::Gt => format!("{col} > {}", bind(&value)?),
            Op::Ge => format!("{col} >= {}", bind(&value)?),
            Op::Like => {
                let pattern = match &value {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                params.push(Value::Text(pattern));
                match dialect {
                    Dialect::Sqlite => format!("{col} LIKE {}", dialect.mark(params.len())),
                    Dialect::Postgres => format!("{col}::text LIKE {}", dialect.mark(params.len())),
                }
            }
            Op::In => {
                let Json::Array(items) = &value else {
                    return Err(ToolError::invalid_arguments(format!(
                        "filter `in` on `{}` needs a list of values",
                        f.field
                    )));
                };
                if items.is_empty() || items.len() > 100 {
                    return Err(ToolError::invalid_arguments("`in` takes 1 to 100 values"));
                }
                let marks = items.iter().map(&mut bind).collect::<Result<Vec<_>, _>>()?;
                format!("{col} IN ({})", marks.join(", "))
            }
            Op::IsNull => format!("{col} IS NULL"),
            Op::IsNotNull => format!("{col} IS NOT NULL"),
        };
        clauses.push(clause);
    }
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ToolError::invalid_arguments(format!(
            "`limit` must be 1 to {MAX_LIMIT}; page with `offset` for more"
        )));
    }
    let offset = args.offset.unwrap_or(0);
    let mut statement = select_all(dialect, &args.collection, &cols);
    if !clauses.is_empty() {
        statement.push_str(&format!(" WHERE {}", clauses.join(" AND ")));
    }
    if let Some(o) = &args.order_by {
        let dir = match args.order.unwrap_or(Direction::Asc) {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        statement.push_str(&format!(" ORDER BY {} {dir}", ident(&column(o)?.name)));
    }
    // One row past the page tells whether there is more.
    statement.push_str(&format!(" LIMIT {} OFFSET {offset}", limit + 1));
    let mut rows = run(&src, &statement, &params)?;
    let more = rows.rows.len() > limit as usize;
    rows.rows.truncate(limit as usize);
    Output::json(&json!({
        "collection": args.collection,
        "rows": rows_json(&rows),
        "count": rows.rows.len(),
        "offset": offset,
        "more": more || rows.truncated,
    }))
}

#[derive(Deserialize, JsonSchema)]
struct GetArgs {
    /// The table.
    collection: String,
    /// The primary key's value.
    id: Json,
    /// The data source (default: the only one granted).
    #[serde(default)]
    source: Option<String>,
}

fn get_record(args: GetArgs, _: &Call) -> Result<Output, ToolError> {
    let src = source(args.source.as_deref())?;
    let dialect = Dialect::of(&src);
    let cols = columns(&src, &args.collection)?;
    let keys: Vec<&Column> = cols.iter().filter(|c| c.pk > 0).collect();
    let key = match keys.as_slice() {
        [one] => one.name.clone(),
        [] if dialect == Dialect::Sqlite => "rowid".to_owned(),
        [] => {
            return Err(ToolError::failed(format!(
                "`{}` has no primary key; use query_data with a filter",
                args.collection
            )));
        }
        _ => {
            return Err(ToolError::failed(format!(
                "`{}` has a composite primary key ({}); use query_data with a filter per key column",
                args.collection,
                keys.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let mut params = Vec::new();
    let mark = match cols.iter().find(|c| c.name == key) {
        Some(c) => compared(dialect, c, &args.id, &mut params)?,
        None => {
            params.push(to_sql(&key, &args.id)?);
            dialect.mark(1)
        }
    };
    let statement = format!(
        "{} WHERE {} = {mark} LIMIT 1",
        select_all(dialect, &args.collection, &cols),
        if key == "rowid" {
            key.clone()
        } else {
            ident(&key)
        }
    );
    let rows = run(&src, &statement, &params)?;
    match rows_json(&rows).into_iter().next() {
        Some(record) => Output::json(&record),
        None => Ok(Output::error(format!(
            "no record in `{}` with {key} = {}",
            args.collection,
            serde_json::to_string(&args.id).unwrap_or_default()
        ))),
    }
}

stockade_sdk::plugin! {
    description: "Read-only queries over the SQL sources the operator grants",
    capabilities: { sql: ["example"] },
    tools: [
        Tool::new("list_collections", "List the tables and views of each granted data source", list_collections).read_only(),
        Tool::new("describe_collection", "Describe a table: its columns, types, primary key and row count", describe_collection).read_only(),
        Tool::new(
            "query_data",
            "Read rows of a table or view: filters (field, op, value; ops =, !=, <, <=, >, >=, like, in, is null, is not null), order_by, limit (default 10, at most 100) and offset. Answers the rows as JSON and whether more exist",
            query_data,
        )
        .read_only(),
        Tool::new("get_record", "Fetch one row of a table by its primary key", get_record).read_only(),
    ],
}
