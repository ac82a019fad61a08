//! The host side of every capability a plugin can import, one module each.
//!
//! Each capability is deny-by-default: without the operator's grant a call returns
//! a typed `denied` error (never a trap) whose message names the plugin, the
//! capability and the config key that would grant it. Only this module reaches the
//! outside world on a guest's behalf.
//!
//! A capability talks to the MCP client of the current call through [`ClientLink`],
//! which the MCP layer implements: capabilities never import rmcp.

pub mod client;
pub mod exec;
pub mod http;
pub mod log;
pub mod progress;
pub mod sql;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::CallState;

/// Severity of a log message sent to the client (MCP `LoggingLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

/// The channel from a running call back to its MCP client.
pub trait ClientLink: Send + Sync {
    /// Sends a log message (dropped if below the session's level).
    fn log(&self, level: LogLevel, logger: Option<String>, message: String);
    /// Sends a progress notification, if the client asked for progress.
    fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>);
}

/// What one call's capabilities know: who is calling what, and the budgets left.
pub struct CallContext {
    /// The plugin's name (its file name without `.wasm`).
    pub plugin: String,
    /// The tool being called, if this is a tool call.
    pub tool: Option<String>,
    /// The client of this call; `None` while the host itself talks to the plugin
    /// (loading it, listing its tools).
    pub link: Option<Arc<dyn ClientLink>>,
    /// Bytes of log and progress messages this call may still send.
    pub notify_budget: usize,
    /// Messages dropped because the budget ran out.
    pub notify_dropped: u64,
}

impl CallContext {
    /// A context for the host's own calls into a plugin (no client, no budget).
    pub fn internal(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            tool: None,
            link: None,
            notify_budget: 0,
            notify_dropped: 0,
        }
    }

    /// Takes `bytes` from the notification budget; false (and the message is
    /// counted as dropped) when it does not fit.
    pub(crate) fn spend_notify(&mut self, bytes: usize) -> bool {
        if bytes <= self.notify_budget {
            self.notify_budget -= bytes;
            true
        } else {
            self.notify_budget = 0;
            self.notify_dropped += 1;
            false
        }
    }

    /// The message for a capability the operator has not granted.
    pub fn denied(&self, capability: &str, config_key: &str) -> String {
        format!(
            "plugin `{}` may not use {capability}: the operator has not granted it \
             (grant it with `{config_key}` under `[plugins.{}]` in the host config)",
            self.plugin, self.plugin
        )
    }
}

/// Links every Stockade capability interface (not WASI) into `linker`.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use crate::bindings::stockade::plugin as p;
    p::types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    p::log::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    p::progress::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    p::client::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    p::exec::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    p::sql::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    Ok(())
}

impl crate::bindings::types::Host for CallState {}
