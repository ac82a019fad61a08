//! The host's figures for Prometheus (`GET /metrics`, text exposition format),
//! in one process-wide registry that other rooms record into, the way they log
//! through `tracing`: this module knows no other room.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mcp_server_operation_duration_seconds` | histogram | `mcp_method_name`, `gen_ai_tool_name`, `error_type` (OpenTelemetry MCP semantic conventions: `mcp.server.operation.duration`) |
//! | `stockade_plugin_operations_total` | counter | `kind` (tool, resource, prompt), `plugin`, `target` (tool or prompt name; empty for resources, whose URIs are unbounded), `outcome` (`ok`, `tool_error`, `failed`, `cancelled`, `limit_<name>`, ...) |
//! | `stockade_capability_denials_total` | counter | `plugin`, `capability` |
//! | `stockade_events_total` | counter | `event`: every audited event (logins, token issues and refreshes, refusals, reuse detection, plugin loads, refusals and removals, config reloads) |
//! | `stockade_audit_write_duration_seconds` | histogram | (a batch of lines written and fsynced) |
//! | `stockade_plugins` | gauge | `state` (`serving`, `refused`), set at scrape time |
//! | `stockade_mcp_sessions` | gauge | set at scrape time |
//! | `stockade_shared_store_refusals_total` | counter | `reason`: what the shared store's relays refused (`unauthenticated_event`, `unsolicited_reply`, `oversized_reply`) |
//!
//! Durations use fixed buckets from 100 µs doubling to ~52 s (20 buckets).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an MCP operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    mcp_method_name: String,
    gen_ai_tool_name: String,
    error_type: String,
}

/// Labels of a plugin operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginOpLabels {
    kind: String,
    plugin: String,
    target: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    plugin: String,
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// The registry and its metrics.
pub struct Prometheus {
    registry: Registry,
    operations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    plugin_ops: Family<PluginOpLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    events: Family<EventLabels, Counter>,
    audit_write: Histogram,
    plugins: Family<StateLabels, Gauge>,
    sessions: Gauge,
    shared_refusals: Family<ReasonLabels, Counter>,
}

static GLOBAL: LazyLock<Prometheus> = LazyLock::new(Prometheus::new);

/// The process-wide registry.
pub fn global() -> &'static Prometheus {
    &GLOBAL
}

/// What the host looks like at scrape time (plugin states, open sessions).
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Plugin files serving.
    pub serving: u64,
    /// Plugin files refused.
    pub refused: u64,
    /// Open MCP sessions on this host.
    pub sessions: u64,
}

impl Prometheus {
    fn new() -> Prometheus {
        let mut registry = Registry::default();
        let operations =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "mcp_server_operation_duration",
            "MCP requests served (OpenTelemetry mcp.server.operation.duration)",
            prometheus_client::registry::Unit::Seconds,
            operations.clone(),
        );
        let plugin_ops = Family::<PluginOpLabels, Counter>::default();
        registry.register(
            "stockade_plugin_operations",
            "Plugin operations (tool calls, resource reads, prompts) by outcome",
            plugin_ops.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "stockade_capability_denials",
            "Capability requests refused to plugins",
            denials.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "stockade_events",
            "Audited events (logins, tokens, refusals, plugin loads, config reloads)",
            events.clone(),
        );
        let audit_write = duration_histogram();
        registry.register_with_unit(
            "stockade_audit_write_duration",
            "Audit log batches written and fsynced",
            prometheus_client::registry::Unit::Seconds,
            audit_write.clone(),
        );
        let plugins = Family::<StateLabels, Gauge>::default();
        registry.register("stockade_plugins", "Plugin files by state", plugins.clone());
        let sessions = Gauge::default();
        registry.register(
            "stockade_mcp_sessions",
            "Open MCP sessions on this host",
            sessions.clone(),
        );
        let shared_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "stockade_shared_store_refusals",
            "Events and relayed replies the shared store refused",
            shared_refusals.clone(),
        );
        Prometheus {
            registry,
            operations,
            plugin_ops,
            denials,
            events,
            audit_write,
            plugins,
            sessions,
            shared_refusals,
        }
    }

    /// Starts timing an MCP operation; see [`Operation::finish`].
    pub fn operation(&'static self, method: &'static str, tool: Option<&str>) -> Operation {
        Operation {
            prom: self,
            method,
            tool: tool.unwrap_or_default().to_owned(),
            started: Instant::now(),
            done: false,
        }
    }

    /// Counts a finished plugin operation.
    pub fn plugin_operation(&self, kind: &str, plugin: &str, target: &str, outcome: &str) {
        self.plugin_ops
            .get_or_create(&PluginOpLabels {
                kind: kind.to_owned(),
                plugin: plugin.to_owned(),
                target: target.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a capability request refused to `plugin` (from the audit log's
    /// `capability_denied` lines).
    pub fn capability_denied(&self, plugin: &str, capability: &str) {
        self.denials
            .get_or_create(&DenialLabels {
                plugin: plugin.to_owned(),
                capability: capability.to_owned(),
            })
            .inc();
    }

    /// Counts an audited event by its name.
    pub fn event(&self, event: &str) {
        self.events
            .get_or_create(&EventLabels {
                event: event.to_owned(),
            })
            .inc();
    }

    /// Counts something the shared store's relays refused (`reason` is one of
    /// a fixed few, never a client's string).
    pub fn shared_refusal(&self, reason: &'static str) {
        self.shared_refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Observes one audit batch's write and fsync.
    pub fn audit_write(&self, took: Duration) {
        self.audit_write.observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges set from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        for (state, n) in [("serving", now.serving), ("refused", now.refused)] {
            self.plugins
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(n as i64);
        }
        self.sessions.set(now.sessions as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// An MCP operation being timed; observed when finished (or, if dropped
/// unfinished, as `error_type="cancelled"`).
pub struct Operation {
    prom: &'static Prometheus,
    method: &'static str,
    tool: String,
    started: Instant,
    done: bool,
}

impl Operation {
    /// Drops the tool name (a name the client made up must not become a label).
    pub fn without_tool(mut self) -> Operation {
        self.tool.clear();
        self
    }

    /// Observes it with `error_type` (`None`: it succeeded).
    pub fn finish(mut self, error_type: Option<&str>) {
        self.observe(error_type.unwrap_or_default());
    }

    fn observe(&mut self, error_type: &str) {
        self.done = true;
        self.prom
            .operations
            .get_or_create(&OperationLabels {
                mcp_method_name: self.method.to_owned(),
                gen_ai_tool_name: std::mem::take(&mut self.tool),
                error_type: error_type.to_owned(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        if !self.done {
            self.observe("cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_events_and_gauges_appear_in_the_exposition() {
        let p: &'static Prometheus = Box::leak(Box::new(Prometheus::new()));
        p.operation("tools/call", Some("greet")).finish(None);
        p.operation("tools/call", Some("greet"))
            .finish(Some("tool_error"));
        drop(p.operation("resources/read", None));
        p.plugin_operation("tool", "template", "greet", "ok");
        p.capability_denied("template", "exec");
        p.capability_denied("template", "exec");
        p.event("login_failed");
        p.audit_write(Duration::from_micros(300));
        let text = p.encode(Snapshot {
            serving: 3,
            refused: 1,
            sessions: 5,
        });
        assert!(text.contains(
            "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"greet\",error_type=\"\"} 1"
        ), "{text}");
        assert!(text.contains("error_type=\"tool_error\"} 1"), "{text}");
        assert!(text.contains("mcp_method_name=\"resources/read\",gen_ai_tool_name=\"\",error_type=\"cancelled\"} 1"), "{text}");
        assert!(text.contains("stockade_plugin_operations_total{kind=\"tool\",plugin=\"template\",target=\"greet\",outcome=\"ok\"} 1"), "{text}");
        assert!(
            text.contains(
                "stockade_capability_denials_total{plugin=\"template\",capability=\"exec\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("stockade_events_total{event=\"login_failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stockade_audit_write_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("stockade_plugins{state=\"refused\"} 1"),
            "{text}"
        );
        assert!(text.contains("stockade_mcp_sessions 5"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
