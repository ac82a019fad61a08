//! The figures of every host, in the shared PostgreSQL store (`[store] url`),
//! so `get_metrics` on any host reports the whole cluster. Each host keeps
//! writing its own `<data>/metrics.db` too, and adds what it flushes to its own
//! rows of `metrics_buckets` (created by the store's migrations), so hosts
//! never contend for a row; a report sums every host's rows.
//!
//! What could not be sent is kept and sent with the next flush. A report holds
//! the same lock as a flush, so figures moving from memory to the database
//! are never missed or counted twice.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Counts, Histogram, Key};
use crate::config::StoreSettings;

/// This host's link to the shared figures.
pub struct SharedFigures {
    pool: PgPool,
    host: String,
    /// Flushed here but not yet in the database.
    pub(super) unsent: tokio::sync::Mutex<HashMap<Key, Counts>>,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn counts_from(r: &sqlx::postgres::PgRow) -> Result<Counts, sqlx::Error> {
    Ok(Counts {
        calls: uint(r.try_get("calls")?),
        errors: uint(r.try_get("errors")?),
        limit_hits: uint(r.try_get("limit_hits")?),
        denials: uint(r.try_get("denials")?),
        cancelled: uint(r.try_get("cancelled")?),
        duration_us_sum: uint(r.try_get("duration_us_sum")?),
        duration_us_max: uint(r.try_get("duration_us_max")?),
        histogram: Histogram::from_text(&r.try_get::<String, _>("histogram")?).unwrap_or_default(),
    })
}

impl SharedFigures {
    /// Connects (two connections at most) as host `host`.
    pub async fn connect(settings: &StoreSettings, host: String) -> Result<SharedFigures, String> {
        let options = crate::pgconn::options(
            settings.url.as_deref().unwrap_or_default(),
            settings.password_file.as_deref(),
            "stockade-metrics",
            "store.url",
            "store.password_file",
        )?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot connect to the PostgreSQL store for metrics: {e}"))?;
        Ok(SharedFigures {
            pool,
            host,
            unsent: tokio::sync::Mutex::default(),
        })
    }

    /// Adds `rows` (this host's) to the database and deletes buckets before
    /// `oldest`, in one transaction.
    pub(super) async fn send(
        &self,
        rows: &HashMap<Key, Counts>,
        oldest: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (k, c) in rows {
            let old = sqlx::query(
                "SELECT * FROM metrics_buckets WHERE host = $1 AND bucket = $2 AND kind = $3 \
                 AND plugin = $4 AND target = $5 AND subject = $6 FOR UPDATE",
            )
            .bind(&self.host)
            .bind(k.bucket)
            .bind(&k.kind)
            .bind(&k.plugin)
            .bind(&k.target)
            .bind(&k.subject)
            .fetch_optional(&mut *tx)
            .await?;
            let mut total = match &old {
                Some(r) => counts_from(r)?,
                None => Counts::default(),
            };
            total.add(c);
            sqlx::query(
                "INSERT INTO metrics_buckets VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14) ON CONFLICT (host, bucket, kind, plugin, target, subject) DO UPDATE \
                 SET calls = EXCLUDED.calls, errors = EXCLUDED.errors, limit_hits = EXCLUDED.limit_hits, \
                 denials = EXCLUDED.denials, cancelled = EXCLUDED.cancelled, \
                 duration_us_sum = EXCLUDED.duration_us_sum, duration_us_max = EXCLUDED.duration_us_max, \
                 histogram = EXCLUDED.histogram",
            )
            .bind(&self.host)
            .bind(k.bucket)
            .bind(&k.kind)
            .bind(&k.plugin)
            .bind(&k.target)
            .bind(&k.subject)
            .bind(int(total.calls))
            .bind(int(total.errors))
            .bind(int(total.limit_hits))
            .bind(int(total.denials))
            .bind(int(total.cancelled))
            .bind(int(total.duration_us_sum))
            .bind(int(total.duration_us_max))
            .bind(total.histogram.to_text())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM metrics_buckets WHERE bucket < $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Every host's rows from bucket `first` on.
    pub(super) async fn read(&self, first: i64) -> Result<Vec<(Key, Counts)>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM metrics_buckets WHERE bucket >= $1")
            .bind(first)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    Key {
                        bucket: r.try_get("bucket")?,
                        kind: r.try_get("kind")?,
                        plugin: r.try_get("plugin")?,
                        target: r.try_get("target")?,
                        subject: r.try_get("subject")?,
                    },
                    counts_from(r)?,
                ))
            })
            .collect()
    }
}
