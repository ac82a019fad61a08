//! Plugin discovery and the catalog of what is being served.
//!
//! [`load_dir`] reads every `*.wasm` file of the plugin directory, loads each through
//! the [`Runtime`], checks its tools and builds a [`Snapshot`]: the plugins that
//! serve, their tools by name, and the files that were refused with the reason.
//! The [`Catalog`] holds the current snapshot and swaps it atomically, so a request
//! always sees one consistent set of plugins.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

pub mod inspect;
pub mod listing;
pub mod schema;
pub mod sign;
pub mod watch;

use crate::config::Config;
use crate::runtime::{LoadError, PluginCode, Policy, Runtime};

/// A loaded plugin version.
pub struct Plugin {
    /// The operator's name for it: the file name without `.wasm`.
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The file's size and modification time when it was read.
    pub stamp: FileStamp,
    /// The sha256 of the file, hex.
    pub digest: String,
    /// The compiled code and what the plugin said about itself.
    pub code: Arc<PluginCode>,
    /// The operator's limits and grants for it.
    pub policy: Policy,
    /// The capabilities the plugin declares it wants (informational).
    pub declared: Option<serde_json::Value>,
    /// Its tools' schemas, compiled when the code was loaded (in the order of
    /// `code.tools`): every call's arguments and structured result are checked.
    pub schemas: Arc<schema::ToolSchemas>,
}

/// Identifies a version of a file cheaply: size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Modification time.
    pub modified: SystemTime,
    /// Size in bytes.
    pub len: u64,
}

impl FileStamp {
    /// The stamp of the file at `path`.
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            len: m.len(),
        })
    }

    /// Whether the file was modified less than `d` ago.
    fn is_younger_than(&self, d: std::time::Duration) -> bool {
        SystemTime::now()
            .duration_since(self.modified)
            .map_or(true, |age| age < d)
    }
}

/// A plugin file that is not being served, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The file.
    pub path: PathBuf,
    /// Its stamp when it was refused (an unchanged file is not retried).
    pub stamp: FileStamp,
    /// Its sha256, when it could be read.
    pub digest: Option<String>,
    /// The stamp of its `.sig` file then, if any: a new signature is a reason to
    /// try the same file again.
    pub sig_stamp: Option<FileStamp>,
    /// The reason.
    pub refusal: Refusal,
}

impl Refused {
    /// Whether the file (or its signature) changed since it was refused.
    fn is_stale(&self, path: &Path, stamp: FileStamp) -> bool {
        self.path != path
            || self.stamp != stamp
            || FileStamp::of(&sign::sig_path(path)).ok() != self.sig_stamp
    }
}

/// Why a plugin file is not being served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The file name does not make a valid plugin name.
    #[error(
        "`{0}` is not a valid plugin name: use 1-64 letters, digits, `-` or `_`, starting with a letter or digit"
    )]
    BadName(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// The component could not be loaded.
    #[error("{0}")]
    Load(String),
    /// Signatures are required and this file has no valid one.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// A tool name is already served by another plugin.
    #[error(
        "tool `{tool}` is already served by plugin `{owner}`; rename the tool in one of the two plugins"
    )]
    DuplicateTool {
        /// The tool.
        tool: String,
        /// The plugin already serving it.
        owner: String,
    },
    /// A prompt name is already served by another plugin.
    #[error(
        "prompt `{prompt}` is already served by plugin `{owner}`; rename the prompt in one of the two plugins"
    )]
    DuplicatePrompt {
        /// The prompt.
        prompt: String,
        /// The plugin already serving it.
        owner: String,
    },
    /// A tool's input or output schema is not a usable JSON Schema.
    #[error("invalid tool list: {0}")]
    Schema(#[from] schema::SchemaError),
    /// A resource URI or URI template would serve URIs another plugin serves.
    #[error(
        "resource `{mine}` overlaps `{theirs}`, already served by plugin `{owner}`: some URI would match both; give one of the two plugins its own URI scheme or prefix"
    )]
    ResourceOverlap {
        /// This plugin's URI or URI template.
        mine: String,
        /// The other plugin's URI or URI template.
        theirs: String,
        /// The plugin already serving it.
        owner: String,
    },
}

impl From<LoadError> for Refusal {
    fn from(e: LoadError) -> Self {
        Refusal::Load(e.to_string())
    }
}

pub use crate::config::is_valid_plugin_name;

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
    /// Refused plugin files by name, with the reason. A name can be both serving
    /// (an older version) and refused (a newer file that failed).
    pub refused: BTreeMap<String, Refused>,
}

impl Snapshot {
    /// Rebuilds the tool index from the serving plugins.
    fn index_tools(&mut self) {
        self.tools.clear();
        for plugin in self.plugins.values() {
            for (i, t) in plugin.code.tools.iter().enumerate() {
                self.tools.insert(t.name.clone(), (plugin.clone(), i));
            }
        }
    }

    /// The plugin serving the resource `uri` among those `visible` accepts: the
    /// one listing it as a concrete resource, else the one with a matching
    /// template.
    pub fn resource_owner_by(
        &self,
        uri: &str,
        visible: impl Fn(&Plugin) -> bool,
    ) -> Option<&Arc<Plugin>> {
        let mut candidates = self.plugins.values().filter(|p| visible(p));
        candidates
            .clone()
            .find(|p| p.code.resources.iter().any(|r| r.uri == uri))
            .or_else(|| {
                candidates.find(|p| {
                    p.code
                        .resource_templates
                        .iter()
                        .any(|t| stockade_sdk::uri_template::matches(&t.uri_template, uri))
                })
            })
    }

    /// The plugin serving the resource `uri`, if any.
    pub fn resource_owner(&self, uri: &str) -> Option<&Arc<Plugin>> {
        self.resource_owner_by(uri, |_| true)
    }

    /// Finds a tool by name.
    pub fn tool(&self, name: &str) -> Option<(&Arc<Plugin>, &crate::bindings::guest_tools::Tool)> {
        self.tools.get(name).map(|(p, i)| (p, &p.code.tools[*i]))
    }

    /// Every tool, ordered by plugin name then the plugin's own order.
    pub fn all_tools(
        &self,
    ) -> impl Iterator<Item = (&Arc<Plugin>, &crate::bindings::guest_tools::Tool)> {
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

/// What a [`reconcile`] changed.
#[derive(Default)]
pub struct Changes {
    /// Plugins that started serving, new or as a new version.
    pub loaded: Vec<Arc<Plugin>>,
    /// Names that stopped serving because their file is gone.
    pub removed: Vec<String>,
    /// Files refused in this pass.
    pub refused: Vec<(String, Refused)>,
    /// Files still being written, to look at again shortly.
    pub deferred: Vec<String>,
}

impl Changes {
    /// Whether the served tools, resources or prompts changed.
    pub fn lists_changed(&self) -> bool {
        !self.loaded.is_empty() || !self.removed.is_empty()
    }

    /// Adds what re-applying the config to this pass's result changed: a
    /// plugin loaded here and withdrawn there was never served.
    pub fn absorb(&mut self, more: Changes) {
        self.loaded.retain(|p| !more.removed.contains(&p.name));
        self.removed.extend(more.removed);
        self.refused.extend(more.refused);
        self.deferred.extend(more.deferred);
    }
}

/// A file modified this recently may still be being written: wait for it.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(250);
/// A file this recent that does not parse is assumed to be half-copied, not bad.
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Loads every `*.wasm` in `config.plugins_dir` into a fresh snapshot (start-up).
pub async fn load_dir(runtime: &Runtime, config: &Config) -> std::io::Result<Snapshot> {
    let (snapshot, _) = reconcile(runtime, config, &Snapshot::default(), None).await?;
    Ok(snapshot)
}

/// Brings `current` in line with the plugin directory: new files are loaded,
/// changed files are loaded as new versions (the old version keeps serving if the
/// new one is refused), deleted files stop serving. Unchanged files (same size
/// and modification time) are not read again. With `settle`, files modified in
/// the last moments (unless named in the set: known complete), or recent files that
/// do not parse yet, are deferred rather than refused: an operator copying a
/// file is not an error.
///
/// Tool names are unique across plugins: a plugin whose tool is already served
/// by another plugin is refused, naming both; at start-up, older files win.
pub async fn reconcile(
    runtime: &Runtime,
    config: &Config,
    current: &Snapshot,
    settle: Option<&HashSet<PathBuf>>,
) -> std::io::Result<(Snapshot, Changes)> {
    let mut files = blocking(list_plugin_files(config.plugins_dir.clone())).await?;
    // Oldest first: at start-up the older file keeps a contested name.
    files.sort_by(|a, b| (a.2.modified, &a.0).cmp(&(b.2.modified, &b.0)));
    let mut changes = Changes::default();
    let (mut next, candidates) = carry_over(current, files, &mut changes);
    // Files are loaded (read, verified, compiled or read from the cache,
    // described) a few at a time, one per core, and admitted one by one in
    // order, so the older file still wins a contested name.
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let mut loads =
        futures_util::stream::iter(candidates.into_iter().map(|(name, path, stamp)| {
            let known_complete = settle.is_some_and(|complete| {
                path.file_name()
                    .is_some_and(|n| complete.contains(Path::new(n)))
            });
            let defer = settle.is_some() && !known_complete && stamp.is_younger_than(SETTLE);
            async move {
                let loaded = if defer {
                    None
                } else {
                    Some(load_candidate(runtime, config, current, &name, &path, stamp).await)
                };
                (name, path, stamp, loaded)
            }
        }))
        .buffered(parallel);
    while let Some((name, path, stamp, loaded)) = loads.next().await {
        let Some((loaded, digest)) = loaded else {
            changes.deferred.push(name);
            continue;
        };
        let refusal = match loaded {
            Ok(plugin) => {
                match first_clash(&plugin, next.plugins.values().filter(|p| p.name != name)) {
                    None => {
                        admit(&mut next, &mut changes, plugin);
                        continue;
                    }
                    Some(clash) => clash,
                }
            }
            // A recent file that does not parse (or whose signature has not
            // arrived yet) is given until GRACE to become whole.
            Err(refusal) if settle.is_some() && is_unfinished(&refusal, &path, stamp) => {
                changes.deferred.push(name);
                continue;
            }
            Err(refusal) => refusal,
        };
        let r = Refused {
            digest,
            sig_stamp: FileStamp::of(&sign::sig_path(&path)).ok(),
            path,
            stamp,
            refusal,
        };
        tracing::error!(plugin = %name, file = %r.path.display(), "plugin refused: {}", r.refusal);
        next.refused.insert(name.clone(), r.clone());
        changes.refused.push((name, r));
    }
    if config.signatures.require {
        withdraw_unsigned(config, &mut next, &mut changes, settle.is_some()).await;
    }
    next.index_tools();
    if !changes.loaded.is_empty() || !changes.refused.is_empty() {
        crate::runtime::release_freed_memory();
    }
    Ok((next, changes))
}

/// The start of the next snapshot: files gone are `removed`; unchanged serving
/// plugins and unchanged refusals carry over as they are; a changed file under a
/// serving name keeps the old version serving until the new one is ready (or for
/// good, if it is refused). Returns the snapshot and the files to (re)load.
fn carry_over(
    current: &Snapshot,
    files: Vec<(String, PathBuf, FileStamp)>,
    changes: &mut Changes,
) -> (Snapshot, Vec<(String, PathBuf, FileStamp)>) {
    let mut next = Snapshot::default();
    let present: std::collections::HashSet<&str> = files.iter().map(|f| f.0.as_str()).collect();
    changes.removed.extend(
        current
            .plugins
            .keys()
            .filter(|name| !present.contains(name.as_str()))
            .cloned(),
    );
    let mut candidates = Vec::new();
    for (name, path, stamp) in files {
        let unchanged = current
            .plugins
            .get(&name)
            .filter(|p| p.stamp == stamp && p.path == path);
        let refused = current
            .refused
            .get(&name)
            .filter(|r| !r.is_stale(&path, stamp));
        if let Some(p) = unchanged.or_else(|| current.plugins.get(&name)) {
            next.plugins.insert(name.clone(), p.clone());
        }
        if let Some(r) = refused {
            next.refused.insert(name.clone(), r.clone());
        } else if unchanged.is_none() {
            candidates.push((name, path, stamp));
        }
    }
    (next, candidates)
}

/// Reads and hashes a candidate file once and loads it; the same bytes as the
/// version serving (a touched or re-copied file) reuse its compiled code.
/// Returns the plugin or the refusal, and the file's digest when it was read.
async fn load_candidate(
    runtime: &Runtime,
    config: &Config,
    current: &Snapshot,
    name: &str,
    path: &Path,
    stamp: FileStamp,
) -> (Result<Plugin, Refusal>, Option<String>) {
    let read = blocking(read_and_hash(path.to_owned())).await;
    let digest = read.as_ref().ok().map(|(_, d)| d.clone());
    let loaded = match (read, current.plugins.get(name)) {
        (Err(e), _) => Err(Refusal::Read(e.to_string())),
        (Ok((_, d)), Some(old)) if d == old.digest => Ok(Plugin {
            name: name.to_owned(),
            path: path.to_owned(),
            stamp,
            policy: policy_for(runtime, config, name, &d),
            digest: d,
            code: old.code.clone(),
            declared: old.declared.clone(),
            schemas: old.schemas.clone(),
        }),
        (Ok((bytes, d)), _) => load_bytes(runtime, config, name, path, stamp, &bytes, d).await,
    };
    (loaded, digest)
}

/// Under `signatures.require`, a serving version whose `.sig` was deleted or no
/// longer verifies (another key, garbage, made for other bytes) stops serving,
/// though its `.wasm` did not change. With `settle`, a `.sig` changed moments
/// ago may be the next version's, deployed before its file: the old version
/// serves on until [`GRACE`] has passed (it is looked at again shortly).
async fn withdraw_unsigned(
    config: &Config,
    next: &mut Snapshot,
    changes: &mut Changes,
    settle: bool,
) {
    let serving: Vec<Arc<Plugin>> = next.plugins.values().cloned().collect();
    let settings = config.signatures.clone();
    let failing = tokio::task::spawn_blocking(move || {
        serving
            .into_iter()
            .filter_map(|p| {
                let why = sign::check(&settings, &p.path, &p.digest).err()?;
                let sig_stamp = FileStamp::of(&sign::sig_path(&p.path)).ok();
                Some((p, why, sig_stamp))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (p, why, sig_stamp) in failing {
        let name = p.name.clone();
        if settle && sig_stamp.is_some_and(|s| s.is_younger_than(GRACE)) {
            changes.deferred.push(name);
            continue;
        }
        let r = Refused {
            path: p.path.clone(),
            stamp: p.stamp,
            digest: Some(p.digest.clone()),
            sig_stamp,
            refusal: Refusal::Signature(why),
        };
        tracing::error!(plugin = %name, "plugin stops serving: {}", r.refusal);
        next.plugins.remove(&name);
        // A newer file refused under this name keeps its own entry.
        next.refused
            .entry(name.clone())
            .or_insert_with(|| r.clone());
        changes.loaded.retain(|l| l.name != name);
        changes.refused.push((name.clone(), r));
        changes.removed.push(name);
    }
}

/// Whether a refused file may still be being written: it failed to read, parse
/// or verify, and it is recent or changed while we looked.
fn is_unfinished(refusal: &Refusal, path: &Path, stamp: FileStamp) -> bool {
    matches!(
        refusal,
        Refusal::Load(_) | Refusal::Read(_) | Refusal::Signature(_)
    ) && (stamp.is_younger_than(GRACE) || FileStamp::of(path).map_or(true, |now| now != stamp))
}

/// Serves `plugin` in `next` (replacing an older version) and records it.
fn admit(next: &mut Snapshot, changes: &mut Changes, plugin: Plugin) {
    let plugin = Arc::new(plugin);
    tracing::info!(
        plugin = %plugin.name,
        version = %plugin.code.info.version,
        digest = %plugin.digest,
        tools = plugin.code.tools.len(),
        "plugin loaded"
    );
    next.refused.remove(&plugin.name);
    next.plugins.insert(plugin.name.clone(), plugin.clone());
    changes.loaded.push(plugin);
}

/// Runs blocking file I/O on the blocking pool, not on an async worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The `*.wasm` files of `dir` as (plugin name, path, stamp).
fn list_plugin_files(
    dir: PathBuf,
) -> impl FnOnce() -> std::io::Result<Vec<(String, PathBuf, FileStamp)>> {
    move || {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") || !path.is_file() {
                continue;
            }
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Ok(stamp) = FileStamp::of(&path) else {
                continue;
            };
            files.push((name, path, stamp));
        }
        Ok(files)
    }
}

/// A file's bytes and their sha256 (hex).
fn read_and_hash(path: PathBuf) -> impl FnOnce() -> std::io::Result<(Vec<u8>, String)> {
    move || {
        let bytes = std::fs::read(&path)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, digest))
    }
}

/// The same plugins under a new configuration: every plugin gets its new limits
/// and grants (the compiled code is shared), and the signature policy is applied
/// again: a plugin that the new `[signatures]` settings refuse stops serving.
pub fn with_config(runtime: &Runtime, current: &Snapshot, config: &Config) -> (Snapshot, Changes) {
    let mut changes = Changes::default();
    // Files refused for their signature get another look under the new settings
    // at the next rescan; other refusals stand until their file changes.
    let mut next = Snapshot {
        refused: current
            .refused
            .iter()
            .filter(|(_, r)| !matches!(r.refusal, Refusal::Signature(_)))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect(),
        ..Snapshot::default()
    };
    for (name, p) in &current.plugins {
        if let Err(why) = sign::check(&config.signatures, &p.path, &p.digest) {
            let r = Refused {
                path: p.path.clone(),
                stamp: p.stamp,
                digest: Some(p.digest.clone()),
                sig_stamp: FileStamp::of(&sign::sig_path(&p.path)).ok(),
                refusal: Refusal::Signature(why),
            };
            tracing::error!(plugin = %name, "plugin stops serving: {}", r.refusal);
            next.refused.insert(name.clone(), r.clone());
            changes.refused.push((name.clone(), r));
            changes.removed.push(name.clone());
            continue;
        }
        let plugin = Arc::new(Plugin {
            name: p.name.clone(),
            path: p.path.clone(),
            stamp: p.stamp,
            digest: p.digest.clone(),
            code: p.code.clone(),
            policy: policy_for(runtime, config, name, &p.digest),
            declared: p.declared.clone(),
            schemas: p.schemas.clone(),
        });
        next.plugins.insert(name.clone(), plugin);
    }
    next.index_tools();
    (next, changes)
}

/// Reads, hashes, loads and checks one plugin file.
pub async fn load_file(
    runtime: &Runtime,
    config: &Config,
    name: &str,
    path: &Path,
) -> Result<Plugin, Refusal> {
    let (bytes, digest) = blocking(read_and_hash(path.to_owned()))
        .await
        .map_err(|e| Refusal::Read(e.to_string()))?;
    let stamp = FileStamp::of(path).map_err(|e| Refusal::Read(e.to_string()))?;
    load_bytes(runtime, config, name, path, stamp, &bytes, digest).await
}

/// Checks and loads plugin `name` from `bytes` (read from `path`, with `digest`).
async fn load_bytes(
    runtime: &Runtime,
    config: &Config,
    name: &str,
    path: &Path,
    stamp: FileStamp,
    bytes: &[u8],
    digest: String,
) -> Result<Plugin, Refusal> {
    if !is_valid_plugin_name(name) {
        return Err(Refusal::BadName(name.to_owned()));
    }
    {
        let (settings, path, digest) = (config.signatures.clone(), path.to_owned(), digest.clone());
        tokio::task::spawn_blocking(move || sign::check(&settings, &path, &digest))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(Refusal::Signature)?;
    }
    let limits = config.limits_for(name);
    let declared = inspect::declared_capabilities(bytes).ok().flatten();
    let code = runtime.load(name, bytes, &digest, limits).await?;
    check_tools(&code).map_err(|e| Refusal::from(LoadError::InvalidTools(e)))?;
    let code = Arc::new(code);
    let schemas = compile_schemas(code.clone()).await?;
    Ok(Plugin {
        name: name.to_owned(),
        path: path.to_owned(),
        stamp,
        policy: policy_for(runtime, config, name, &digest),
        digest,
        code,
        declared,
        schemas: Arc::new(schemas),
    })
}

/// Compiles the schemas of `code`'s tools on the blocking pool (a plugin may
/// declare large schemas; compiling them must not hold up an async worker).
async fn compile_schemas(code: Arc<PluginCode>) -> Result<schema::ToolSchemas, Refusal> {
    tokio::task::spawn_blocking(move || schema::ToolSchemas::compile(&code.tools))
        .await
        .map_err(|e| Refusal::Load(format!("compiling the tools' schemas failed: {e}")))?
        .map_err(Refusal::from)
}

/// The policy of plugin `name` whose file has `digest`. A digest that does not
/// match the operator's pin drops every grant (and says so in the log).
pub fn policy_for(runtime: &Runtime, config: &Config, name: &str, digest: &str) -> Policy {
    let (grants, mismatch) = config.grants_for(name, digest);
    if let Some(m) = mismatch {
        tracing::warn!(plugin = %name, "{m}");
    }
    let scope = config.plugins.get(name).and_then(|p| p.scope.clone());
    let sql = grants
        .sql
        .iter()
        .filter_map(|s| config.sql.get(s).map(|src| (s.clone(), src.clone())))
        .collect();
    let limits = config.limits_for(name);
    Policy::new(limits, grants, sql, scope, runtime.gate(name, &limits))
}

/// The first name or URI `plugin` shares with one of `others`, as a refusal:
/// tools and prompts by name, resources when some URI would be served by both
/// (a concrete URI equal to or matched by the other's, overlapping templates).
/// The plugin already serving keeps it.
fn first_clash<'a>(
    plugin: &Plugin,
    others: impl Iterator<Item = &'a Arc<Plugin>>,
) -> Option<Refusal> {
    use stockade_sdk::uri_template::overlap;
    fn uris(c: &PluginCode) -> impl Iterator<Item = &str> {
        c.resources
            .iter()
            .map(|r| r.uri.as_str())
            .chain(c.resource_templates.iter().map(|t| t.uri_template.as_str()))
    }
    let code = &plugin.code;
    for other in others {
        let owner = || other.name.clone();
        let theirs = &other.code;
        if let Some(t) = code
            .tools
            .iter()
            .find(|t| theirs.tools.iter().any(|o| o.name == t.name))
        {
            return Some(Refusal::DuplicateTool {
                tool: t.name.clone(),
                owner: owner(),
            });
        }
        if let Some(p) = code
            .prompts
            .iter()
            .find(|p| theirs.prompts.iter().any(|o| o.name == p.name))
        {
            return Some(Refusal::DuplicatePrompt {
                prompt: p.name.clone(),
                owner: owner(),
            });
        }
        for mine in uris(code) {
            if let Some(t) = uris(theirs).find(|t| overlap(mine, t)) {
                return Some(Refusal::ResourceOverlap {
                    mine: mine.to_owned(),
                    theirs: t.to_owned(),
                    owner: owner(),
                });
            }
        }
    }
    None
}

/// Checks the tool list a plugin gave: valid unique names (their schemas are
/// checked when they are compiled: [`schema::ToolSchemas::compile`]).
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
    }
    Ok(())
}

#[cfg(test)]
mod tests;
