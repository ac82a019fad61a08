//! Log messages to the MCP client of the current call (MCP `notifications/message`).
//!
//! Always available. The client sees messages at or above the level it asked
//! for; the host also writes them to its own log, tagged with the plugin and
//! tool, and caps how many bytes one call may log.
//!
//! ```
//! # fn f() {
//! stockade_sdk::log::info("starting the scan");
//! stockade_sdk::log::warning(format!("{} files skipped", 3));
//! # }
//! ```

use crate::bindings::stockade::plugin::log as wit;
pub use crate::bindings::stockade::plugin::log::Level;

/// Logs `message` at `level`, naming the component that logs (`logger`) if you like.
pub fn log(level: Level, logger: Option<&str>, message: impl AsRef<str>) {
    wit::log(level, logger, message.as_ref());
}

/// Logs detailed debugging information.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, None, message);
}

/// Logs routine information.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, None, message);
}

/// Logs a normal but significant event.
pub fn notice(message: impl AsRef<str>) {
    log(Level::Notice, None, message);
}

/// Logs a warning.
pub fn warning(message: impl AsRef<str>) {
    log(Level::Warning, None, message);
}

/// Logs an error.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, None, message);
}
