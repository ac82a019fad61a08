//! Plugin discovery and the catalog of what is being served.
//!
//! [`load_dir`] reads every `*.wasm` file of the plugin directory, loads each through
//! the [`Runtime`], checks its tools and builds a [`Snapshot`]: the plugins that
//! serve, their tools by name, and the files that were refused with the reason.
//! The [`Catalog`] holds the current snapshot and swaps it atomically, so a request
//! always sees one consistent set of plugins.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::runtime::{LoadError, PluginCode, Runtime};

/// A loaded plugin version.
pub struct Plugin {
    /// The operator's name for it: the file name without `.wasm`.
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The sha256 of the file, hex.
    pub digest: String,
    /// The compiled code and what the plugin said about itself.
    pub code: PluginCode,
}

/// Why a plugin file is not being served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The file name does not make a valid plugin name.
    #[error("`{0}` is not a valid plugin name: use 1-64 letters, digits, `-` or `_`, starting with a letter or digit")]
    BadName(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// The component could not be loaded.
    #[error("{0}")]
    Load(String),
    /// A tool name is already served by another plugin.
    #[error("tool `{tool}` is already served by plugin `{owner}`; rename the tool in one of the two plugins")]
    DuplicateTool {
        /// The tool.
        tool: String,
        /// The plugin already serving it.
        owner: String,
    },
}

impl From<LoadError> for Refusal {
    fn from(e: LoadError) -> Self {
        Refusal::Load(e.to_string())
    }
}

/// Whether `name` is acceptable as a plugin name.
pub fn is_valid_plugin_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `name` is a valid MCP tool name (1-128 of `A-Z a-z 0-9 _ - .`).
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// One consistent view of the plugins being served.
#[derive(Default)]
pub struct Snapshot {
    /// Serving plugins by name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Tool name → (plugin, index in its tool list).
    pub tools: HashMap<String, (Arc<Plugin>, usize)>,
    /// Refused plugin files by name, with the reason.
    pub refused: BTreeMap<String, (PathBuf, Refusal)>,
}

impl Snapshot {
    /// Finds a tool by name.
    pub fn tool(&self, name: &str) -> Option<(&Arc<Plugin>, &crate::bindings::guest_tools::Tool)> {
        self.tools
            .get(name)
            .map(|(p, i)| (p, &p.code.tools[*i]))
    }

    /// Every tool, ordered by plugin name then the plugin's own order.
    pub fn all_tools(&self) -> impl Iterator<Item = (&Arc<Plugin>, &crate::bindings::guest_tools::Tool)> {
        self.plugins
            .values()
            .flat_map(|p| p.code.tools.iter().map(move |t| (p, t)))
    }
}

/// The current snapshot, swapped atomically.
pub struct Catalog {
    current: ArcSwap<Snapshot>,
}

impl Catalog {
    /// A catalog serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

/// A plugin file found in the directory, loaded or refused.
struct Candidate {
    name: String,
    path: PathBuf,
    modified: SystemTime,
    loaded: Result<Plugin, Refusal>,
}

/// Loads every `*.wasm` in `config.plugins_dir`. Files that fail are refused with
/// a reason (and logged); they never stop the others from loading.
///
/// Tool names are unique across plugins: when two plugins declare the same tool,
/// the one whose file is older (then, by name) keeps it and the other is refused.
pub async fn load_dir(runtime: &Runtime, config: &Config) -> std::io::Result<Snapshot> {
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(&config.plugins_dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") || !path.is_file() {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let loaded = load_file(runtime, config, &name, &path).await;
        candidates.push(Candidate {
            name,
            path,
            modified,
            loaded,
        });
    }
    candidates.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));

    let mut snapshot = Snapshot::default();
    for c in candidates {
        let plugin = match c.loaded {
            Ok(p) => p,
            Err(refusal) => {
                refuse(&mut snapshot, c.name, c.path, refusal);
                continue;
            }
        };
        if let Some((tool, owner)) = plugin.code.tools.iter().find_map(|t| {
            snapshot
                .tools
                .get(&t.name)
                .map(|(owner, _)| (t.name.clone(), owner.name.clone()))
        }) {
            refuse(&mut snapshot, c.name, c.path, Refusal::DuplicateTool { tool, owner });
            continue;
        }
        let plugin = Arc::new(plugin);
        for (i, t) in plugin.code.tools.iter().enumerate() {
            snapshot.tools.insert(t.name.clone(), (plugin.clone(), i));
        }
        tracing::info!(
            plugin = %plugin.name,
            version = %plugin.code.info.version,
            digest = %plugin.digest,
            tools = plugin.code.tools.len(),
            "plugin loaded"
        );
        snapshot.plugins.insert(plugin.name.clone(), plugin);
    }
    Ok(snapshot)
}

fn refuse(snapshot: &mut Snapshot, name: String, path: PathBuf, refusal: Refusal) {
    tracing::error!(plugin = %name, file = %path.display(), "plugin refused: {refusal}");
    snapshot.refused.insert(name, (path, refusal));
}

/// Reads, hashes, loads and checks one plugin file.
pub async fn load_file(
    runtime: &Runtime,
    config: &Config,
    name: &str,
    path: &Path,
) -> Result<Plugin, Refusal> {
    if !is_valid_plugin_name(name) {
        return Err(Refusal::BadName(name.to_owned()));
    }
    let bytes = std::fs::read(path).map_err(|e| Refusal::Read(e.to_string()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let code = runtime
        .load(name, &bytes, config.limits_for(name))
        .await?;
    check_tools(&code).map_err(|e| Refusal::from(LoadError::InvalidTools(e)))?;
    Ok(Plugin {
        name: name.to_owned(),
        path: path.to_owned(),
        digest,
        code,
    })
}

/// Checks the tool list a plugin gave: valid unique names, object input schemas.
fn check_tools(code: &PluginCode) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for t in &code.tools {
        if !is_valid_tool_name(&t.name) {
            return Err(format!(
                "tool name `{}` is invalid: use 1-128 of A-Z a-z 0-9 _ - .",
                t.name.chars().take(140).collect::<String>()
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(format!("tool `{}` is listed twice", t.name));
        }
        let schema: serde_json::Value = serde_json::from_str(&t.input_schema)
            .map_err(|e| format!("tool `{}`: input schema is not JSON: {e}", t.name))?;
        if schema.get("type").and_then(|v| v.as_str()) != Some("object") {
            return Err(format!(
                "tool `{}`: input schema must be a JSON Schema object with \"type\": \"object\"",
                t.name
            ));
        }
        if let Some(out) = &t.output_schema {
            let out: serde_json::Value = serde_json::from_str(out)
                .map_err(|e| format!("tool `{}`: output schema is not JSON: {e}", t.name))?;
            if !out.is_object() {
                return Err(format!("tool `{}`: output schema must be a JSON object", t.name));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
