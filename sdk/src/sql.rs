//! Read-only SQL queries on data sources the operator names.
//!
//! Needs a grant per source (`[plugins.NAME.grants] sql = ["metrics"]`). Every
//! query runs in a read-only transaction; statements that would write are refused.
//!
//! ```
//! use stockade_sdk::sql::{self, Value};
//!
//! # fn f() -> Result<(), stockade_sdk::CapabilityError> {
//! let rows = sql::query("metrics", "SELECT host, load FROM load WHERE load > ?1", &[0.5.into()])?;
//! for row in &rows.rows {
//!     if let [Value::Text(host), Value::Real(load)] = &row[..] {
//!         println!("{host}: {load}");
//!     }
//! }
//! # Ok(()) }
//! ```

use crate::CapabilityError;
use crate::bindings::stockade::plugin::sql as wit;

pub use wit::{Rows, Value};

/// The names of the data sources granted to this plugin.
pub fn sources() -> Vec<String> {
    wit::sources()
}

/// The engine behind a granted source, `sqlite` or `postgres`; `None` when the
/// source is not granted. Needs a host of 0.1.1 or later.
pub fn engine(source: &str) -> Option<String> {
    wit::engine(source)
}

/// Runs `statement` on `source` with positional `params` (`?1` / `$1` placeholders).
pub fn query(source: &str, statement: &str, params: &[Value]) -> Result<Rows, CapabilityError> {
    Ok(wit::query(source, statement, params)?)
}

impl Rows {
    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Integer(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::Integer(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Real(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Boolean(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}
