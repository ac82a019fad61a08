//! What the operator grants one plugin. Everything defaults to nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The capabilities granted to one plugin (`[plugins.NAME.grants]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Host directories visible to the plugin (WASI preopens).
    pub dirs: Vec<DirGrant>,
    /// Environment variables the plugin sees, with their values.
    pub env: BTreeMap<String, String>,
    /// Outbound HTTP.
    pub http: Option<HttpGrant>,
    /// Host programs the plugin may run.
    pub exec: Vec<ExecGrant>,
    /// Names of `[sql.NAME]` data sources the plugin may query.
    pub sql: Vec<String>,
    /// Requests the plugin may send to the MCP client: `sampling`, `elicitation`.
    pub client: Vec<ClientGrant>,
}

/// A host directory mapped into the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host (must exist).
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/data`.
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: DirMode,
}

/// Access to a granted directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirMode {
    /// Read-only.
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    /// Read and write.
    #[serde(rename = "rw")]
    ReadWrite,
}

/// Outbound HTTP allowed to a plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpGrant {
    /// Allowed hosts: `api.example.com`, `*.example.com` (subdomains only),
    /// optionally with a port (`localhost:8080`). Without a port, 80 and 443.
    pub hosts: Vec<String>,
    /// Allowed methods (upper case); empty means any.
    pub methods: Vec<String>,
    /// Allow destinations on loopback, private, link-local and other
    /// non-public addresses (off by default, even for allow-listed names).
    pub allow_private: bool,
    /// Timeout for connecting, for the first byte and between bytes of the
    /// response, in milliseconds (0: 30 s). A plugin may ask for shorter
    /// timeouts, never longer ones.
    pub timeout_ms: u64,
}

/// One program a plugin may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// If set, the call must pass exactly this many arguments, the i-th fully
    /// matching the i-th regular expression.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Working directory (default: the data directory's `exec/` folder... or `/`).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Environment of the program (nothing else is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Timeout in milliseconds (default 30000).
    #[serde(default = "default_exec_timeout")]
    pub timeout_ms: u64,
    /// Cap on each of stdout and stderr, in KiB (default 1024).
    #[serde(default = "default_exec_output")]
    pub max_output_kib: u32,
}

fn default_exec_timeout() -> u64 {
    30_000
}

fn default_exec_output() -> u32 {
    1024
}

/// A kind of request to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientGrant {
    /// `sampling/createMessage`.
    Sampling,
    /// `elicitation/create`.
    Elicitation,
}

/// A read-only SQL data source (`[sql.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSource {
    /// A SQLite database file, opened read-only.
    pub sqlite: PathBuf,
    /// Most rows returned by one query (default 1000).
    #[serde(default = "default_max_rows")]
    pub max_rows: u32,
    /// Query timeout in milliseconds (default 5000).
    #[serde(default = "default_sql_timeout")]
    pub timeout_ms: u64,
}

fn default_max_rows() -> u32 {
    1000
}

fn default_sql_timeout() -> u64 {
    5000
}

impl Grants {
    /// Checks the grants of plugin `name`, adding every problem to `problems`.
    pub(crate) fn check(
        &self,
        name: &str,
        sources: &BTreeMap<String, SqlSource>,
        problems: &mut Vec<String>,
    ) {
        let at = format!("plugins.{name}.grants");
        for (i, d) in self.dirs.iter().enumerate() {
            if !d.host.is_absolute() {
                problems.push(format!(
                    "{at}.dirs[{i}].host: `{}` must be an absolute path",
                    d.host.display()
                ));
            } else if !d.host.is_dir() {
                problems.push(format!(
                    "{at}.dirs[{i}].host: `{}` is not an existing directory",
                    d.host.display()
                ));
            }
            if !d.guest.starts_with('/') {
                problems.push(format!(
                    "{at}.dirs[{i}].guest: `{}` must start with `/`",
                    d.guest
                ));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                problems.push(format!("{at}.env: `{k}` is not a valid variable name"));
            }
        }
        if let Some(h) = &self.http {
            for host in &h.hosts {
                if let Err(e) = crate::capabilities::http::HostPattern::parse(host) {
                    problems.push(format!("{at}.http.hosts: `{host}`: {e}"));
                }
            }
        }
        for (i, e) in self.exec.iter().enumerate() {
            if !e.program.is_absolute() {
                problems.push(format!(
                    "{at}.exec[{i}].program: `{}` must be an absolute path",
                    e.program.display()
                ));
            }
            for p in e.args.iter().flatten() {
                if let Err(err) = regex::Regex::new(&format!("^(?:{p})$")) {
                    problems.push(format!(
                        "{at}.exec[{i}].args: `{p}` is not a valid regex: {err}"
                    ));
                }
            }
        }
        for s in &self.sql {
            if !sources.contains_key(s) {
                problems.push(format!(
                    "{at}.sql: no data source `{s}` (define it under [sql.{s}])"
                ));
            }
        }
    }
}
