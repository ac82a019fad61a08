//! The per-call state the capabilities work on: [`CallContext`] (who calls what,
//! with which grants and budgets) and [`ClientLink`] (the way back to the call's
//! MCP client). `runtime` keeps a `CallContext` in each call's store and links
//! every capability to it; `capabilities` implement their WIT interfaces on it.
//! Neither of the two imports the other's per-call types from anywhere else.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::audit::{Audit, AuditEvent};
use crate::bindings::types::CapabilityError;
use crate::config::{Grants, SqlSource};

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

/// A request to the client failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The client did not declare the capability.
    #[error("the connected client does not support {0}")]
    Unsupported(&'static str),
    /// The client answered with an error, or the answer did not parse.
    #[error("{0}")]
    Failed(String),
}

/// A future returned by [`ClientLink`] requests.
pub type LinkFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, LinkError>> + Send>>;

/// The channel from a running call back to its MCP client. Requests carry MCP
/// JSON (revision 2025-11-25), so capabilities never depend on rmcp's types.
pub trait ClientLink: Send + Sync {
    /// Sends a log message (dropped if below the session's level).
    fn log(&self, level: LogLevel, logger: Option<String>, message: String);
    /// Sends a progress notification, if the client asked for progress.
    fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>);
    /// Sends `sampling/createMessage` with these params; returns the result.
    fn create_message(&self, params: serde_json::Value) -> LinkFuture;
    /// Sends `elicitation/create` with these params; returns the result.
    fn elicit(&self, params: serde_json::Value) -> LinkFuture;
    /// Tells the sessions subscribed to `uri` that it changed, if it is one of
    /// the calling plugin's resources; false (and nothing sent) otherwise.
    fn resource_updated(&self, uri: String) -> bool;
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
    /// What the operator granted the plugin.
    pub grants: Arc<Grants>,
    /// The SQL sources the plugin is granted, by name.
    pub sql: Arc<BTreeMap<String, SqlSource>>,
    /// Where denials are recorded (`None` for the host's own calls).
    pub audit: Option<Audit>,
    /// The plugin's `max_result_kib`: what a capability may hand back to the
    /// guest in one answer (an SQL result, ...) is bounded by it too.
    pub max_result_kib: u32,
    /// The host's figures, for the `metrics` capability (`None` for the host's
    /// own calls).
    pub metrics: Option<crate::metrics::Metrics>,
    /// Capability requests refused so far in this call.
    pub denial_count: std::sync::atomic::AtomicU32,
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
            grants: Arc::default(),
            sql: Arc::default(),
            max_result_kib: crate::config::Limits::default().max_result_kib,
            audit: None,
            metrics: None,
            denial_count: Default::default(),
        }
    }

    /// Records a denial (log and audit) and returns the typed error for the guest.
    pub(crate) async fn deny(&self, capability: &str, message: String) -> CapabilityError {
        tracing::warn!(plugin = %self.plugin, tool = self.tool.as_deref(), capability, "denied: {message}");
        self.denial_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(audit) = &self.audit {
            audit
                .note(AuditEvent::CapabilityDenied {
                    plugin: self.plugin.clone(),
                    tool: self.tool.clone(),
                    capability: capability.to_owned(),
                    detail: message.clone(),
                })
                .await;
        }
        CapabilityError::Denied(message)
    }

    /// Takes what a notification costs the client from the notification budget:
    /// its text fields as they go on the wire (JSON-escaped) plus the fixed
    /// envelope every message carries, so many tiny messages cost what they
    /// really send. False (and the message is counted as dropped) when it does
    /// not fit.
    pub(crate) fn spend_notify(&mut self, fields: &[Option<&str>]) -> bool {
        let bytes =
            NOTIFICATION_ENVELOPE + fields.iter().flatten().map(|f| json_len(f)).sum::<usize>();
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
        if config_key.starts_with("[[") {
            format!(
                "plugin `{}` may not use {capability}: the operator has not granted it \
                 (grant it with `{config_key}` in the host config)",
                self.plugin
            )
        } else {
            format!(
                "plugin `{}` may not use {capability}: the operator has not granted it \
                 (grant it with `{config_key}` under `[plugins.{}]` in the host config)",
                self.plugin, self.plugin
            )
        }
    }
}

/// Bytes of a log or progress notification besides its text: the JSON-RPC
/// envelope, method, level or progress numbers, and the SSE framing.
pub(crate) const NOTIFICATION_ENVELOPE: usize = 160;

/// The length of `s` as a JSON string body (escapes included).
pub(crate) fn json_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    /// Issue 11.8a: tiny messages cost what they send, not just their text:
    /// 16,384 four-byte messages used to pass a 256 KiB budget whole (1.8 MB on
    /// the wire); now about 1,600 do.
    #[test]
    fn the_notification_budget_counts_bytes_sent() {
        let mut cx = CallContext::internal("p");
        cx.notify_budget = 256 << 10;
        let sent = (0..16_384)
            .filter(|_| cx.spend_notify(&[Some("abcd")]))
            .count();
        assert_eq!(sent, (256 << 10) / (NOTIFICATION_ENVELOPE + 4));
        assert_eq!(cx.notify_dropped, 16_384 - sent as u64);
        // Escapes count as sent.
        assert_eq!(json_len("a\"\n\u{1}"), 1 + 2 + 2 + 6);
    }
}
