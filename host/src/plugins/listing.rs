//! `<data>/plugins.json`: what the host serves and refuses, for
//! `stockade plugins list`.
//!
//! The serving host rewrites the file (atomically) at start-up and whenever its
//! snapshot changes, so the list is available while it runs and after it stops.
//! Without the file, `plugins list` loads the directory itself (a dry run) and
//! renders the same structure.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::Snapshot;
use crate::config::{Config, Grants};

/// The file name under the data directory.
pub const FILE_NAME: &str = "plugins.json";

/// The listing file of a data directory.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// One line per grant, e.g. `env: GREETING`, `dir: /data (ro) = /srv/data`.
pub fn grants_summary(g: &Grants) -> Vec<String> {
    let mut out = Vec::new();
    for d in &g.dirs {
        let mode = match d.mode {
            crate::config::DirMode::ReadOnly => "ro",
            crate::config::DirMode::ReadWrite => "rw",
        };
        out.push(format!("dir: {} ({mode}) = {}", d.guest, d.host.display()));
    }
    if !g.env.is_empty() {
        let keys: Vec<&str> = g.env.keys().map(String::as_str).collect();
        out.push(format!("env: {}", keys.join(", ")));
    }
    if let Some(h) = &g.http {
        out.push(format!(
            "http: {}{}",
            h.hosts.join(", "),
            if h.allow_private {
                " (private addresses allowed)"
            } else {
                ""
            }
        ));
    }
    for e in &g.exec {
        out.push(format!("exec: {}", e.program.display()));
    }
    if !g.sql.is_empty() {
        out.push(format!("sql: {}", g.sql.join(", ")));
    }
    if !g.client.is_empty() {
        let kinds: Vec<String> = g
            .client
            .iter()
            .map(|c| format!("{c:?}").to_lowercase())
            .collect();
        out.push(format!("client: {}", kinds.join(", ")));
    }
    if g.metrics {
        out.push("metrics: the host's usage, performance and health figures".into());
    }
    out
}

/// Config tables `[plugins.NAME]` that match no plugin file (a typo, most
/// often: their grants and limits apply to nothing), each as a warning naming
/// the closest plugin name when there is one.
pub fn unmatched_config(snapshot: &Snapshot, config: &Config) -> Vec<String> {
    let files: Vec<&str> = snapshot
        .plugins
        .keys()
        .chain(snapshot.refused.keys())
        .map(String::as_str)
        .collect();
    config
        .plugins
        .keys()
        .filter(|name| !files.contains(&name.as_str()))
        .map(|name| {
            let closest = files
                .iter()
                .map(|f| (strsim::levenshtein(name, f), *f))
                .filter(|(d, _)| *d <= 2)
                .min();
            let hint = match closest {
                Some((_, f)) => format!("; did you mean `[plugins.{f}]`?"),
                None => String::new(),
            };
            format!(
                "`[plugins.{name}]` in the config matches no plugin file (no `{name}.wasm` in {}): \
                 its grants and limits apply to nothing{hint}",
                config.plugins_dir.display()
            )
        })
        .collect()
}

/// The listing of `snapshot` as JSON. `source` says who produced it (`host` or
/// `dry-run`).
pub fn to_json(snapshot: &Snapshot, config: &Config, source: &str) -> Value {
    let plugins_dir = &config.plugins_dir;
    let mut plugins = Vec::new();
    for (name, p) in &snapshot.plugins {
        plugins.push(json!({
            "name": name,
            "state": "serving",
            "file": p.path.display().to_string(),
            "plugin_name": p.code.info.name,
            "version": p.code.info.version,
            "digest": format!("sha256:{}", p.digest),
            "tools": p.code.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            "resources": p.code.resources.len() + p.code.resource_templates.len(),
            "prompts": p.code.prompts.len(),
            "grants": grants_summary(&p.policy.grants),
            "scope": p.policy.scope,
        }));
    }
    for (name, r) in &snapshot.refused {
        plugins.push(json!({
            "name": name,
            "state": "refused",
            "file": r.path.display().to_string(),
            "digest": r.digest.as_ref().map(|d| format!("sha256:{d}")),
            "reason": r.refusal.to_string(),
            "previous_version_serving": snapshot.plugins.contains_key(name),
        }));
    }
    plugins.sort_by(|a, b| {
        (a["name"].as_str(), a["state"].as_str()).cmp(&(b["name"].as_str(), b["state"].as_str()))
    });
    json!({
        "written_at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "source": source,
        "pid": std::process::id(),
        "plugins_dir": plugins_dir.display().to_string(),
        "plugins": plugins,
        "warnings": unmatched_config(snapshot, config),
    })
}

/// Every plugin file of `snapshot`, serving or refused, for the health report.
pub fn states(snapshot: &Snapshot) -> Vec<crate::metrics::PluginState> {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let serving = snapshot
        .plugins
        .iter()
        .map(|(name, p)| crate::metrics::PluginState {
            name: name.clone(),
            state: "serving",
            reason: None,
            version: Some(p.code.info.version.clone()),
            tools: p.code.tools.len() as u32,
            since_ms: ms(p.stamp.modified),
        });
    let refused = snapshot
        .refused
        .iter()
        .map(|(name, r)| crate::metrics::PluginState {
            name: name.clone(),
            state: "refused",
            reason: Some(r.refusal.to_string()),
            version: None,
            tools: 0,
            since_ms: ms(r.stamp.modified),
        });
    let mut all: Vec<_> = serving.chain(refused).collect();
    all.sort_by(|a, b| (&a.name, a.state).cmp(&(&b.name, b.state)));
    all
}

/// Writes the host's listing of `snapshot` to `path` atomically.
pub fn write(snapshot: &Snapshot, config: &Config, path: &Path) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(&to_json(snapshot, config, "host"))
        .map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::fsutil::write_atomic(path, &text, None)
}

/// Human-readable rendering of a listing.
pub fn render(listing: &Value) -> String {
    let mut out = String::new();
    let plugins = listing["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        out.push_str("no plugin files\n");
    }
    for p in &plugins {
        let name = p["name"].as_str().unwrap_or("?");
        let digest = p["digest"].as_str().unwrap_or("-");
        if p["state"] == "serving" {
            out.push_str(&format!(
                "{name}: serving {} {}\n  digest: {digest}\n",
                p["plugin_name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?"),
            ));
            let tools: Vec<&str> = p["tools"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!("  tools:  {}\n", tools.join(", ")));
            let grants: Vec<&str> = p["grants"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if grants.is_empty() {
                out.push_str("  grants: none\n");
            } else {
                out.push_str(&format!("  grants: {}\n", grants.join("; ")));
            }
            if let Some(s) = p["scope"].as_str() {
                out.push_str(&format!("  scope:  {s}\n"));
            }
        } else {
            let note = if p["previous_version_serving"] == true {
                " (the previous version keeps serving)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{name}: refused{note}\n  digest: {digest}\n  reason: {}\n",
                p["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    for w in listing["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("?")));
    }
    out
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
