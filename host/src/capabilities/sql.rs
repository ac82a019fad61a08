//! `stockade:plugin/sql`: read-only queries on named data sources.
//!
//! Not granted to any plugin yet: every query is denied with the config key that
//! will grant it.

use crate::bindings::sql::{Host, Rows, Value};
use crate::bindings::types::CapabilityError;
use crate::runtime::CallState;

impl Host for CallState {
    async fn sources(&mut self) -> Vec<String> {
        Vec::new()
    }

    async fn query(
        &mut self,
        source: String,
        _statement: String,
        _params: Vec<Value>,
    ) -> Result<Rows, CapabilityError> {
        Err(CapabilityError::Denied(self.cx.denied(
            &format!("the SQL source `{source}`"),
            "grants.sql",
        )))
    }
}
