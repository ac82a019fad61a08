//! `metrics`: `get_metrics` in the seeds' shape (`metricType`: usage,
//! performance or health; `timeRange`: 1h, 24h, 7d or 30d), answered from the
//! host's own figures through the `metrics` capability (`grants.metrics`):
//!
//! - usage: operations per tool, per plugin and per subject;
//! - performance: latency mean/p50/p95/p99/max and error, limit-hit, denial
//!   and cancellation counts per tool (and resource and prompt);
//! - health: uptime, load, memory, the data directory's disk, open sessions,
//!   the last reload and every plugin's state.
//!
//! The answer is JSON text, as the seeds' servers return it.

use std::collections::BTreeMap;

use stockade_sdk::metrics::{self, HostHealth, Report, Window};
use stockade_sdk::prelude::*;
use stockade_sdk::serde_json::{self, Value, json};

/// Rows listed per table at most (the busiest first); totals count them all.
const MAX_ROWS: usize = 50;

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// Calls per tool, per plugin and per user.
    Usage,
    /// Latency percentiles and error, limit-hit and denial counts per tool.
    Performance,
    /// The host now: uptime, load, memory, disk, sessions, plugins.
    Health,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// What to report: `usage`, `performance` or `health`.
    #[serde(rename = "metricType")]
    metric_type: Kind,
    /// The window, ending now: `1h`, `24h` (default), `7d` or `30d`. Health is
    /// always now.
    #[serde(rename = "timeRange", default = "default_range")]
    time_range: String,
}

fn default_range() -> String {
    "24h".into()
}

/// Milliseconds since the epoch as `2026-11-27T23:57:05Z`.
fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0
    }
}

fn window_json(range: &str, r: &Report) -> Value {
    json!({
        "timeRange": range,
        "since": iso(r.since_ms),
        "dataSince": r.data_since_ms.map(iso),
        "note": match r.data_since_ms {
            Some(d) if d > r.since_ms + 300_000 => Some("the host has figures only since dataSince"),
            None => Some("no operations in this window"),
            _ => None,
        },
    })
}

/// Adds `(calls, errors)` to `map[key]`.
fn tally(map: &mut BTreeMap<String, (u64, u64)>, key: String, calls: u64, errors: u64) {
    let e = map.entry(key).or_default();
    e.0 += calls;
    e.1 += errors;
}

/// `map` as rows `{name_key: .., calls, errors}`, busiest first, capped.
fn busiest(map: BTreeMap<String, (u64, u64)>, name_key: &str) -> Vec<Value> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .take(MAX_ROWS)
        .map(|(k, (calls, errors))| json!({ name_key: k, "calls": calls, "errors": errors }))
        .collect()
}

fn usage(range: &str, r: &Report) -> Value {
    let (mut by_tool, mut by_plugin, mut by_subject) = Default::default();
    let (mut calls, mut errors) = (0, 0);
    for u in &r.usage {
        calls += u.calls;
        errors += u.errors;
        let target = if u.kind == "tool" {
            u.target.clone()
        } else {
            format!("{} {}", u.kind, u.target)
        };
        tally(&mut by_tool, target, u.calls, u.errors);
        tally(&mut by_plugin, u.plugin.clone(), u.calls, u.errors);
        let who = u
            .subject
            .clone()
            .unwrap_or_else(|| "(unauthenticated)".into());
        tally(&mut by_subject, who, u.calls, u.errors);
    }
    json!({
        "metricType": "usage",
        "window": window_json(range, r),
        "totals": {
            "calls": calls,
            "errors": errors,
            "errorRate": rate(errors, calls),
            "tools": by_tool.len(),
            "subjects": by_subject.len(),
        },
        "byTool": busiest(by_tool, "tool"),
        "byPlugin": busiest(by_plugin, "plugin"),
        "bySubject": busiest(by_subject, "subject"),
    })
}

fn performance(range: &str, r: &Report) -> Value {
    let rows: Vec<Value> = r
        .performance
        .iter()
        .take(MAX_ROWS)
        .map(|p| {
            json!({
                "kind": p.kind,
                "tool": p.target,
                "plugin": p.plugin,
                "calls": p.calls,
                "errors": p.errors,
                "errorRate": rate(p.errors, p.calls),
                "limitHits": p.limit_hits,
                "limitHitRate": rate(p.limit_hits, p.calls),
                "denials": p.denials,
                "cancelled": p.cancelled,
                "latencyMs": {
                    "mean": p.mean_ms,
                    "p50": p.p50_ms,
                    "p95": p.p95_ms,
                    "p99": p.p99_ms,
                    "max": p.max_ms,
                },
            })
        })
        .collect();
    json!({
        "metricType": "performance",
        "window": window_json(range, r),
        "note": "percentiles come from a histogram and are within about 20%",
        "byTool": rows,
    })
}

fn health(h: &HostHealth) -> Value {
    let used = h.disk_total_bytes.saturating_sub(h.disk_free_bytes);
    let serving = h.plugins.iter().filter(|p| p.state == "serving").count();
    json!({
        "metricType": "health",
        "status": if h.plugins.iter().any(|p| p.state == "refused") { "degraded" } else { "ok" },
        "version": h.version,
        "uptimeSeconds": h.uptime_s,
        "load": match h.load.as_slice() {
            [one, five, fifteen] => json!({ "1m": one, "5m": five, "15m": fifteen }),
            _ => Value::Null,
        },
        "memory": {
            "totalBytes": h.memory_total_bytes,
            "availableBytes": h.memory_available_bytes,
            "hostRssBytes": h.host_rss_bytes,
        },
        "dataDisk": {
            "totalBytes": h.disk_total_bytes,
            "freeBytes": h.disk_free_bytes,
            "usedPercent": (rate(used, h.disk_total_bytes) * 1000.0).round() / 10.0,
        },
        "openSessions": h.open_sessions,
        "lastReload": h.last_reload_ms.map(iso),
        "plugins": {
            "serving": serving,
            "refused": h.plugins.len() - serving,
            "list": h.plugins.iter().map(|p| json!({
                "name": p.name,
                "state": p.state,
                "reason": p.reason,
                "version": p.version,
                "tools": p.tools,
                "since": iso(p.since_ms),
            })).collect::<Vec<_>>(),
        },
    })
}

fn get_metrics(args: Args, _call: &Call) -> Result<Output, ToolError> {
    let window = Window::parse(&args.time_range).ok_or_else(|| {
        ToolError::invalid_arguments(format!(
            "timeRange `{}` is not one of 1h, 24h, 7d, 30d",
            args.time_range
        ))
    })?;
    let value = match args.metric_type {
        Kind::Usage => usage(&args.time_range, &metrics::usage(window)?),
        Kind::Performance => performance(&args.time_range, &metrics::performance(window)?),
        Kind::Health => health(&metrics::health()?),
    };
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| ToolError::failed(format!("cannot encode the report: {e}")))?;
    Ok(Output::text(text))
}

stockade_sdk::plugin! {
    description: "get_metrics: how this server's tools are used and perform, and how the host is doing",
    capabilities: { metrics: ["read"] },
    tools: [
        Tool::new(
            "get_metrics",
            "Retrieve this server's metrics as JSON. metricType `usage`: calls and errors per tool, \
             per plugin and per user; `performance`: latency (mean, p50, p95, p99, max in ms), \
             error and limit-hit rates per tool; `health`: uptime, load, memory, disk of the data \
             directory, open sessions and each plugin's state (serving or refused, and why). \
             timeRange is 1h, 24h (default), 7d or 30d and does not apply to health.",
            get_metrics,
        )
        .title("Get metrics")
        .read_only()
        .idempotent(),
    ],
}
