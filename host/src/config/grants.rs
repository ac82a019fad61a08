//! What the operator grants one plugin. Everything defaults to nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The capabilities granted to one plugin (`[plugins.NAME.grants]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Read the host's own usage, performance and health figures (the
    /// `metrics` interface), subjects included.
    pub metrics: bool,
}

/// A host directory mapped into the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[serde(default)]
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
pub struct ExecGrant {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// If set, the call must pass exactly this many arguments, the i-th fully
    /// matching the i-th regular expression.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Working directory of the program (default `/`). The guest cannot change
    /// it unless `guest_cwd` is set.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Whether the guest may pick the working directory: a directory inside one
    /// of the plugin's granted `dirs`, named as the plugin sees it (`/data/work`),
    /// reached without following symbolic links. Off by default: a program run in
    /// a directory the plugin can write may read configuration planted there
    /// (a `.git/config`, a `.npmrc`, ...).
    #[serde(default)]
    pub guest_cwd: bool,
    /// Environment of the program, set by the operator (nothing else is
    /// inherited, and the guest cannot change these).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables the guest may set, by name, each with a regular expression its
    /// whole value must match (`{ TZ = "[A-Za-z_/+-]{1,40}" }`). Names that
    /// change how programs load code (`LD_*`, `BASH_ENV`, `GIT_*`, `PYTHON*`,
    /// `NODE_OPTIONS`, `PATH`, ...; see [`forbidden_env_name`]) are refused here at
    /// config validation. Any other variable the guest sends is refused.
    #[serde(default)]
    pub guest_env: BTreeMap<String, String>,
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

/// The regular expression that matches exactly the whole strings `pattern`
/// matches (`grants.exec.args`, `grants.exec.guest_env`): `^(?:pattern)$`.
/// `pattern` must be a regular expression on its own: `a)|(b` would close the
/// group early and leave `|` outside the anchors (then any argument starting
/// with `a` would pass).
pub fn whole_match_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| e.to_string())?;
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

/// Whether `name` can be an environment variable name: not empty, no `=`, no NUL.
pub fn is_valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// Why a plugin may never choose the value of the variable `name` for a program
/// it runs, or `None` when the operator may let it. These variables make loaders,
/// shells and interpreters run code or read configuration named by their value
/// (`LD_PRELOAD`, `BASH_ENV`, `GIT_CONFIG_*`, `PYTHONSTARTUP`, `NODE_OPTIONS`,
/// `PERL5OPT`, ...), or redirect where programs look for code and configuration
/// (`PATH`, `HOME`, `XDG_*`, `*PATH`). Matched case-insensitively.
pub fn forbidden_env_name(name: &str) -> Option<&'static str> {
    const EXACT: &[(&str, &str)] = &[
        ("ENV", "sh and bash read the file it names"),
        ("BASH_ENV", "bash runs the file it names"),
        ("SHELLOPTS", "changes shell behaviour"),
        ("BASHOPTS", "changes shell behaviour"),
        ("IFS", "changes how shells split words"),
        ("PS4", "shells expand it"),
        ("PROMPT_COMMAND", "bash runs it"),
        ("CDPATH", "changes where shells `cd`"),
        ("GLOBIGNORE", "changes shell globbing"),
        ("HOME", "programs read configuration from it"),
        ("SHELL", "programs run it"),
        ("EDITOR", "programs run it"),
        ("VISUAL", "programs run it"),
        ("PAGER", "programs run it"),
        ("BROWSER", "programs run it"),
        ("LESSOPEN", "less runs it"),
        ("LESSCLOSE", "less runs it"),
        ("TMPDIR", "programs create files in it"),
        ("GLIBC_TUNABLES", "the dynamic loader reads it"),
        ("LOCPATH", "the C library loads locale data from it"),
        ("NLSPATH", "the C library loads message catalogs from it"),
        ("HOSTALIASES", "the resolver reads the file it names"),
        ("RESOLV_HOST_CONF", "the resolver reads the file it names"),
        ("OPENSSL_CONF", "OpenSSL loads modules named there"),
        ("OPENSSL_ENGINES", "OpenSSL loads code from it"),
        ("OPENSSL_MODULES", "OpenSSL loads code from it"),
        ("SSLKEYLOGFILE", "TLS libraries write secrets to it"),
        ("JAVA_TOOL_OPTIONS", "the JVM loads agents named there"),
        ("_JAVA_OPTIONS", "the JVM loads agents named there"),
        ("JDK_JAVA_OPTIONS", "the JVM loads agents named there"),
        ("CLASSPATH", "the JVM loads code from it"),
        ("RUBYOPT", "ruby loads code named there"),
        ("RUBYLIB", "ruby loads code from it"),
        ("PHPRC", "php reads configuration from it"),
        ("PHP_INI_SCAN_DIR", "php reads configuration from it"),
        ("GCONV_PATH", "the C library loads code from it"),
    ];
    const PREFIXES: &[(&str, &str)] = &[
        ("LD_", "the dynamic loader reads it"),
        ("DYLD_", "the dynamic loader reads it"),
        ("MALLOC_", "the allocator reads it"),
        ("BASH_", "bash reads it (exported functions, startup files)"),
        (
            "GIT_",
            "git reads configuration and runs programs named there",
        ),
        ("PYTHON", "python loads code named there"),
        ("PERL", "perl loads code named there"),
        ("NODE_", "node loads code named there"),
        ("NPM_CONFIG_", "npm reads it"),
        ("RUBY", "ruby loads code named there"),
        ("LUA_", "lua loads code named there"),
        ("TCL", "tcl loads code named there"),
        ("XDG_", "programs read configuration from it"),
        ("SSH_", "ssh runs programs named there"),
        ("GEM_", "ruby loads code from it"),
        ("BUNDLE_", "bundler loads code from it"),
        ("CARGO_", "cargo runs programs named there"),
        ("RUSTC", "cargo runs programs named there"),
        ("DOTNET_", "the .NET runtime loads code named there"),
        ("CORECLR_", "the .NET runtime loads code named there"),
        ("R_", "R reads startup files named there"),
    ];
    let upper = name.to_ascii_uppercase();
    if let Some((_, why)) = EXACT.iter().find(|(n, _)| *n == upper) {
        return Some(why);
    }
    if let Some((_, why)) = PREFIXES.iter().find(|(p, _)| upper.starts_with(p)) {
        return Some(why);
    }
    if upper.ends_with("PATH") {
        return Some("programs look for code or data in the paths it lists");
    }
    if upper.ends_with("_OPTIONS") || upper.ends_with("_OPTS") || upper.ends_with("OPT") {
        return Some("interpreters read options (often code to load) from it");
    }
    None
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

/// A read-only SQL data source (`[sql.NAME]`): exactly one of `sqlite` and
/// `postgres`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlSource {
    /// A SQLite database file, opened read-only.
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    /// A PostgreSQL connection URL (`postgres://reader@db.internal/shop`),
    /// without its password: that comes from `password_file`. Queries run in
    /// read-only transactions; give a role that can only `SELECT`.
    #[serde(default)]
    pub postgres: Option<String>,
    /// A file holding the PostgreSQL password (first line), readable by the
    /// host only.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL connections kept for this source at most (default 4).
    #[serde(default = "default_sql_connections")]
    pub max_connections: u32,
    /// Most rows returned by one query (default 1000).
    #[serde(default = "default_max_rows")]
    pub max_rows: u32,
    /// Query timeout in milliseconds (default 5000).
    #[serde(default = "default_sql_timeout")]
    pub timeout_ms: u64,
    /// Most bytes one query's result may hold, in KiB (default 4096): values
    /// are counted while rows are read, and a query passing it fails naming
    /// this limit. Also the largest single value SQLite may build. At least 1.
    #[serde(default = "default_sql_result")]
    pub max_result_kib: u32,
}

fn default_sql_connections() -> u32 {
    4
}

fn default_max_rows() -> u32 {
    1000
}

fn default_sql_timeout() -> u64 {
    5000
}

fn default_sql_result() -> u32 {
    4096
}

impl SqlSource {
    /// Adds what is wrong with `[sql.NAME]` to `problems`.
    pub(crate) fn check(&self, name: &str, problems: &mut Vec<String>) {
        match (&self.sqlite, &self.postgres) {
            (Some(path), None) => {
                if !path.is_absolute() {
                    problems.push(format!(
                        "sql.{name}.sqlite: `{}` must be an absolute path",
                        path.display()
                    ));
                }
                if self.password_file.is_some() {
                    problems.push(format!(
                        "sql.{name}.password_file: only for `postgres` sources"
                    ));
                }
            }
            (None, Some(url)) => {
                super::store::check_postgres_url(&format!("sql.{name}.postgres"), url, problems)
            }
            (Some(_), Some(_)) => problems.push(format!(
                "sql.{name}: give either `sqlite` or `postgres`, not both"
            )),
            (None, None) => problems.push(format!(
                "sql.{name}: give the database: `sqlite = \"/path/to.db\"` or \
                 `postgres = \"postgres://user@host/db\"`"
            )),
        }
        if let Some(p) = &self.password_file
            && !p.is_absolute()
        {
            problems.push(format!(
                "sql.{name}.password_file: `{}` must be an absolute path",
                p.display()
            ));
        }
        if self.max_connections == 0 || self.max_connections > 64 {
            problems.push(format!(
                "sql.{name}.max_connections: {} is not between 1 and 64",
                self.max_connections
            ));
        }
    }
}

/// The methods an HTTP grant may list (RFC 9110 and PATCH).
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

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
            if !is_valid_env_name(k) {
                problems.push(format!("{at}.env: `{k}` is not a valid variable name"));
            }
        }
        if let Some(h) = &self.http {
            for host in &h.hosts {
                if let Err(e) = HostPattern::parse(host) {
                    problems.push(format!("{at}.http.hosts: `{host}`: {e}"));
                }
            }
            for m in &h.methods {
                if !HTTP_METHODS
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(m))
                {
                    problems.push(format!(
                        "{at}.http.methods: `{m}` is not an HTTP method (use {})",
                        HTTP_METHODS.join(", ")
                    ));
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
                if let Err(err) = whole_match_regex(p) {
                    problems.push(format!(
                        "{at}.exec[{i}].args: `{p}` is not a valid regex: {err}"
                    ));
                }
            }
            for k in e.env.keys() {
                if !is_valid_env_name(k) {
                    problems.push(format!(
                        "{at}.exec[{i}].env: `{k}` is not a valid variable name"
                    ));
                }
            }
            for (k, p) in &e.guest_env {
                if !is_valid_env_name(k) {
                    problems.push(format!(
                        "{at}.exec[{i}].guest_env: `{k}` is not a valid variable name"
                    ));
                } else if let Some(why) = forbidden_env_name(k) {
                    problems.push(format!(
                        "{at}.exec[{i}].guest_env: a plugin may never set `{k}` ({why}); \
                         set a fixed value in `env` if the program needs it"
                    ));
                }
                if let Err(err) = whole_match_regex(p) {
                    problems.push(format!(
                        "{at}.exec[{i}].guest_env.{k}: `{p}` is not a valid regex: {err}"
                    ));
                }
            }
            if e.guest_cwd && self.dirs.is_empty() {
                problems.push(format!(
                    "{at}.exec[{i}].guest_cwd: the plugin has no granted `dirs` to pick a \
                     working directory in"
                ));
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

#[cfg(test)]
#[path = "grants_tests.rs"]
mod tests;

/// One allow-list entry: a host name (or `*.suffix`) and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `api.example.com`, `*.example.com`, `localhost:8080`, `[::1]:80`.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("empty host".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err("write a host name (and optional port), not a URL".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or("unclosed `[` in IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?),
                None if after.is_empty() => None,
                None => return Err(format!("unexpected `{after}` after `]`")),
            };
            (h.to_owned(), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    Some(p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?),
                ),
                None => (s.clone(), None),
            }
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            return Err("a wildcard must be a leading `*.` followed by a domain".into());
        }
        Ok(HostPattern {
            host,
            wildcard,
            port,
        })
    }

    /// Whether `host:port` is allowed by this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        host_ok && port_ok
    }
}
