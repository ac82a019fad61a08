//! The host's state now: uptime, the machine's load and memory, the data
//! directory's disk, and (from the [`HostView`] `cli.rs` wires in) sessions
//! and plugins. Figures the system does not offer are zero or empty, never an
//! error.

use std::path::Path;
use std::time::Duration;

/// One plugin file as the catalog sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginState {
    /// The plugin's name.
    pub name: String,
    /// `serving` or `refused`.
    pub state: &'static str,
    /// Why it is refused.
    pub reason: Option<String>,
    /// Its reported version, while serving.
    pub version: Option<String>,
    /// How many tools it serves.
    pub tools: u32,
    /// The file's modification time, ms since the Unix epoch.
    pub since_ms: u64,
}

/// What the health report needs from the rest of the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostView {
    /// MCP sessions open now.
    pub open_sessions: u32,
    /// When plugins or config were last reloaded, ms since the Unix epoch.
    pub last_reload_ms: Option<u64>,
    /// Every plugin file, serving or refused.
    pub plugins: Vec<PluginState>,
}

/// The host's state now.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The host's version.
    pub version: &'static str,
    /// Time since the host started.
    pub uptime: Duration,
    /// Load averages over 1, 5 and 15 minutes (empty where unknown).
    pub load: Vec<f64>,
    /// Machine memory, bytes.
    pub memory_total_bytes: u64,
    /// Memory available, bytes.
    pub memory_available_bytes: u64,
    /// The host's resident memory, bytes.
    pub host_rss_bytes: u64,
    /// Size of the data directory's filesystem, bytes.
    pub disk_total_bytes: u64,
    /// Free space there for the host, bytes.
    pub disk_free_bytes: u64,
    /// Sessions, reloads and plugins.
    pub view: HostView,
}

pub(super) fn now(uptime: Duration, data_dir: &Path, view: HostView) -> Health {
    let (memory_total_bytes, memory_available_bytes) = memory();
    let (disk_total_bytes, disk_free_bytes) = disk(data_dir);
    Health {
        version: env!("CARGO_PKG_VERSION"),
        uptime,
        load: load(),
        memory_total_bytes,
        memory_available_bytes,
        host_rss_bytes: rss(),
        disk_total_bytes,
        disk_free_bytes,
        view,
    }
}

fn load() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A `Name:   123 kB` line of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

fn memory() -> (u64, u64) {
    let Ok(m) = std::fs::read_to_string("/proc/meminfo") else {
        return (0, 0);
    };
    (
        kib_field(&m, "MemTotal").unwrap_or(0),
        kib_field(&m, "MemAvailable").unwrap_or(0),
    )
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| kib_field(&s, "VmRSS"))
        .unwrap_or(0)
}

fn disk(dir: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(dir) {
        Ok(s) => (
            s.f_blocks.saturating_mul(s.f_frsize),
            s.f_bavail.saturating_mul(s.f_frsize),
        ),
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(kib_field(text, "MemTotal"), Some(24_000_000 * 1024));
        assert_eq!(kib_field(text, "MemAvailable"), Some(12_000_000 * 1024));
        assert_eq!(kib_field(text, "Mem"), None);
    }

    #[test]
    fn this_machine_reports_what_linux_offers() {
        let dir = tempfile::tempdir().unwrap();
        let h = now(Duration::from_secs(3), dir.path(), HostView::default());
        assert_eq!(h.load.len(), 3);
        assert!(h.memory_total_bytes > h.memory_available_bytes && h.memory_available_bytes > 0);
        assert!(
            h.host_rss_bytes > 1 << 20,
            "a test process has over 1 MiB resident"
        );
        assert!(h.disk_total_bytes >= h.disk_free_bytes && h.disk_free_bytes > 0);
    }
}
