//! The buckets on disk: one SQLite table in `<data>/metrics.db` (0600: it
//! names subjects), one row per bucket, kind, plugin, target and subject.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Counts, Histogram, Key};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS op_buckets (
    bucket INTEGER NOT NULL,
    kind TEXT NOT NULL,
    plugin TEXT NOT NULL,
    target TEXT NOT NULL,
    subject TEXT NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    limit_hits INTEGER NOT NULL,
    denials INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    duration_us_sum INTEGER NOT NULL,
    duration_us_max INTEGER NOT NULL,
    histogram TEXT NOT NULL,
    PRIMARY KEY (bucket, kind, plugin, target, subject)
) WITHOUT ROWID;
";

pub(super) struct Store {
    conn: Connection,
    path: PathBuf,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    pub(super) fn open(path: &Path) -> rusqlite::Result<Store> {
        if path != Path::new(":memory:") {
            // Created owner-only before SQLite opens it: it names subjects.
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path);
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `pending` to the rows on disk and deletes buckets before `oldest`,
    /// in one transaction.
    pub(super) fn merge(
        &mut self,
        pending: &HashMap<Key, Counts>,
        oldest: i64,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut get = tx.prepare_cached(
                "SELECT calls, errors, limit_hits, denials, cancelled, duration_us_sum, \
                 duration_us_max, histogram FROM op_buckets \
                 WHERE bucket = ?1 AND kind = ?2 AND plugin = ?3 AND target = ?4 AND subject = ?5",
            )?;
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO op_buckets VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for (k, c) in pending {
                let mut total = get
                    .query_row(
                        params![k.bucket, k.kind, k.plugin, k.target, k.subject],
                        |r| counts_at(r, 0),
                    )
                    .optional()?
                    .unwrap_or_default();
                total.add(c);
                put.execute(params![
                    k.bucket,
                    k.kind,
                    k.plugin,
                    k.target,
                    k.subject,
                    int(total.calls),
                    int(total.errors),
                    int(total.limit_hits),
                    int(total.denials),
                    int(total.cancelled),
                    int(total.duration_us_sum),
                    int(total.duration_us_max),
                    total.histogram.to_text(),
                ])?;
            }
        }
        tx.execute("DELETE FROM op_buckets WHERE bucket < ?1", [oldest])?;
        tx.commit()
    }

    /// Every row from bucket `first` on.
    pub(super) fn read(&self, first: i64) -> rusqlite::Result<Vec<(Key, Counts)>> {
        let mut q = self.conn.prepare_cached(
            "SELECT bucket, kind, plugin, target, subject, calls, errors, limit_hits, denials, \
             cancelled, duration_us_sum, duration_us_max, histogram FROM op_buckets WHERE bucket >= ?1",
        )?;
        let rows = q.query_map([first], |r| {
            let key = Key {
                bucket: r.get(0)?,
                kind: r.get(1)?,
                plugin: r.get(2)?,
                target: r.get(3)?,
                subject: r.get(4)?,
            };
            Ok((key, counts_at(r, 5)?))
        })?;
        rows.collect()
    }
}

/// The counts in the eight columns from `at` on.
fn counts_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Counts> {
    Ok(Counts {
        calls: uint(r.get(at)?),
        errors: uint(r.get(at + 1)?),
        limit_hits: uint(r.get(at + 2)?),
        denials: uint(r.get(at + 3)?),
        cancelled: uint(r.get(at + 4)?),
        duration_us_sum: uint(r.get(at + 5)?),
        duration_us_max: uint(r.get(at + 6)?),
        histogram: Histogram::from_text(&r.get::<_, String>(at + 7)?).unwrap_or_default(),
    })
}
