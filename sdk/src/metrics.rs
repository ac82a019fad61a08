//! The host's own figures, read-only: who used which tool, how fast and how
//! reliably tools answer, and how the host is doing now.
//!
//! Needs a grant: `[plugins.NAME.grants] metrics = true`. Without it every
//! function returns [`CapabilityError::Denied`]. The host keeps five-minute
//! buckets for 30 days in its data directory, so windows span restarts.
//! Needs a host of 0.1.1 or later.
//!
//! ```
//! use stockade_sdk::metrics::{self, Window};
//!
//! # fn f() -> Result<(), stockade_sdk::CapabilityError> {
//! let report = metrics::performance(Window::LastDay)?;
//! for row in &report.performance {
//!     println!("{}: {} calls, p99 {} ms", row.target, row.calls, row.p99_ms);
//! }
//! let health = metrics::health()?;
//! println!("up {} s, {} sessions", health.uptime_s, health.open_sessions);
//! # Ok(()) }
//! ```

use crate::CapabilityError;
use crate::bindings::stockade::plugin::metrics as wit;

pub use wit::{HostHealth, PerformanceRow, PluginState, Report, UsageRow, Window};

/// Who called what, per subject, in `window` (in [`Report::usage`]), busiest first.
pub fn usage(window: Window) -> Result<Report, CapabilityError> {
    Ok(wit::usage(window)?)
}

/// Latency percentiles, errors, limit hits and denials per tool, resource and
/// prompt in `window` (in [`Report::performance`]), busiest first.
pub fn performance(window: Window) -> Result<Report, CapabilityError> {
    Ok(wit::performance(window)?)
}

/// The host's state now: uptime, load, memory, disk, sessions, plugins.
pub fn health() -> Result<HostHealth, CapabilityError> {
    Ok(wit::health()?)
}

impl Window {
    /// The window for `1h`, `24h`, `7d` or `30d` (the seeds' `timeRange`).
    pub fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "1h" => Window::LastHour,
            "24h" | "1d" => Window::LastDay,
            "7d" | "1w" => Window::LastWeek,
            "30d" => Window::LastMonth,
            _ => return None,
        })
    }
}
