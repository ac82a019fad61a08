//! The host's own figures: every plugin operation counted into five-minute
//! buckets (calls, errors, limit hits, denials, cancellations, a latency
//! histogram) per kind, plugin, target and subject, persisted in
//! `<data>/metrics.db` for [`RETENTION`], plus the host's health now.
//!
//! Recording is in memory ([`Metrics::observe`], one short lock per call); a
//! background task writes the pending buckets every [`FLUSH_EVERY`] and at
//! shutdown ([`Metrics::flush`]). Reads ([`Metrics::report`]) merge what is on
//! disk with what is still pending, so a call is visible as soon as it ended.
//! Plugins read these figures through the `metrics` capability; the same
//! buckets are what a Prometheus exporter would read.
//!
//! The module knows nothing of plugins or sessions: what the health report
//! says about them comes from a [`HostView`] closure wired in `cli.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod health;
mod histogram;
pub mod prom;
mod shared;
mod store;

pub use shared::SharedFigures;

pub use health::{Health, HostView, PluginState};
pub use histogram::Histogram;

/// The width of a bucket.
pub const BUCKET: Duration = Duration::from_secs(300);
/// How long buckets are kept.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often pending buckets are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The metrics database could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("metrics database {path}: {source}")]
pub struct MetricsError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// A time window ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// 1 hour.
    Hour,
    /// 24 hours.
    Day,
    /// 7 days.
    Week,
    /// 30 days.
    Month,
}

impl Window {
    /// The window's length.
    pub fn length(self) -> Duration {
        Duration::from_secs(match self {
            Window::Hour => 3600,
            Window::Day => 24 * 3600,
            Window::Week => 7 * 24 * 3600,
            Window::Month => 30 * 24 * 3600,
        })
    }
}

/// One finished plugin operation, as the MCP layer saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// `tool`, `resource` or `prompt`.
    pub kind: &'static str,
    /// The plugin's name.
    pub plugin: &'a str,
    /// The tool name, resource URI or prompt name.
    pub target: &'a str,
    /// The authenticated subject, if any.
    pub subject: Option<&'a str>,
    /// The audit outcome (`ok`, `tool_error`, `failed`, `cancelled`, ...).
    pub outcome: &'a str,
    /// The limit that stopped it, if one did.
    pub limit: Option<&'a str>,
    /// Capability requests refused during it.
    pub denials: u32,
    /// How long it took.
    pub duration: Duration,
}

/// What a bucket is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    /// Start of the bucket, seconds since the Unix epoch.
    pub bucket: i64,
    pub kind: String,
    pub plugin: String,
    pub target: String,
    /// Empty when there is no subject.
    pub subject: String,
}

/// The counts of one bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counts {
    pub calls: u64,
    pub errors: u64,
    pub limit_hits: u64,
    pub denials: u64,
    pub cancelled: u64,
    pub duration_us_sum: u64,
    pub duration_us_max: u64,
    pub histogram: Histogram,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.limit_hits += o.limit_hits;
        self.denials += o.denials;
        self.cancelled += o.cancelled;
        self.duration_us_sum += o.duration_us_sum;
        self.duration_us_max = self.duration_us_max.max(o.duration_us_max);
        self.histogram.merge(&o.histogram);
    }

    fn observe(&mut self, o: &Observation<'_>) {
        let us = o.duration.as_micros().min(u64::MAX as u128) as u64;
        self.calls += 1;
        match o.outcome {
            "ok" => {}
            "cancelled" | "disconnected" => self.cancelled += 1,
            _ => self.errors += 1,
        }
        if o.limit.is_some() {
            self.limit_hits += 1;
        }
        self.denials += u64::from(o.denials);
        self.duration_us_sum += us;
        self.duration_us_max = self.duration_us_max.max(us);
        self.histogram.record(us);
    }
}

/// One row of a usage report: one subject's use of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// `tool`, `resource` or `prompt`.
    pub kind: String,
    /// The plugin.
    pub plugin: String,
    /// The tool name, resource URI or prompt name.
    pub target: String,
    /// The subject, if any.
    pub subject: Option<String>,
    /// Operations.
    pub calls: u64,
    /// Operations that did not end well.
    pub errors: u64,
}

/// One row of a performance report: one target, all subjects.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceRow {
    /// `tool`, `resource` or `prompt`.
    pub kind: String,
    /// The plugin.
    pub plugin: String,
    /// The tool name, resource URI or prompt name.
    pub target: String,
    /// Operations.
    pub calls: u64,
    /// Operations that did not end well.
    pub errors: u64,
    /// Operations stopped by a limit.
    pub limit_hits: u64,
    /// Capability requests refused.
    pub denials: u64,
    /// Operations cancelled or abandoned by the client.
    pub cancelled: u64,
    /// Mean duration, ms.
    pub mean_ms: f64,
    /// Median, ms (histogram).
    pub p50_ms: f64,
    /// 95th percentile, ms (histogram).
    pub p95_ms: f64,
    /// 99th percentile, ms (histogram).
    pub p99_ms: f64,
    /// Longest, ms.
    pub max_ms: f64,
}

/// The figures of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Start of the window, ms since the Unix epoch.
    pub since_ms: u64,
    /// Start of the oldest bucket with data in the window, if any.
    pub data_since_ms: Option<u64>,
    /// Per target and subject, most calls first.
    pub usage: Vec<UsageRow>,
    /// Per target, most calls first.
    pub performance: Vec<PerformanceRow>,
}

struct Inner {
    started: Instant,
    data_dir: PathBuf,
    pending: Mutex<HashMap<Key, Counts>>,
    /// The database, also held while pending buckets move into it so that a
    /// reader never misses buckets in between.
    store: Mutex<store::Store>,
    view: OnceLock<Box<dyn Fn() -> HostView + Send + Sync>>,
    /// The shared store's figures, when several hosts share one.
    shared: OnceLock<SharedFigures>,
}

/// The handle to the host's figures (cheap to clone).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn bucket_of(secs: i64) -> i64 {
    let w = BUCKET.as_secs() as i64;
    secs - secs.rem_euclid(w)
}

impl Metrics {
    /// Opens (or creates) `<data_dir>/metrics.db`.
    pub fn open(data_dir: &Path) -> Result<Metrics, MetricsError> {
        let path = data_dir.join("metrics.db");
        let store = store::Store::open(&path).map_err(|source| MetricsError {
            path: path.clone(),
            source,
        })?;
        Ok(Self::with_store(store, data_dir))
    }

    /// Figures kept in memory only (for tests and tools that run no host).
    pub fn in_memory() -> Metrics {
        let store = store::Store::open(Path::new(":memory:")).expect("an in-memory SQLite opens");
        Self::with_store(store, Path::new("."))
    }

    fn with_store(store: store::Store, data_dir: &Path) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                started: Instant::now(),
                data_dir: data_dir.to_owned(),
                pending: Mutex::default(),
                store: Mutex::new(store),
                view: OnceLock::new(),
                shared: OnceLock::new(),
            }),
        }
    }

    /// Sets where the health report learns about plugins and sessions (once).
    pub fn set_host_view(&self, view: impl Fn() -> HostView + Send + Sync + 'static) {
        let _ = self.inner.view.set(Box::new(view));
    }

    /// Counts one finished operation.
    pub fn observe(&self, o: &Observation<'_>) {
        let outcome = match o.limit {
            Some(limit) => std::borrow::Cow::Owned(format!("limit_{limit}")),
            None => std::borrow::Cow::Borrowed(o.outcome),
        };
        // Resource URIs are unbounded (templates): Prometheus gets the plugin
        // only; tool and prompt names are bounded by the plugins loaded.
        let target = if o.kind == "resource" { "" } else { o.target };
        prom::global().plugin_operation(o.kind, o.plugin, target, &outcome);
        let key = Key {
            bucket: bucket_of(now_secs()),
            kind: o.kind.to_owned(),
            plugin: o.plugin.to_owned(),
            target: o.target.to_owned(),
            subject: o.subject.unwrap_or_default().to_owned(),
        };
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(key).or_default().observe(o);
    }

    /// From now on, also adds every flush to the shared store's figures, and
    /// reports sum every host's (once; later calls change nothing).
    pub fn share(&self, figures: SharedFigures) {
        let _ = self.inner.shared.set(figures);
    }

    /// Writes the pending buckets and drops those past [`RETENTION`].
    /// Blocking: call it from a blocking thread.
    pub fn flush(&self) -> Result<(), MetricsError> {
        self.flush_delta().map(drop)
    }

    /// [`flush`](Self::flush), returning what it wrote.
    fn flush_delta(&self) -> Result<HashMap<Key, Counts>, MetricsError> {
        let mut store = self.inner.store.lock().unwrap_or_else(|e| e.into_inner());
        let pending =
            std::mem::take(&mut *self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let oldest = bucket_of(now_secs() - RETENTION.as_secs() as i64);
        store
            .merge(&pending, oldest)
            .map_err(|source| MetricsError {
                path: store.path().to_owned(),
                source,
            })
            .map(|()| pending.clone())
            .inspect_err(|_| {
                // Keep what could not be written for the next attempt.
                let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (k, c) in pending {
                    p.entry(k).or_default().add(&c);
                }
            })
    }

    /// Flushes to `metrics.db` and, when shared, sends the same to the shared
    /// store (what cannot be sent is kept for the next time).
    pub async fn flush_everywhere(&self) -> Result<(), String> {
        let Some(shared) = self.inner.shared.get() else {
            let m = self.clone();
            return match tokio::task::spawn_blocking(move || m.flush()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("flush task failed: {e}")),
            };
        };
        // Held until the rows are in the database: a report waits, so it
        // sees them exactly once.
        let mut unsent = shared.unsent.lock().await;
        let m = self.clone();
        let delta = tokio::task::spawn_blocking(move || m.flush_delta())
            .await
            .map_err(|e| format!("flush task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        for (k, c) in delta {
            unsent.entry(k).or_default().add(&c);
        }
        let oldest = bucket_of(now_secs() - RETENTION.as_secs() as i64);
        shared
            .send(&unsent, oldest)
            .await
            .map_err(|e| format!("the shared store did not take the figures: {e}"))?;
        unsent.clear();
        Ok(())
    }

    /// [`report`](Self::report), of every host when the figures are shared.
    pub async fn report_everywhere(&self, window: Window) -> Result<Report, String> {
        let Some(shared) = self.inner.shared.get() else {
            let m = self.clone();
            return match tokio::task::spawn_blocking(move || m.report(window)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("report task failed: {e}")),
            };
        };
        let since = now_secs() - window.length().as_secs() as i64;
        let first = bucket_of(since);
        let unsent = shared.unsent.lock().await;
        let mut rows = shared
            .read(first)
            .await
            .map_err(|e| format!("the shared figures cannot be read: {e}"))?;
        rows.extend(
            unsent
                .iter()
                .filter(|(k, _)| k.bucket >= first)
                .map(|(k, c)| (k.clone(), c.clone())),
        );
        {
            let pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            rows.extend(
                pending
                    .iter()
                    .filter(|(k, _)| k.bucket >= first)
                    .map(|(k, c)| (k.clone(), c.clone())),
            );
        }
        // Released only now: a flush moves pending into unsent under it.
        drop(unsent);
        Ok(summarize(rows, since))
    }

    /// Flushes every [`FLUSH_EVERY`] until the process ends (failures are logged
    /// once per change of message and retried).
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let metrics = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_error: Option<String> = None;
            loop {
                tick.tick().await;
                match metrics.flush_everywhere().await {
                    Ok(()) => {
                        if last_error.take().is_some() {
                            tracing::info!("metrics: writing again");
                        }
                    }
                    Err(msg) => {
                        if last_error.as_deref() != Some(&msg) {
                            tracing::warn!("metrics: {msg}; kept in memory and retried");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        })
    }

    /// The figures of `window`, usage and performance both. Blocking (reads the
    /// database): call it from a blocking thread.
    pub fn report(&self, window: Window) -> Result<Report, MetricsError> {
        let now = now_secs();
        let since = now - window.length().as_secs() as i64;
        // Buckets that started before `since` but end after it count: a window
        // is at most one bucket wider than asked.
        let first = bucket_of(since);
        let store = self.inner.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = store.read(first).map_err(|source| MetricsError {
            path: store.path().to_owned(),
            source,
        })?;
        {
            let pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (k, c) in pending.iter().filter(|(k, _)| k.bucket >= first) {
                rows.push((k.clone(), c.clone()));
            }
        }
        drop(store);
        Ok(summarize(rows, since))
    }

    /// The Prometheus text exposition ([`prom`]), with plugin states and
    /// sessions as they are now.
    pub fn prometheus(&self) -> String {
        let view = self.inner.view.get().map(|v| v()).unwrap_or_default();
        let refused = view.plugins.iter().filter(|p| p.state != "serving").count() as u64;
        prom::global().encode(prom::Snapshot {
            serving: view.plugins.len() as u64 - refused,
            refused,
            sessions: u64::from(view.open_sessions),
        })
    }

    /// The host's state now.
    pub fn health(&self) -> Health {
        let view = self.inner.view.get().map(|v| v()).unwrap_or_default();
        health::now(self.inner.started.elapsed(), &self.inner.data_dir, view)
    }
}

fn ms(secs: i64) -> u64 {
    (secs.max(0) as u64).saturating_mul(1000)
}

/// Folds bucket rows into a report: usage per (kind, plugin, target, subject),
/// performance per (kind, plugin, target), busiest first.
fn summarize(rows: Vec<(Key, Counts)>, since: i64) -> Report {
    let data_since = rows.iter().map(|(k, _)| k.bucket).min();
    let mut usage: HashMap<(String, String, String, String), Counts> = HashMap::new();
    let mut perf: HashMap<(String, String, String), Counts> = HashMap::new();
    for (k, c) in rows {
        perf.entry((k.kind.clone(), k.plugin.clone(), k.target.clone()))
            .or_default()
            .add(&c);
        usage
            .entry((k.kind, k.plugin, k.target, k.subject))
            .or_default()
            .add(&c);
    }
    let mut usage: Vec<UsageRow> = usage
        .into_iter()
        .map(|((kind, plugin, target, subject), c)| UsageRow {
            kind,
            plugin,
            target,
            subject: (!subject.is_empty()).then_some(subject),
            calls: c.calls,
            errors: c.errors,
        })
        .collect();
    usage.sort_by(|a, b| {
        b.calls.cmp(&a.calls).then_with(|| {
            (&a.plugin, &a.target, &a.subject).cmp(&(&b.plugin, &b.target, &b.subject))
        })
    });
    let mut performance: Vec<PerformanceRow> = perf
        .into_iter()
        .map(|((kind, plugin, target), c)| {
            // Microseconds to milliseconds, to the microsecond.
            let us = |v: f64| v.round() / 1000.0;
            PerformanceRow {
                kind,
                plugin,
                target,
                calls: c.calls,
                errors: c.errors,
                limit_hits: c.limit_hits,
                denials: c.denials,
                cancelled: c.cancelled,
                mean_ms: us(c.duration_us_sum as f64 / c.calls.max(1) as f64),
                p50_ms: us(c.histogram.quantile(0.50, c.duration_us_max)),
                p95_ms: us(c.histogram.quantile(0.95, c.duration_us_max)),
                p99_ms: us(c.histogram.quantile(0.99, c.duration_us_max)),
                max_ms: us(c.duration_us_max as f64),
            }
        })
        .collect();
    performance.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| (&a.plugin, &a.target).cmp(&(&b.plugin, &b.target)))
    });
    Report {
        since_ms: ms(since),
        data_since_ms: data_since.map(|b| ms(b.max(since))),
        usage,
        performance,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
