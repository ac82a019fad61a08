//! The host configuration.
//!
//! Sources, highest precedence first: command-line flags, `STOCKADE_*` environment
//! variables (both handled by [`crate::cli`]), the TOML file given by `--config`, and
//! the built-in defaults below. The file is validated when it is read: unknown keys
//! and out-of-range values are errors that name the key, never silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod auth;
mod grants;
mod prometheus;
mod store;
pub use self::auth::{
    AuthMode, AuthSettings, is_https_or_loopback, is_loopback_host, is_valid_scope,
};
pub use self::grants::{
    ClientGrant, DirGrant, DirMode, ExecGrant, Grants, HostPattern, HttpGrant, SqlSource,
    forbidden_env_name, is_valid_env_name, whole_match_regex,
};
pub use self::prometheus::PrometheusSettings;
pub use self::store::{StoreSettings, is_valid_host_id};

/// Whether `name` is acceptable as a plugin name (a plugin's name is its file
/// name without `.wasm`): 1-64 letters, digits, `-` or `_`, starting with a
/// letter or digit.
pub fn is_valid_plugin_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `[signatures]` in the host config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignatureSettings {
    /// Refuse plugin files without a valid signature from a trusted key.
    pub require: bool,
    /// Trusted public keys, `ed25519:<base64 of 32 bytes>`.
    pub trusted_keys: Vec<String>,
}

impl SignatureSettings {
    /// Problems with the settings, for config validation. Keys are checked for
    /// their form here; `plugins::sign` refuses one that is not a valid ed25519
    /// point when it verifies (no plugin loads with it).
    pub fn problems(&self) -> Vec<String> {
        use base64::Engine as _;
        let mut out = Vec::new();
        for k in &self.trusted_keys {
            let decoded = k
                .strip_prefix("ed25519:")
                .map(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()));
            match decoded {
                Some(Ok(bytes)) if bytes.len() == 32 => {}
                Some(Ok(bytes)) => out.push(format!(
                    "signatures.trusted_keys: `{k}`: an ed25519 public key has 32 bytes, this one {}",
                    bytes.len()
                )),
                Some(Err(e)) => out.push(format!("signatures.trusted_keys: `{k}`: not base64: {e}")),
                None => out.push(format!(
                    "signatures.trusted_keys: `{k}`: expected `ed25519:<base64>` (see `stockade plugins keygen`)"
                )),
            }
        }
        if self.require && self.trusted_keys.is_empty() {
            out.push("signatures.require is on but signatures.trusted_keys is empty: no plugin could load".into());
        }
        out
    }
}

/// Errors while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more values are out of range; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The address to listen on. With `auth.mode = "none"` only loopback addresses
    /// are accepted.
    pub listen: SocketAddr,
    /// The directory holding plugin components (`*.wasm`).
    pub plugins_dir: PathBuf,
    /// The directory for the host's state (created when missing).
    pub data_dir: PathBuf,
    /// Maximum size of an HTTP request body to `/mcp`, in KiB.
    pub max_body_kib: u32,
    /// The audit log.
    pub audit: AuditSettings,
    /// Default limits for every plugin.
    pub limits: Limits,
    /// Per-plugin settings, keyed by plugin name (the file name without `.wasm`).
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Read-only SQL data sources plugins may be granted, by name.
    pub sql: BTreeMap<String, SqlSource>,
    /// Authentication of `/mcp`: the built-in OAuth server, an external identity
    /// provider, or none (loopback only).
    pub auth: AuthSettings,
    /// Where the authorization server's state lives: the embedded SQLite
    /// database (default) or a PostgreSQL shared by several hosts.
    pub store: StoreSettings,
    /// Where `GET /metrics` (Prometheus) is served, if anywhere.
    pub prometheus: PrometheusSettings,
    /// Plugin signature checking.
    pub signatures: SignatureSettings,
    /// Watch the plugin directory and the config file, applying changes live.
    pub watch: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            plugins_dir: PathBuf::from("plugins"),
            data_dir: PathBuf::from("data"),
            max_body_kib: 4096,
            audit: AuditSettings::default(),
            limits: Limits::default(),
            plugins: BTreeMap::new(),
            sql: BTreeMap::new(),
            auth: AuthSettings::default(),
            store: StoreSettings::default(),
            prometheus: PrometheusSettings::default(),
            signatures: Default::default(),
            watch: true,
        }
    }
}

/// Where and how the audit log is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditSettings {
    /// The log file; relative paths are under the data directory.
    pub file: PathBuf,
    /// Rotate when the file reaches this many MiB.
    pub rotate_mib: u32,
    /// Rotated files to keep.
    pub keep: u32,
    /// Also print every audit line to stdout (for container log collectors).
    pub stdout: bool,
    /// The checkpoint signing key (ed25519, created with mode 0600 if missing);
    /// relative paths are under the data directory.
    pub key_file: PathBuf,
    /// Write a signed checkpoint after at most this many lines.
    pub checkpoint_lines: u32,
    /// ... and at most this many seconds after the first line no checkpoint
    /// covers yet.
    pub checkpoint_secs: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            file: PathBuf::from("audit/audit.log"),
            rotate_mib: 64,
            keep: 10,
            stdout: false,
            key_file: PathBuf::from("keys/audit-ed25519.key"),
            checkpoint_lines: 1000,
            checkpoint_secs: 60,
        }
    }
}

/// Settings for one plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginConfig {
    /// Pins the plugin file's sha256 (`sha256:<hex>` or `<hex>`): a file with
    /// another digest still loads, but with no grants, until the pin is updated.
    pub digest: Option<String>,
    /// The OAuth scope a token must carry to list or call this plugin's tools.
    pub scope: Option<String>,
    /// Limits that override the defaults in `[limits]`; unset keys inherit them.
    pub limits: LimitOverrides,
    /// What the plugin may reach. Nothing unless listed.
    pub grants: Grants,
}

/// Resource limits for one plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) one call may use.
    pub fuel: u64,
    /// Wall-clock time one call may take, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory one call may use, in MiB.
    pub memory_mib: u32,
    /// Table elements one call may allocate.
    pub table_elements: u32,
    /// Calls of this plugin that may run at once.
    pub max_concurrent: u32,
    /// Calls that may wait for a free slot; past that a call fails as busy.
    pub max_queue: u32,
    /// Size of a call's result, in KiB.
    pub max_result_kib: u32,
    /// Bytes of log and progress messages one call may send, in KiB.
    pub max_log_kib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 5_000_000_000,
            timeout_ms: 10_000,
            memory_mib: 64,
            table_elements: 20_000,
            max_concurrent: 16,
            max_queue: 64,
            max_result_kib: 4096,
            max_log_kib: 256,
        }
    }
}

/// Per-plugin overrides of [`Limits`]; `None` inherits the default.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<u32>,
    pub table_elements: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub max_queue: Option<u32>,
    pub max_result_kib: Option<u32>,
    pub max_log_kib: Option<u32>,
}

impl Limits {
    /// These limits with `overrides` applied.
    pub fn with(self, o: &LimitOverrides) -> Limits {
        Limits {
            fuel: o.fuel.unwrap_or(self.fuel),
            timeout_ms: o.timeout_ms.unwrap_or(self.timeout_ms),
            memory_mib: o.memory_mib.unwrap_or(self.memory_mib),
            table_elements: o.table_elements.unwrap_or(self.table_elements),
            max_concurrent: o.max_concurrent.unwrap_or(self.max_concurrent),
            max_queue: o.max_queue.unwrap_or(self.max_queue),
            max_result_kib: o.max_result_kib.unwrap_or(self.max_result_kib),
            max_log_kib: o.max_log_kib.unwrap_or(self.max_log_kib),
        }
    }

    fn check(&self, at: &str, problems: &mut Vec<String>) {
        let mut bad = |key: &str, why: &str| problems.push(format!("{at}.{key}: {why}"));
        if self.fuel == 0 {
            bad("fuel", "must be at least 1");
        }
        if self.timeout_ms == 0 || self.timeout_ms > 3_600_000 {
            bad("timeout_ms", "must be between 1 and 3600000 (one hour)");
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            bad(
                "memory_mib",
                &format!("must be between 1 and {MAX_MEMORY_MIB}"),
            );
        }
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT {
            bad(
                "max_concurrent",
                &format!("must be between 1 and {MAX_CONCURRENT}"),
            );
        }
        if self.max_result_kib == 0 {
            bad("max_result_kib", "must be at least 1");
        }
    }
}

/// The most calls one plugin may run at once: half the host's live-instance
/// budget (`runtime::MAX_LIVE_INSTANCES` = 256), so no plugin can take all of it.
pub const MAX_CONCURRENT: u32 = 128;

/// The largest linear memory any plugin may be given, in MiB (it sizes the pooling
/// allocator's slots).
pub const MAX_MEMORY_MIB: u32 = 4096;

/// A TOML key path as the operator writes it: `plugins.web.grants.http.methods`,
/// `plugins.web.grants.exec[0].program`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// `text` with the passwords of URLs in it replaced by `***`: user info
/// (`scheme://user:PASSWORD@`) and `password=` parameters. For the parser's
/// messages, which quote the offending line and sometimes the value.
fn redact_passwords(text: &str) -> String {
    static USER_INFO: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(://[^\s/?#@:"']*:)[^\s"']*@"#).expect("valid")
    });
    static PARAMETER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(?i)(password=)[^\s&#"']*"#).expect("valid")
    });
    let text = USER_INFO.replace_all(text, "${1}***@");
    PARAMETER.replace_all(&text, "${1}***").into_owned()
}

impl Config {
    /// Reads and validates the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text. Unknown keys (typos) and invalid values
    /// are reported together, every one of them; a syntax or type error stops
    /// the parse and is reported alone, with its line and column.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: PathBuf::new(),
            message: redact_passwords(e.to_string().trim()),
        };
        let de = toml::Deserializer::parse(text).map_err(parse_error)?;
        let mut unknown = Vec::new();
        let config: Config = serde_ignored::deserialize(de, |path| {
            unknown.push(format!(
                "{}: unknown key; check its spelling (the README lists every key)",
                key_path(&path)
            ));
        })
        .map_err(parse_error)?;
        let mut problems = unknown;
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks every value, reporting all problems together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem with the values, each a sentence naming its key.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.limits.check("limits", &mut problems);
        for (name, plugin) in &self.plugins {
            if !is_valid_plugin_name(name) {
                problems.push(format!(
                    "plugins.{name}: not a valid plugin name (use letters, digits, `-` and `_`)"
                ));
            }
            self.limits
                .with(&plugin.limits)
                .check(&format!("plugins.{name}.limits"), &mut problems);
            plugin.grants.check(name, &self.sql, &mut problems);
            if let Some(d) = &plugin.digest {
                let hex = d.strip_prefix("sha256:").unwrap_or(d);
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push(format!(
                        "plugins.{name}.digest: expected `sha256:` and 64 hex digits (see `stockade plugins inspect FILE`)"
                    ));
                }
            }
        }
        for (name, src) in &self.sql {
            src.check(name, &mut problems);
        }
        self.auth.check(self.listen, &mut problems);
        self.store.check(&mut problems);
        self.prometheus.check(self.listen, &mut problems);
        if self.auth.mode == AuthMode::Builtin {
            for (name, plugin) in &self.plugins {
                if let Some(scope) = &plugin.scope
                    && !self.auth.scopes_supported.contains(scope)
                {
                    problems.push(format!(
                        "plugins.{name}.scope: `{scope}` is not in auth.scopes_supported {:?}",
                        self.auth.scopes_supported
                    ));
                }
            }
        }
        problems.extend(self.signatures.problems());
        if self.audit.rotate_mib == 0 {
            problems.push("audit.rotate_mib: must be at least 1".into());
        }
        if self.max_body_kib == 0 {
            problems.push("max_body_kib: must be at least 1".into());
        }
        problems
    }

    /// The audit writer's settings, with paths resolved against the data directory.
    pub fn audit_config(&self) -> crate::audit::AuditConfig {
        crate::audit::AuditConfig {
            path: self.data_dir.join(&self.audit.file),
            rotate_bytes: u64::from(self.audit.rotate_mib) << 20,
            keep: self.audit.keep,
            stdout: self.audit.stdout,
            key_path: self.data_dir.join(&self.audit.key_file),
            checkpoint_lines: u64::from(self.audit.checkpoint_lines.max(1)),
            checkpoint_interval: std::time::Duration::from_secs(u64::from(
                self.audit.checkpoint_secs.max(1),
            )),
            host: self.store.url.is_some().then(|| self.host_id()),
        }
    }

    /// This host's name in the shared store and the audit log: `store.host_id`,
    /// else the machine's host name, else `stockade`.
    pub fn host_id(&self) -> String {
        self.store
            .host_id
            .clone()
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| is_valid_host_id(h))
            })
            .unwrap_or_else(|| "stockade".to_owned())
    }

    /// The grants of plugin `name` for a file with `digest` (hex): none when the
    /// plugin has no entry, or when its pinned digest differs.
    pub fn grants_for(&self, name: &str, digest: &str) -> (Grants, Option<String>) {
        let Some(p) = self.plugins.get(name) else {
            return (Grants::default(), None);
        };
        if let Some(pin) = &p.digest {
            let pin = pin.strip_prefix("sha256:").unwrap_or(pin);
            if !pin.eq_ignore_ascii_case(digest) {
                return (
                    Grants::default(),
                    Some(format!(
                        "plugin `{name}` has digest sha256:{digest} but the config pins sha256:{pin}: \
                         it runs with no grants until plugins.{name}.digest is updated"
                    )),
                );
            }
        }
        (p.grants.clone(), None)
    }

    /// The effective limits of the plugin `name`.
    pub fn limits_for(&self, name: &str) -> Limits {
        match self.plugins.get(name) {
            Some(p) => self.limits.with(&p.limits),
            None => self.limits,
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
