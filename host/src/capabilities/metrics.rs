//! `stockade:plugin/metrics`: the host's own usage, performance and health
//! figures, read-only, for plugins granted `metrics = true`.
//!
//! Reports read `<data>/metrics.db` on the blocking pool; nothing here writes.

use crate::bindings::metrics::{
    Host, HostHealth, PerformanceRow, PluginState, Report, UsageRow, Window,
};
use crate::bindings::types::CapabilityError;
use crate::call::CallContext;
use crate::metrics::{self as m, Metrics};

impl CallContext {
    /// The figures, if the operator granted them; the denial otherwise.
    async fn metrics_granted(&self) -> Result<Metrics, CapabilityError> {
        match (&self.metrics, self.grants.metrics) {
            (Some(metrics), true) => Ok(metrics.clone()),
            _ => {
                let msg = self.denied("the host's metrics", "metrics = true");
                Err(self.deny("metrics", msg).await)
            }
        }
    }

    async fn report(&self, window: Window, usage: bool) -> Result<Report, CapabilityError> {
        let metrics = self.metrics_granted().await?;
        let window = match window {
            Window::LastHour => m::Window::Hour,
            Window::LastDay => m::Window::Day,
            Window::LastWeek => m::Window::Week,
            Window::LastMonth => m::Window::Month,
        };
        let report = metrics.report_everywhere(window).await.map_err(|e| {
            tracing::warn!("metrics: {e}");
            CapabilityError::Failed("the host's metrics database cannot be read now".into())
        })?;
        Ok(Report {
            since_ms: report.since_ms,
            data_since_ms: report.data_since_ms,
            usage: if usage {
                report.usage.into_iter().map(usage_row).collect()
            } else {
                Vec::new()
            },
            performance: if usage {
                Vec::new()
            } else {
                report
                    .performance
                    .into_iter()
                    .map(performance_row)
                    .collect()
            },
        })
    }
}

fn usage_row(u: m::UsageRow) -> UsageRow {
    UsageRow {
        kind: u.kind,
        plugin: u.plugin,
        target: u.target,
        subject: u.subject,
        calls: u.calls,
        errors: u.errors,
    }
}

fn performance_row(p: m::PerformanceRow) -> PerformanceRow {
    PerformanceRow {
        kind: p.kind,
        plugin: p.plugin,
        target: p.target,
        calls: p.calls,
        errors: p.errors,
        limit_hits: p.limit_hits,
        denials: p.denials,
        cancelled: p.cancelled,
        mean_ms: p.mean_ms,
        p50_ms: p.p50_ms,
        p95_ms: p.p95_ms,
        p99_ms: p.p99_ms,
        max_ms: p.max_ms,
    }
}

impl Host for CallContext {
    async fn usage(&mut self, window: Window) -> Result<Report, CapabilityError> {
        self.report(window, true).await
    }

    async fn performance(&mut self, window: Window) -> Result<Report, CapabilityError> {
        self.report(window, false).await
    }

    async fn health(&mut self) -> Result<HostHealth, CapabilityError> {
        let metrics = self.metrics_granted().await?;
        let h = tokio::task::spawn_blocking(move || metrics.health())
            .await
            .map_err(|e| CapabilityError::Failed(format!("metrics: {e}")))?;
        Ok(HostHealth {
            version: h.version.to_owned(),
            uptime_s: h.uptime.as_secs(),
            load: h.load,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            host_rss_bytes: h.host_rss_bytes,
            disk_total_bytes: h.disk_total_bytes,
            disk_free_bytes: h.disk_free_bytes,
            open_sessions: h.view.open_sessions,
            last_reload_ms: h.view.last_reload_ms,
            plugins: h
                .view
                .plugins
                .into_iter()
                .map(|p| PluginState {
                    name: p.name,
                    state: p.state.to_owned(),
                    reason: p.reason,
                    version: p.version,
                    tools: p.tools,
                    since_ms: p.since_ms,
                })
                .collect(),
        })
    }
}
