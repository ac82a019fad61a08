//! Report the progress of the current tool call (MCP `notifications/progress`).
//!
//! Always available. When the client did not ask for progress, reports are
//! accepted and dropped.
//!
//! ```
//! # fn f() {
//! for step in 1..=3 {
//!     stockade_sdk::progress::report(step as f64, Some(3.0), Some("working"));
//! }
//! # }
//! ```

use crate::bindings::stockade::plugin::progress as wit;

/// Reports `progress` so far, out of `total` when known, with an optional message.
/// `progress` must increase from one report to the next; the host drops reports
/// that do not.
pub fn report(progress: f64, total: Option<f64>, message: Option<&str>) {
    wit::report(progress, total, message);
}
