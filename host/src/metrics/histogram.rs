//! A fixed log-scale latency histogram: the same bounds everywhere, so two
//! histograms merge by adding their counts (across buckets, restarts, hosts).

/// The upper bound of the first bucket, microseconds.
const FIRST_US: f64 = 50.0;
/// Each bucket's upper bound is this many times the previous one's.
const GROWTH: f64 = 1.25;
/// Buckets with an upper bound; one more counts everything past the last
/// (past ~100 s).
const BOUNDED: usize = 66;

/// Counts of durations per log-scale bucket (each 25% wider than the last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
}

/// The upper bound of bucket `i`, microseconds (`i < BOUNDED`).
fn bound(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i as i32)
}

fn index(us: u64) -> usize {
    let us = us as f64;
    if us < FIRST_US {
        return 0;
    }
    let i = ((us / FIRST_US).ln() / GROWTH.ln()).floor() as usize + 1;
    // Float rounding at a bound: step to the bucket that really holds it.
    let i = i.min(BOUNDED);
    if i < BOUNDED && us >= bound(i) {
        i + 1
    } else if i > 0 && us < bound(i - 1) {
        i - 1
    } else {
        i
    }
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&mut self, us: u64) {
        let i = index(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// How many durations were counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile in microseconds, interpolated inside its bucket and no
    /// more than `max_us` (the largest value seen); 0 when empty.
    pub fn quantile(&self, q: f64, max_us: u64) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut before = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (before + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { bound(i - 1) };
                let hi = if i < BOUNDED { bound(i) } else { max_us as f64 };
                let f = (rank - before as f64) / n as f64;
                return (lo + (hi - lo) * f).min(max_us as f64);
            }
            before += n;
        }
        max_us as f64
    }

    /// The counts as text (`3,0,12`), trailing empty buckets left out.
    pub fn to_text(&self) -> String {
        let end = self
            .counts
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i + 1);
        self.counts[..end]
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads [`Histogram::to_text`]'s form; `None` if it is not that.
    pub fn from_text(s: &str) -> Option<Histogram> {
        if s.is_empty() {
            return Some(Histogram::default());
        }
        let counts: Option<Vec<u64>> = s.split(',').map(|n| n.parse().ok()).collect();
        let counts = counts?;
        (counts.len() <= BOUNDED + 1).then_some(Histogram { counts })
    }
}
