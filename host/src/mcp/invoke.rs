//! Running one plugin operation for a request: its link to the client, its
//! stopping on cancellation or disconnection, and its audit record.

use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::era::Era;
use super::mrtr::Round;
use super::{McpLink, ReplyRoute, StockadeMcp, client_gone, cut_off};
use crate::audit::{AuditEvent, ToolCallRecord};
use crate::call::CallContext;
use crate::plugins::Plugin;
use crate::runtime::{CallFailure, Op};

/// How long a call stopped because its client went away waits for the
/// client's cancellation of it, to audit which of the two it was.
const CANCEL_AFTER_DISCONNECT: std::time::Duration = std::time::Duration::from_millis(200);

impl StockadeMcp {
    /// Runs `op` on `plugin` for the request `rq`, stopping it if the client
    /// cancels the request, and flushing its notifications before returning.
    pub(super) async fn run(
        &self,
        plugin: &Arc<Plugin>,
        tool: Option<&str>,
        op: Op<'_>,
        rq: &RequestContext<RoleServer>,
        log_level: Arc<AtomicU8>,
        round: Option<Arc<Round>>,
    ) -> crate::runtime::CallReport {
        let started = std::time::Instant::now();
        let route = self.shared.shared_store.get().and_then(|(store, host)| {
            let session = rq
                .extensions
                .get::<axum::http::request::Parts>()?
                .headers
                .get("mcp-session-id")?
                .to_str()
                .ok()?;
            Some(ReplyRoute {
                store: store.clone(),
                host: host.clone(),
                session: session.to_owned(),
            })
        });
        let link = Arc::new(
            McpLink::new(
                rq.peer.clone(),
                rq.meta.get_progress_token(),
                log_level,
                plugin.clone(),
                self.shared.sessions.clone(),
            )
            .with_route(route)
            .with_round(round.clone()),
        );
        let cx = CallContext {
            plugin: plugin.name.clone(),
            tool: tool.map(str::to_owned),
            link: Some(link.clone()),
            notify_budget: (plugin.policy.limits.max_log_kib as usize) << 10,
            notify_dropped: 0,
            grants: plugin.policy.grants.clone(),
            sql: plugin.policy.sql.clone(),
            audit: Some(self.shared.audit.clone()),
            max_result_kib: plugin.policy.limits.max_result_kib,
            metrics: Some(self.shared.metrics.clone()),
            denial_count: Default::default(),
        };
        let gone = client_gone(rq);
        let cut = cut_off(rq);
        let stopped = |failure| crate::runtime::CallReport::stopped(failure, started.elapsed());
        // Dropping the invocation stops the guest (or gives up its queue place).
        // A cancelled request also loses its stream: look at the cancellation first
        // so the audit says `cancelled` when the client asked for it.
        let report = tokio::select! {
            biased;
            () = rq.ct.cancelled() => return stopped(CallFailure::Cancelled),
            () = cut.cancelled() => return stopped(CallFailure::Shutdown),
            // A 2026-07-28 call asked its client something nobody answered
            // yet: it stops here and the handler answers `input_required`.
            () = async {
                match &round {
                    Some(r) => r.suspended().await,
                    None => std::future::pending().await,
                }
            } => return stopped(CallFailure::Cancelled),
            r = self.shared.runtime.invoke(&plugin.code, &plugin.policy, op, cx) => r,
            () = gone.cancelled() => {
                // The guest is stopped (its invocation dropped). A client that
                // cancels also drops the request's stream, and the two may
                // arrive in either order: a cancellation that follows within
                // moments is what the client asked for.
                let asked = tokio::time::timeout(CANCEL_AFTER_DISCONNECT, rq.ct.cancelled()).await;
                if asked.is_ok() {
                    return stopped(CallFailure::Cancelled);
                }
                tracing::info!("client went away; call stopped");
                return stopped(CallFailure::Disconnected);
            }
        };
        link.flush().await;
        if !report.stderr.is_empty() {
            tracing::debug!(stderr = %report.stderr, "plugin stderr");
        }
        // Every call is in the audit log; the operator's log gets the failures
        // (at the default level) and the rest at debug.
        match &report.outcome {
            Ok(_) => tracing::debug!(
                fuel = report.fuel_used,
                duration_us = report.duration.as_micros() as u64,
                dropped_notifications = report.notify_dropped,
                "plugin call finished"
            ),
            Err(f) => tracing::info!(
                fuel = report.fuel_used,
                duration_us = report.duration.as_micros() as u64,
                dropped_notifications = report.notify_dropped,
                outcome = %f,
                "plugin call failed"
            ),
        }
        report
    }
}

impl StockadeMcp {
    /// Writes the audit record of a plugin operation. The record is on disk
    /// before the client sees the answer; without it, the plugin's output is
    /// withheld (the audit log fails closed).
    ///
    /// The figures count the operation under `metered` when given (a resource
    /// read under its plugin's template, not the client's URI: a caller must
    /// not grow `metrics.db` one URI at a time), else under its target.
    /// The minimum level of the log notifications a call of this request
    /// sends: the session's (`logging/setLevel`) for a legacy request, the
    /// request's own `_meta` level for a modern one (none when it names none;
    /// `-32602` when it names something that is not a level).
    pub(super) fn log_level_for(
        &self,
        era: &Era,
        rq: &RequestContext<RoleServer>,
    ) -> Result<Arc<AtomicU8>, ErrorData> {
        if era.modern {
            Ok(Arc::new(AtomicU8::new(super::era::request_log_level(rq)?)))
        } else {
            Ok(self.log_level.clone())
        }
    }

    pub(super) async fn record(
        &self,
        record: ToolCallRecord,
        denials: u32,
        metered: Option<&str>,
        what: impl FnOnce() -> String,
    ) -> Result<(), ErrorData> {
        self.shared.metrics.observe(&crate::metrics::Observation {
            kind: record.kind,
            plugin: &record.plugin,
            target: metered.unwrap_or(&record.target),
            subject: record.subject.as_deref(),
            outcome: record.outcome,
            limit: record.limit,
            denials,
            duration: std::time::Duration::from_micros(record.duration_us),
        });
        if let Err(e) = self
            .shared
            .audit
            .record(AuditEvent::ToolCall(Box::new(record)))
            .await
        {
            tracing::error!("audit: {e}; the result of {} is withheld", what());
            return Err(ErrorData::internal_error(
                format!("{e}; the call's result is withheld"),
                None,
            ));
        }
        Ok(())
    }
}
