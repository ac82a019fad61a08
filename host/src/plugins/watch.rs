//! The live plugin directory: watches it (and the config file) and applies changes.
//!
//! File-system events are debounced; each burst triggers one [`super::reconcile`]
//! pass, whose result replaces the catalog's snapshot atomically (calls in flight
//! keep the version they started with). Files still being written are looked at
//! again shortly; a periodic rescan catches events a file system did not report.
//! A config file that does not parse is refused and the old config stays.
//!
//! Policy never waits for code: config changes (signatures, grants, scopes,
//! limits) are applied by a task of their own, at once, even while a rescan
//! compiles a large plugin; and a rescan re-applies the config in force when
//! it finishes, so nothing it loaded under an older policy is served under the
//! new one. Catalog replacements are serialized (the `apply` lock, held only
//! while a snapshot is swapped, never during a compile).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::{Catalog, Changes, reconcile, with_config};
use crate::audit::{Audit, AuditEvent};
use crate::config::Config;
use crate::runtime::Runtime;

/// Quiet time that ends a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Quiet time that ends a burst whose every plugin file is known complete
/// (closed after writing, or renamed into the directory).
const COMPLETE_QUIET: Duration = Duration::from_millis(5);
/// The longest a burst is held back, however busy the directory is.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// When to look again at files still being written.
const RECHECK: Duration = Duration::from_millis(300);
/// A full rescan even without events.
const RESCAN: Duration = Duration::from_secs(10);

/// Produces the effective config again (file + flags + environment).
pub type ConfigSource = Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// Applies plugin-directory and config changes to the catalog.
pub struct Reloader {
    runtime: Arc<Runtime>,
    catalog: Arc<Catalog>,
    config: Mutex<Arc<Config>>,
    audit: Audit,
    changed: watch::Sender<u64>,
    listing: Option<PathBuf>,
    /// The config warnings last logged, so each is logged once, when it appears.
    warned: Mutex<Vec<String>>,
    /// Held while a new snapshot is computed from the current one and swapped
    /// in (not while plugins compile).
    apply: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader starting from `config`. `changed` is bumped whenever the served
    /// lists change, so the MCP layer can tell clients. With `listing`, every
    /// new snapshot is also written there (see [`super::listing`]).
    pub fn new(
        runtime: Arc<Runtime>,
        catalog: Arc<Catalog>,
        config: Arc<Config>,
        audit: Audit,
        listing: Option<PathBuf>,
    ) -> (Arc<Reloader>, watch::Receiver<u64>) {
        let (changed, rx) = watch::channel(0);
        let warned = Mutex::new(super::listing::unmatched_config(
            &catalog.snapshot(),
            &config,
        ));
        (
            Arc::new(Reloader {
                runtime,
                catalog,
                config: Mutex::new(config),
                audit,
                changed,
                listing,
                warned,
                apply: tokio::sync::Mutex::new(()),
            }),
            rx,
        )
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logs config warnings that are new, then writes the current snapshot to
    /// the listing file, if there is one (on the blocking pool).
    async fn publish(&self) {
        let (snapshot, config) = (self.catalog.snapshot(), self.config());
        let warnings = super::listing::unmatched_config(&snapshot, &config);
        {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            for w in warnings.iter().filter(|w| !warned.contains(w)) {
                tracing::warn!("{w}");
            }
            *warned = warnings;
        }
        let Some(path) = self.listing.clone() else {
            return;
        };
        let shown = path.display().to_string();
        let written =
            super::blocking(move || super::listing::write(&snapshot, &config, &path)).await;
        if let Err(e) = written {
            tracing::warn!(file = %shown, "cannot write the plugin listing: {e}");
        }
    }

    /// Rescans the plugin directory once; returns what changed. Files named in
    /// `complete` (closed after writing or renamed into place since) are not
    /// waited for even if they were modified moments ago.
    pub async fn rescan(&self, complete: &HashSet<PathBuf>) -> Changes {
        let config = self.config();
        tracing::debug!(dir = %config.plugins_dir.display(), "rescanning the plugin directory");
        let current = self.catalog.snapshot();
        let (mut next, mut changes) = match reconcile(
            &self.runtime,
            &config,
            &current,
            Some(complete),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(dir = %config.plugins_dir.display(), "cannot read the plugin directory: {e}");
                return Changes::default();
            }
        };
        let _apply = self.apply.lock().await;
        // The config may have changed while this pass compiled: what it loaded
        // is served only under the config in force now.
        let now = self.config();
        if !Arc::ptr_eq(&now, &config) {
            let (runtime, loaded) = (self.runtime.clone(), next);
            match tokio::task::spawn_blocking(move || with_config(&runtime, &loaded, &now)).await {
                Ok((rebased, more)) => {
                    next = rebased;
                    changes.absorb(more);
                }
                Err(e) => {
                    tracing::error!(
                        "re-applying the config to a rescan failed: {e}; its result is dropped"
                    );
                    return Changes::default();
                }
            }
        }
        if changes.loaded.is_empty() && changes.removed.is_empty() && changes.refused.is_empty() {
            // Nothing served changed; keep refusal bookkeeping in sync anyway.
            if next.refused.len() != current.refused.len() {
                self.catalog.replace(next);
                self.publish().await;
            }
            return changes;
        }
        self.catalog.replace(next);
        self.publish().await;
        audit_changes(&self.audit, &changes).await;
        if changes.lists_changed() {
            self.changed.send_modify(|n| *n += 1);
        }
        changes
    }

    /// Re-reads the config; applies it to every plugin, or keeps the old one.
    pub async fn reload_config(&self, source: &ConfigSource) {
        // Reading the files (config, users) happens on the blocking pool.
        let read = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || source())
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the config reader failed: {e}")))
        };
        match read {
            Ok(new) => {
                let old = self.config();
                for (what, changed) in [
                    ("listen", old.listen != new.listen),
                    ("plugins_dir", old.plugins_dir != new.plugins_dir),
                    ("data_dir", old.data_dir != new.data_dir),
                ] {
                    if changed {
                        tracing::warn!("config: `{what}` changed; it takes effect after a restart");
                    }
                }
                let new = Arc::new(new);
                let _apply = self.apply.lock().await;
                // Signature checks read `.sig` files: on the blocking pool too.
                let (next, changes) = {
                    let (runtime, current, config) =
                        (self.runtime.clone(), self.catalog.snapshot(), new.clone());
                    match tokio::task::spawn_blocking(move || {
                        with_config(&runtime, &current, &config)
                    })
                    .await
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(
                                "applying the new config failed: {e}; the previous config stays"
                            );
                            return;
                        }
                    }
                };
                *self.config.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
                self.catalog.replace(next);
                self.publish().await;
                tracing::info!("config reloaded: new limits and grants apply to the next call");
                self.audit
                    .note(AuditEvent::ConfigReloaded {
                        ok: true,
                        detail: "applied".into(),
                    })
                    .await;
                audit_changes(&self.audit, &changes).await;
                self.changed.send_modify(|n| *n += 1);
            }
            Err(e) => {
                tracing::error!("config change refused, the previous config stays in force: {e:#}");
                self.audit
                    .note(AuditEvent::ConfigReloaded {
                        ok: false,
                        detail: format!("{e:#}"),
                    })
                    .await;
            }
        }
    }

    /// Watches the plugin directory and `config_file` until the process ends.
    ///
    /// Only content changes of the files that matter count: `*.wasm` and
    /// `*.wasm.sig` in the plugin directory, and the config file itself (its
    /// directory is watched so an editor's atomic rename is seen). Opening or
    /// reading a file, listing the directory and changes to other files next to
    /// the config are ignored, so the host's own reads never trigger it again.
    /// A burst is applied once it has been quiet for [`DEBOUNCE`], and at most
    /// [`MAX_WAIT`] after its first event however busy the directory is. A
    /// config whose bytes did not change is not applied again.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        config_file: Option<PathBuf>,
        source: ConfigSource,
    ) -> notify::Result<()> {
        let dir = self.config().plugins_dir.clone();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let config_file = config_file.map(|f| std::path::absolute(&f).unwrap_or(f));
        let (tx, mut rx) = mpsc::unbounded_channel::<Relevant>();
        let filter = EventFilter {
            plugins_dir: dir.clone(),
            config_file: config_file.clone(),
        };
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Some(r) = res.ok().and_then(|ev| filter.classify(&ev)) {
                    let _ = tx.send(r);
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        if let Some(parent) = config_file.as_ref().and_then(|f| f.parent())
            && parent != dir
        {
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
        let mut config_hash = config_file.as_deref().and_then(file_hash);
        // Rescans and config reloads run in tasks of their own, so a config
        // change is applied while a rescan compiles.
        let (rescans, wanted) = mpsc::unbounded_channel::<HashSet<PathBuf>>();
        let (reconfigure, config_changed) = watch::channel(0u64);
        self.spawn_rescanner(wanted);
        self.spawn_reconfigurer(config_changed, source, rescans.clone());
        tokio::spawn(async move {
            let _watcher = watcher; // dropped (and stopped) with the task
            loop {
                let Some(first) = rx.recv().await else { return };
                let mut burst = Burst::default();
                burst.add(first);
                let give_up = tokio::time::Instant::now() + MAX_WAIT;
                loop {
                    let wait = if burst.all_complete() {
                        COMPLETE_QUIET
                    } else {
                        DEBOUNCE
                    };
                    let quiet = (tokio::time::Instant::now() + wait).min(give_up);
                    match tokio::time::timeout_at(quiet, rx.recv()).await {
                        Ok(Some(ev)) => burst.add(ev),
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if burst.config {
                    let now = config_file.as_deref().and_then(file_hash);
                    if now != config_hash {
                        config_hash = now;
                        reconfigure.send_modify(|n| *n += 1);
                    } else {
                        tracing::debug!("config file event without a content change; ignored");
                    }
                }
                if burst.plugins {
                    let _ = rescans.send(burst.complete);
                }
            }
        });
        Ok(())
    }

    /// Runs rescans one at a time as they are asked for (requests that queue
    /// up while one runs make one more pass), again shortly while files are
    /// still being written, and every [`RESCAN`] regardless.
    fn spawn_rescanner(self: &Arc<Self>, mut wanted: mpsc::UnboundedReceiver<HashSet<PathBuf>>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = RESCAN;
            loop {
                let mut complete = match tokio::time::timeout(wait, wanted.recv()).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return,
                    // A re-check, or the periodic rescan.
                    Err(_) => HashSet::new(),
                };
                while let Ok(more) = wanted.try_recv() {
                    complete.extend(more);
                }
                let changes = this.rescan(&complete).await;
                wait = if changes.deferred.is_empty() {
                    RESCAN
                } else {
                    RECHECK
                };
            }
        });
    }

    /// Applies config changes as they come, at once (never behind a rescan's
    /// compile), then asks for a rescan: a new config may let refused files in.
    fn spawn_reconfigurer(
        self: &Arc<Self>,
        mut changed: watch::Receiver<u64>,
        source: ConfigSource,
        rescans: mpsc::UnboundedSender<HashSet<PathBuf>>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            while changed.changed().await.is_ok() {
                this.reload_config(&source).await;
                let _ = rescans.send(HashSet::new());
            }
        });
    }
}

/// Audits what a reconcile (start-up included) or a config change did to the
/// served plugins.
pub async fn audit_changes(audit: &Audit, changes: &Changes) {
    for p in &changes.loaded {
        audit
            .note(AuditEvent::PluginLoaded {
                plugin: p.name.clone(),
                version: p.code.info.version.clone(),
                digest: p.digest.clone(),
                tools: p.code.tools.iter().map(|t| t.name.clone()).collect(),
            })
            .await;
    }
    for name in &changes.removed {
        tracing::info!(plugin = %name, "plugin removed");
        audit
            .note(AuditEvent::PluginRemoved {
                plugin: name.clone(),
            })
            .await;
    }
    for (name, r) in &changes.refused {
        audit
            .note(AuditEvent::PluginRefused {
                plugin: name.clone(),
                file: r.path.display().to_string(),
                digest: r.digest.clone(),
                reason: r.refusal.to_string(),
            })
            .await;
    }
}

/// What a relevant file-system event touched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Relevant {
    /// A plugin file or its signature was changed (or something in the
    /// directory, when the path is unknown).
    Plugin(Option<PathBuf>),
    /// A plugin file is complete: its writer closed it, or it was renamed into
    /// the directory.
    Complete(PathBuf),
    /// The config file.
    Config,
}

/// The events of one burst.
#[derive(Debug, Default)]
struct Burst {
    plugins: bool,
    config: bool,
    any: bool,
    /// Plugin files (names in the directory) complete as of their last event.
    complete: HashSet<PathBuf>,
    /// Whether an event may concern a file not (yet) complete.
    unsettled: bool,
    /// Files changed since their last completion.
    pending: HashSet<PathBuf>,
}

impl Burst {
    fn add(&mut self, r: Relevant) {
        self.any = true;
        match r {
            Relevant::Plugin(Some(path)) => {
                self.plugins = true;
                let name = file_name(&path);
                self.complete.remove(&name);
                self.pending.insert(name);
            }
            Relevant::Plugin(None) => {
                self.plugins = true;
                self.unsettled = true;
            }
            Relevant::Complete(path) => {
                self.plugins = true;
                let name = file_name(&path);
                self.pending.remove(&name);
                self.complete.insert(name);
            }
            Relevant::Config => self.config = true,
        }
    }

    /// Whether every plugin file this burst touched is complete (and nothing
    /// else happened): no reason to wait for more events.
    fn all_complete(&self) -> bool {
        !self.complete.is_empty() && self.pending.is_empty() && !self.unsettled && !self.config
    }
}

/// Decides which file-system events matter (see [`Reloader::spawn_watcher`]).
struct EventFilter {
    plugins_dir: PathBuf,
    config_file: Option<PathBuf>,
}

impl EventFilter {
    fn classify(&self, ev: &notify::Event) -> Option<Relevant> {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
        let in_dir = |p: &std::path::Path| p.parent() == Some(self.plugins_dir.as_path());
        let is_wasm = |p: &std::path::Path| p.extension().is_some_and(|e| e == "wasm");
        match ev.kind {
            // A plugin file closed after writing is complete.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                return ev
                    .paths
                    .iter()
                    .find(|p| in_dir(p) && is_wasm(p))
                    .map(|p| Relevant::Complete(p.clone()));
            }
            // Opening, reading and closing a file change nothing.
            EventKind::Access(_) => return None,
            // So is a plugin file renamed into the directory (the last path
            // of a rename is its new name).
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                if let Some(to) = ev.paths.last().filter(|p| in_dir(p) && is_wasm(p)) {
                    return Some(Relevant::Complete(to.clone()));
                }
            }
            _ => {}
        }
        let mut hit = None;
        for p in &ev.paths {
            if self.config_file.as_deref() == Some(p.as_path()) {
                return Some(Relevant::Config);
            }
            if in_dir(p) && is_plugin_file(p) {
                hit = Some(Relevant::Plugin(Some(p.clone())));
            }
        }
        // An overflowed queue or an event without paths: look at everything.
        if ev.paths.is_empty() || ev.need_rescan() {
            return Some(Relevant::Plugin(None));
        }
        hit
    }
}

/// The last component of `path`.
fn file_name(path: &std::path::Path) -> PathBuf {
    PathBuf::from(path.file_name().unwrap_or_default())
}

/// `NAME.wasm` or `NAME.wasm.sig`.
fn is_plugin_file(p: &std::path::Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".wasm") || name.ends_with(".wasm.sig")
}

/// The sha256 of a file's bytes, or `None` if it cannot be read.
fn file_hash(path: &std::path::Path) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
