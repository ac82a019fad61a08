//! The command line. Parsing and wiring only: the work is done by the modules it
//! calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::audit::{Audit, AuditEvent};
use crate::auth::{AuthState, ScopeResolver, Secret};
use crate::config::{AuthMode, Config};
use crate::http::{HttpConfig, router};
use crate::mcp::Shared;
use crate::plugins::watch::{ConfigSource, Reloader};
use crate::plugins::{Catalog, load_dir};
use crate::runtime::Runtime;

/// `print!` that ends the process quietly (exit 0) when stdout is closed
/// (`stockade plugins list | head -2`) instead of panicking on the broken pipe.
macro_rules! out {
    ($($t:tt)*) => { write_stdout(format_args!($($t)*), false) };
}

/// `println!` with [`out!`]'s handling of a closed stdout.
macro_rules! outln {
    () => { write_stdout(format_args!(""), true) };
    ($($t:tt)*) => { write_stdout(format_args!($($t)*), true) };
}

/// Writes to stdout; a reader that went away ends the process with success.
fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// Stockade: an MCP host whose tools are sandboxed WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "stockade", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        env = "STOCKADE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve MCP over Streamable HTTP at /mcp.
    Serve(ServeArgs),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with plugin files.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Print an argon2id hash of a password, for `auth.users_file` entries
    /// (`password_hash = "..."`): asked twice without echo on a terminal, else
    /// one line read from standard input.
    HashPassword,
    /// Work with the tokens of the built-in OAuth server.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Work with the token signing keys of the built-in OAuth server.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Internal: compiles the component on stdin for a serving host and
    /// writes the compiled code on stdout (see `runtime::compiler`).
    #[command(name = "internal-compile", hide = true)]
    InternalCompile {
        /// The host's fuel switch.
        #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
        fuel: bool,
        /// The host's epoch switch.
        #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
        epoch: bool,
    },
}

/// `stockade keys ...`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a new signing key to the store (the data directory's, or
    /// `store.url`'s): every host serving from it signs with the new key within
    /// seconds, and keeps publishing and accepting the old ones until the
    /// tokens they signed have expired (`auth.access_token_ttl_secs` + 60 s).
    Rotate {
        /// Where the host keeps its state (`--data`, or the config's
        /// `data_dir` and `[store]`).
        #[command(flatten)]
        dirs: DirArgs,
        /// Retire the previous keys at once instead of after the token
        /// lifetime (a key was compromised): every token they signed is
        /// refused on every host within seconds, and clients log in again.
        #[arg(long)]
        retire_now: bool,
    },
}

/// `stockade tokens ...`
#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Revoke every token (refresh and access) of a user or of a client, in the
    /// data directory's store. A host serving from it refuses them at once.
    Revoke(TokensRevokeArgs),
}

/// Options of `stockade tokens revoke`: exactly one of `--subject`, `--client`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("whose").required(true).args(["subject", "client"])))]
pub struct TokensRevokeArgs {
    /// Where the host keeps its state (`--data`, or the config's `data_dir`).
    #[command(flatten)]
    pub dirs: DirArgs,
    /// The user (token subject, e.g. `alice` or `operator`).
    #[arg(long)]
    pub subject: Option<String>,
    /// The OAuth client id.
    #[arg(long)]
    pub client: Option<String>,
}

/// `stockade plugins ...`
#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Show what a plugin file is: name, version, sha256, tools, the capabilities
    /// it declares (which grant nothing), and a config snippet to grant them.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every plugin a host knows: name, version, digest, serving or refused (and
    /// why), tools, grants. Reads `<data>/plugins.json`, which a serving host
    /// keeps up to date (also after it stops); without it, loads the plugin
    /// directory with the config (a dry run) and says so.
    List {
        /// Where the config, plugins and data are.
        #[command(flatten)]
        dirs: DirArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create an ed25519 signing key pair: writes the secret key to KEYFILE
    /// (mode 0600) and prints the public key for `signatures.trusted_keys`.
    Keygen {
        /// Where to write the secret key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a plugin file: writes `FILE.sig`.
    Sign {
        /// The `.wasm` component.
        file: PathBuf,
        /// The secret key file from `plugins keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check `FILE.sig` against trusted public keys; fails unless one of them
    /// signed exactly these bytes.
    Verify {
        /// The `.wasm` component.
        file: PathBuf,
        /// A trusted public key, `ed25519:<base64>` (repeat for several).
        #[arg(long = "trusted-key", required = true)]
        trusted_keys: Vec<String>,
    },
}

/// Where a host keeps its plugins and state (for commands that do not serve).
#[derive(clap::Args, Debug)]
pub struct DirArgs {
    /// TOML config file.
    #[arg(long, short, env = "STOCKADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of plugin components (default ./plugins or the config's).
    #[arg(long, env = "STOCKADE_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// The host's state directory (default ./data or the config's).
    #[arg(long, env = "STOCKADE_DATA")]
    pub data: Option<PathBuf>,
}

impl DirArgs {
    /// The config with the directories overridden.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.plugins {
            config.plugins_dir = v.clone();
        }
        if let Some(v) = &self.data {
            config.data_dir = v.clone();
        }
        Ok(config)
    }
}

/// `stockade audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the audit log: hash chain, line numbers, signed checkpoints, no file
    /// missing. Takes the audit directory or its files in any order (e.g.
    /// `data/audit` or `data/audit/audit.log*`); reports the first broken line.
    Verify {
        /// Audit files or directories, in any order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The checkpoint public key (`ed25519:…`, from `stockade audit key`),
        /// best recorded away from this host. Default: derived from the key in the
        /// data directory, or in `../keys/` beside the audit directory.
        #[arg(long)]
        public_key: Option<String>,
        /// Where the config and data are (to find the key).
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Print the public key that signs audit checkpoints, creating the key in
    /// the data directory (mode 0600) if it does not exist yet.
    Key {
        /// Where the config and data are.
        #[command(flatten)]
        dirs: DirArgs,
    },
}

/// Options of `stockade serve`. Each overrides the config file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, short, env = "STOCKADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "STOCKADE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of plugin components, `*.wasm` (default ./plugins).
    #[arg(long, env = "STOCKADE_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Directory for the host's state (default ./data).
    #[arg(long, env = "STOCKADE_DATA")]
    pub data: Option<PathBuf>,
    /// Authentication of /mcp: builtin (OAuth server, default), external (an
    /// identity provider's JWTs), none (loopback only).
    #[arg(long, env = "STOCKADE_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// The URL clients use to reach this host, e.g. https://mcp.example.com behind
    /// a TLS proxy (default http://<listen address>). The OAuth issuer.
    #[arg(long, env = "STOCKADE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File holding the operator password (first line). STOCKADE_PASSWORD (an
    /// environment variable only, never a flag) takes precedence.
    #[arg(long, env = "STOCKADE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// TOML file of users with argon2 password hashes and scopes.
    #[arg(long, env = "STOCKADE_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// Skip the login page for clients redirecting to loopback (single-user,
    /// loopback-only setups).
    #[arg(long, env = "STOCKADE_AUTO_APPROVE")]
    pub auto_approve: bool,
}

impl ServeArgs {
    /// The effective configuration: defaults, then the file, then flags/env.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.plugins {
            config.plugins_dir = v.clone();
        }
        if let Some(v) = &self.data {
            config.data_dir = v.clone();
        }
        if let Some(v) = self.auth {
            config.auth.mode = v;
        }
        if let Some(v) = &self.public_url {
            config.auth.public_url = Some(v.clone());
        }
        if let Some(v) = &self.password_file {
            config.auth.password_file = Some(v.clone());
        }
        if let Some(v) = &self.users_file {
            config.auth.users_file = Some(v.clone());
        }
        if self.auto_approve {
            config.auth.auto_approve = true;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::InternalCompile { fuel, epoch } = cli.command {
        let options = crate::runtime::RuntimeOptions { fuel, epoch };
        return ExitCode::from(crate::runtime::compiler::child_main(options) as u8);
    }
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Audit(AuditCommand::Verify {
                files,
                public_key,
                dirs,
            }) => audit_verify(&files, public_key.as_deref(), &dirs),
            Command::Audit(AuditCommand::Key { dirs }) => audit_key(&dirs),
            Command::Plugins(PluginsCommand::Inspect { file, json }) => {
                plugins_inspect(&file, json).await
            }
            Command::Plugins(PluginsCommand::List { dirs, json }) => {
                plugins_list(&dirs, json).await
            }
            Command::Plugins(PluginsCommand::Keygen { out }) => plugins_keygen(&out),
            Command::Plugins(PluginsCommand::Sign { file, key }) => plugins_sign(&file, &key),
            Command::Plugins(PluginsCommand::Verify { file, trusted_keys }) => {
                plugins_verify(&file, &trusted_keys)
            }
            Command::HashPassword => hash_password(),
            Command::Tokens(TokensCommand::Revoke(args)) => tokens_revoke(&args).await,
            Command::Keys(KeysCommand::Rotate { dirs, retire_now }) => {
                keys_rotate(&dirs, retire_now).await
            }
            Command::InternalCompile { .. } => unreachable!("handled before the async runtime"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // rmcp's own INFO lines (one per session and request) are for debugging it.
    let filter = EnvFilter::try_from_env("STOCKADE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Shows the password made up on a first run, once, on standard error (not in
/// the structured log).
fn show_generated_password(password: &Secret, mcp_url: &str, data_dir: &std::path::Path) {
    let hash = crate::auth::first_run::path_in(data_dir);
    eprintln!(
        "\n  First run: no login was configured, so Stockade made up the operator password:\n\n\
         \x20     operator password: {}\n\n\
         \x20 It is shown this once; only its argon2 hash is kept ({}).\n\
         \x20 Give your MCP client {mcp_url}; it opens the login page, where you type it.\n\
         \x20 To choose your own, set STOCKADE_PASSWORD or auth.password_file; to get a new\n\
         \x20 one, delete that file and restart.\n",
        password.expose(),
        hash.display()
    );
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Arc::new(args.config()?);
    let config_file = args.config.clone();
    let args = Arc::new(args);
    warn_if_unauthenticated(&config);
    prepare_dirs(&config)?;
    // Nothing is written (audit log, listing, database) until this process owns
    // the data directory, holds its port and has credentials: a start that fails
    // leaves a running host's files alone.
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let metrics_listener = match config.prometheus.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (prometheus.listen)"))?,
        ),
        None => None,
    };
    let metrics_token = config.prometheus.token().map_err(|e| anyhow::anyhow!(e))?;
    let separate_token = metrics_token.clone();
    // The password comes from the environment only (never argv, never the file).
    let password = std::env::var("STOCKADE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    let mut generated = None;
    if config.auth.mode == AuthMode::Builtin {
        // A first run with no login configured makes up the operator password.
        if crate::auth::first_run::applies(&config.auth, password.as_ref()) {
            generated = crate::auth::first_run::ensure(&config.data_dir)
                .map_err(|e| anyhow::anyhow!(e))
                .context("cannot generate the operator password")?;
        }
        crate::auth::builtin_credentials(&config.auth, password.clone(), &config.data_dir)
            .context("cannot set up authentication")?;
    }

    // A file past the process's size limit (RLIMIT_FSIZE) is a failed write
    // the audit log and the stores handle (fail closed, recover), not a
    // signal that ends the host.
    ignore_file_size_signal();
    let audit = Audit::open(config.audit_config()).context("cannot open the audit log")?;
    let runtime = start_runtime(&config)?;
    let catalog = load_plugins(&runtime, &config, &audit).await?;
    let metrics = crate::metrics::Metrics::open(&config.data_dir)
        .context("cannot open the metrics database")?;
    // Request states open on every host of a shared store (the key comes from
    // its secret), else on this host only.
    let request_state = match (&config.store.url, &config.store.secret_file) {
        (Some(_), Some(secret)) => crate::mcp::mrtr::StateKey::new(
            &crate::auth::store::secret::StoreSecret::read(secret)
                .context("cannot read store.secret_file")?
                .request_state_key(),
        ),
        _ => crate::mcp::mrtr::StateKey::local(&config.data_dir)
            .context("cannot open the request-state key in the data directory")?,
    };
    let shared = Arc::new(Shared {
        catalog: catalog.clone(),
        runtime: runtime.clone(),
        audit: audit.clone(),
        sessions: Arc::default(),
        metrics: metrics.clone(),
        shared_store: Default::default(),
        request_state,
        listeners: Default::default(),
        draining: CancellationToken::new(),
    });
    let last_reload = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reloads = None;
    if config.watch {
        reloads = Some(watch_plugins(
            &args,
            &config,
            config_file,
            &runtime,
            &shared,
            &last_reload,
        )?);
    }
    {
        let (catalog, sessions) = (catalog.clone(), shared.sessions.clone());
        metrics.set_host_view(move || crate::metrics::HostView {
            open_sessions: sessions.open() as u32,
            last_reload_ms: Some(last_reload.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|&t| t > 0),
            plugins: crate::plugins::listing::states(&catalog.snapshot()),
        });
    }
    metrics.spawn_flusher();
    let auth = Arc::new(
        AuthState::new(
            &config.auth,
            &config.store,
            &config.host_id(),
            local,
            &config.data_dir,
            password,
            audit.clone(),
        )
        .await
        .context("cannot set up authentication")?,
    );
    tracing::info!(mode = ?auth.mode, issuer = %auth.issuer(), resource = %auth.resource, "authentication ready");
    if let Some(store) = &auth.shared {
        let _ = shared.shared_store.set((store.clone(), config.host_id()));
        shared.sessions.relay_to(store.clone(), config.host_id());
        relay_reloads(
            store.clone(),
            config.host_id(),
            reloads.take(),
            shared.sessions.clone(),
        );
    }
    // After the store's migrations (which create the shared figures' table).
    if config.store.url.is_some() {
        let figures = crate::metrics::SharedFigures::connect(&config.store, config.host_id())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        metrics.share(figures);
    }
    let shutdown = CancellationToken::new();
    // Shutting down ends `subscriptions/listen` streams too.
    let draining = shared.draining.clone();
    let in_flight = crate::http::drain::InFlight::default();
    let app = router(
        shared,
        auth.clone(),
        scope_resolver(&catalog),
        HttpConfig {
            allowed_hosts: HttpConfig::hosts_for(&auth.public_url),
            max_body_bytes: (config.max_body_kib as usize) << 10,
            shutdown: shutdown.clone(),
            draining: draining.clone(),
            in_flight: in_flight.clone(),
            metrics_token,
        },
    );
    if let Some(l) = metrics_listener {
        let addr = l.local_addr()?;
        let app = crate::http::metrics_router(metrics.clone(), addr, separate_token, auth.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!("the Prometheus listener stopped: {e}");
            }
        });
        tracing::info!(%addr, "Prometheus metrics on http://{addr}/metrics");
    }
    audit
        .record(AuditEvent::HostStarted {
            version: env!("CARGO_PKG_VERSION").into(),
            listen: local.to_string(),
        })
        .await
        .context("cannot write the audit log")?;
    // The line tests and scripts wait for; keep its shape.
    tracing::info!(addr = %local, "listening on http://{local}/mcp");
    eprintln!("stockade listening on http://{local}/mcp");
    if let Some(password) = &generated {
        show_generated_password(password, &auth.resource, &config.data_dir);
    }
    // On SIGTERM or Ctrl-C: answer `/ready` with 503 and let the `/mcp`
    // requests in flight finish (up to SHUTDOWN_GRACE). The listener keeps
    // accepting meanwhile, so a balancer's probe reads that 503 (not a refused
    // connection) and requests it still sends are served. Calls still running
    // when the grace ends are cut off: answered and audited as such (up to
    // CUT_OFF_ANSWERS). Then the listener stops and the MCP sessions close,
    // which ends their streams and connections.
    {
        let (draining, shutdown) = (draining.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown_signal().await;
            draining.cancel();
            if tokio::time::timeout(SHUTDOWN_GRACE, in_flight.idle())
                .await
                .is_err()
            {
                tracing::warn!(
                    requests = in_flight.count(),
                    "requests still in flight after {} s; cutting off their calls",
                    SHUTDOWN_GRACE.as_secs()
                );
                in_flight.cut_off();
                let _ = tokio::time::timeout(CUT_OFF_ANSWERS, in_flight.idle()).await;
            }
            shutdown.cancel();
        });
    }
    let stop = shutdown.clone();
    let server = axum::serve(
        crate::http::listen::no_delay(listener),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    // A connection that outlives the closed sessions must not keep the host up.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    };
    tokio::select! {
        served = server => served.context("server error")?,
        () = deadline => tracing::debug!("connections still open after the sessions closed; stopping"),
    }
    if let Err(e) = metrics.flush_everywhere().await {
        tracing::warn!(
            "{e}; the last {} s of figures are lost",
            crate::metrics::FLUSH_EVERY.as_secs()
        );
    }
    // The last line: a signed `shutdown` checkpoint (a log that ends otherwise was
    // cut, or its host died).
    if let Err(e) = audit.close().await {
        tracing::error!("audit: cannot write the shutdown checkpoint: {e}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Says loudly that authentication is off (validation already refused `none`
/// off loopback).
fn warn_if_unauthenticated(config: &Config) {
    if config.auth.mode == AuthMode::None {
        tracing::warn!(
            "AUTHENTICATION IS DISABLED (auth.mode = \"none\"): anyone who can reach {} can call every tool",
            config.listen
        );
        eprintln!("stockade: WARNING: authentication is disabled (--auth none); loopback only");
    }
}

/// Creates the data directory; the plugin directory must exist.
fn prepare_dirs(config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    if !config.plugins_dir.is_dir() {
        bail!(
            "plugin directory {} does not exist; create it and put plugin components (*.wasm) in it, \
             or point --plugins / STOCKADE_PLUGINS at one",
            config.plugins_dir.display()
        );
    }
    Ok(())
}

/// An exclusive lock on `<data>/stockade.lock` (naming the holder's PID), held
/// for the life of `serve`: two hosts never write one data directory.
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    fn acquire(data_dir: &std::path::Path) -> anyhow::Result<DataDirLock> {
        use std::io::{Read, Seek, Write};
        let path = data_dir.join("stockade.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another stockade process".to_owned()
                } else {
                    format!("another stockade process (pid {holder})")
                };
                bail!(
                    "data directory {} is in use by {who}; stop it first, or give this host \
                     its own --data directory",
                    data_dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}

/// The WebAssembly runtime with its compiled-code cache in `<data>/cache`.
fn start_runtime(config: &Config) -> anyhow::Result<Arc<Runtime>> {
    let mut runtime = Runtime::new()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("cannot start the WebAssembly runtime")?;
    // Compiled code is cached; without a usable cache directory we only lose speed.
    let cache_dir = config.data_dir.join("cache");
    if let Err(e) = runtime.enable_cache(&cache_dir) {
        tracing::warn!(dir = %cache_dir.display(), "compiled-code cache unavailable, compiling every plugin: {e}");
    }
    // Cranelift runs in a child process, so its memory never stays here.
    runtime.compile_in_child();
    Ok(Arc::new(runtime))
}

/// Loads the plugin directory, publishes the listing and audits each plugin.
async fn load_plugins(
    runtime: &Runtime,
    config: &Config,
    audit: &Audit,
) -> anyhow::Result<Arc<Catalog>> {
    let started = std::time::Instant::now();
    let (snapshot, changes) = crate::plugins::reconcile(runtime, config, &Default::default(), None)
        .await
        .with_context(|| {
            format!(
                "cannot read plugin directory {}",
                config.plugins_dir.display()
            )
        })?;
    tracing::info!(
        plugins = snapshot.plugins.len(),
        tools = snapshot.tools.len(),
        refused = snapshot.refused.len(),
        dir = %config.plugins_dir.display(),
        ms = started.elapsed().as_millis() as u64,
        "plugins loaded"
    );
    let listing = crate::plugins::listing::path_in(&config.data_dir);
    if let Err(e) = crate::plugins::listing::write(&snapshot, config, &listing) {
        tracing::warn!(file = %listing.display(), "cannot write the plugin listing: {e}");
    }
    for warning in crate::plugins::listing::unmatched_config(&snapshot, config) {
        tracing::warn!("{warning}");
    }
    crate::plugins::watch::audit_changes(audit, &changes).await;
    Ok(Arc::new(Catalog::new(snapshot)))
}

/// Starts the watcher of the plugin directory and the config file; connected
/// clients hear `list_changed` when the served lists change.
fn watch_plugins(
    args: &Arc<ServeArgs>,
    config: &Arc<Config>,
    config_file: Option<PathBuf>,
    runtime: &Arc<Runtime>,
    shared: &Arc<Shared>,
    last_reload: &Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<tokio::sync::watch::Receiver<u64>> {
    let (reloader, mut changed) = Reloader::new(
        runtime.clone(),
        shared.catalog.clone(),
        config.clone(),
        shared.audit.clone(),
        Some(crate::plugins::listing::path_in(&config.data_dir)),
    );
    let source: ConfigSource = {
        let args = args.clone();
        Arc::new(move || args.config())
    };
    reloader
        .spawn_watcher(config_file, source)
        .with_context(|| {
            format!(
                "cannot watch plugin directory {}",
                config.plugins_dir.display()
            )
        })?;
    let reloads = changed.clone();
    let sessions = shared.sessions.clone();
    let last_reload = last_reload.clone();
    let catalog = shared.catalog.clone();
    tokio::spawn(async move {
        let mut before = catalog.snapshot();
        while changed.changed().await.is_ok() {
            let now_serving = catalog.snapshot();
            sessions
                .announce_reloaded_resources(&before, &now_serving)
                .await;
            before = now_serving;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            last_reload.store(now, std::sync::atomic::Ordering::Relaxed);
            sessions.announce_list_changed().await;
        }
    });
    tracing::info!(dir = %config.plugins_dir.display(), "watching the plugin directory for changes");
    Ok(reloads)
}

/// With a shared store: tells the other hosts when this one reloads its
/// plugins, and tells this host's sessions `list_changed` when another host
/// reloads (a client may list on one host and listen on another).
fn relay_reloads(
    store: Arc<dyn crate::auth::store::SharedState>,
    host: String,
    mut reloads: Option<tokio::sync::watch::Receiver<u64>>,
    sessions: Arc<crate::mcp::Sessions>,
) {
    let mut events = store.events();
    let me = host.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok((from, what)) if from != me && what == "tools" => {
                    tracing::debug!(%from, "another host reloaded its plugins");
                    sessions.announce_list_changed().await;
                }
                Ok((from, what)) if from != me => {
                    if let Some(uri) = what.strip_prefix(crate::mcp::RESOURCE_EVENT) {
                        sessions.announce_resource_updated(uri).await;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    if let Some(mut reloads) = reloads.take() {
        tokio::spawn(async move {
            while reloads.changed().await.is_ok() {
                if let Err(e) = store.publish(&host, "tools").await {
                    tracing::warn!("other hosts were not told of this reload: {e}");
                }
            }
        });
    }
}

/// The scope a tool needs, from the plugin that serves it *now*, so a reloaded
/// catalog or config is honoured.
fn scope_resolver(catalog: &Arc<Catalog>) -> ScopeResolver {
    let catalog = catalog.clone();
    Arc::new(move |tool: &str| {
        catalog
            .snapshot()
            .tool(tool)
            .and_then(|(plugin, _)| plugin.policy.scope.clone())
    })
}

async fn plugins_inspect(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use crate::plugins::inspect;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = Runtime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let config = Config::default();
    let plugin = crate::plugins::load_file(&runtime, &config, &name, file)
        .await
        .map_err(|e| anyhow::anyhow!("{} is not a usable plugin: {e}", file.display()))?;
    let info = &plugin.code.info;
    if json {
        let tools: Vec<serde_json::Value> = plugin
            .code
            .tools
            .iter()
            .map(crate::mcp::convert::tool)
            .collect();
        let out = serde_json::json!({
            "name": plugin.name,
            "plugin_name": info.name,
            "version": info.version,
            "description": info.description,
            "digest": format!("sha256:{}", plugin.digest),
            "tools": tools,
            "resources": plugin.code.resources.len(),
            "resource_templates": plugin.code.resource_templates.len(),
            "prompts": plugin.code.prompts.len(),
            "declared_capabilities": plugin.declared,
            "can_use": inspect::reachable_capabilities(plugin.code.import_names().iter().map(String::as_str)),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let show = inspect::printable;
    outln!(
        "plugin:   {} ({} {})",
        plugin.name,
        show(&info.name),
        show(&info.version)
    );
    if let Some(d) = &info.description {
        outln!("about:    {}", show(d));
    }
    outln!("digest:   sha256:{}", plugin.digest);
    outln!("tools:");
    for t in &plugin.code.tools {
        let ro = if t.annotations.read_only == Some(true) {
            " [read-only]"
        } else {
            ""
        };
        outln!(
            "  {}{ro}: {}",
            show(&t.name),
            show(t.description.lines().next().unwrap_or_default())
        );
    }
    if !plugin.code.resources.is_empty() || !plugin.code.resource_templates.is_empty() {
        outln!(
            "resources: {} (+{} templates)",
            plugin.code.resources.len(),
            plugin.code.resource_templates.len()
        );
    }
    if !plugin.code.prompts.is_empty() {
        outln!("prompts:  {}", plugin.code.prompts.len());
    }
    match &plugin.declared {
        Some(d) => outln!(
            "declares: {} (a declaration grants nothing)",
            show(&d.to_string())
        ),
        None => outln!("declares: nothing"),
    }
    let reachable =
        inspect::reachable_capabilities(plugin.code.import_names().iter().map(String::as_str));
    if reachable.is_empty() {
        outln!("imports:  no host capabilities (runs as pure computation)");
    } else {
        outln!("imports:  what it can use once granted (nothing is granted by default):");
        for r in reachable {
            outln!("  {r}");
        }
    }
    outln!("\nTo run it with what it declares, review and add to the host config:\n");
    out!(
        "{}",
        inspect::suggested_config(&plugin.name, &plugin.digest, plugin.declared.as_ref())
    );
    Ok(())
}

async fn plugins_list(dirs: &DirArgs, json: bool) -> anyhow::Result<()> {
    use crate::plugins::listing;
    let config = dirs.config()?;
    let path = listing::path_in(&config.data_dir);
    let (value, header) = match std::fs::read(&path) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a plugin listing", path.display()))?;
            let header = format!(
                "as of {}, written by the host (pid {}) to {}",
                v["written_at"].as_str().unwrap_or("?"),
                v["pid"],
                path.display()
            );
            (v, header)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !config.plugins_dir.is_dir() {
                bail!(
                    "no host has written {} and the plugin directory {} does not exist",
                    path.display(),
                    config.plugins_dir.display()
                );
            }
            let runtime = Runtime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let snapshot = load_dir(&runtime, &config).await.with_context(|| {
                format!(
                    "cannot read plugin directory {}",
                    config.plugins_dir.display()
                )
            })?;
            let v = listing::to_json(&snapshot, &config, "dry-run");
            let header = format!(
                "dry run: no host has written {}; loaded {} now with the config",
                path.display(),
                config.plugins_dir.display()
            );
            (v, header)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        outln!("{header}\n");
        out!("{}", listing::render(&value));
    }
    Ok(())
}

fn plugins_keygen(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let (secret, public) = crate::plugins::sign::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    eprintln!(
        "secret key written to {} (keep it private); public key for signatures.trusted_keys:",
        out.display()
    );
    outln!("{public}");
    Ok(())
}

fn file_digest(file: &std::path::Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn plugins_sign(file: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    use crate::plugins::sign;
    let secret =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let digest = file_digest(file)?;
    let sig =
        sign::sign(&secret, &digest).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let out = sign::sig_path(file);
    crate::fsutil::write_atomic(&out, format!("{sig}\n").as_bytes(), None)
        .with_context(|| format!("cannot write {}", out.display()))?;
    outln!("signed sha256:{digest}: wrote {}", out.display());
    Ok(())
}

fn plugins_verify(file: &std::path::Path, trusted: &[String]) -> anyhow::Result<()> {
    use crate::plugins::sign;
    for k in trusted {
        sign::parse_public(k).map_err(|e| anyhow::anyhow!("--trusted-key `{k}`: {e}"))?;
    }
    let digest = file_digest(file)?;
    let sig_file = sign::sig_path(file);
    let text = std::fs::read_to_string(&sig_file)
        .with_context(|| format!("cannot read the signature file {}", sig_file.display()))?;
    let key = sign::verify(trusted, &text, &digest)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    outln!(
        "ok: {} (sha256:{digest}) is signed by {key}",
        file.display()
    );
    Ok(())
}

fn audit_verify(files: &[PathBuf], public_key: Option<&str>, dirs: &DirArgs) -> anyhow::Result<()> {
    use crate::audit::key;
    let (key, from) = match public_key {
        Some(k) => (key::parse_public(k)?, "--public-key".to_owned()),
        None => {
            let config = dirs.config()?;
            let mut candidates = vec![config.data_dir.join(&config.audit.key_file)];
            for f in files {
                let dir = if f.is_dir() {
                    Some(f.as_path())
                } else {
                    f.parent()
                };
                if let Some(data) = dir.and_then(|d| d.parent()) {
                    candidates.push(data.join(key::DEFAULT_KEY_FILE));
                }
            }
            let Some(found) = candidates.iter().find(|p| p.is_file()) else {
                bail!(
                    "no checkpoint key found (looked for {}); pass --public-key ed25519:… \
                     (printed by `stockade audit key` on the host)",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            (
                key::load(found)?.verifying_key(),
                format!(
                    "{} (on this host: pass --public-key from a copy kept elsewhere \
                     for a check that does not trust this machine)",
                    found.display()
                ),
            )
        }
    };
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let r = crate::audit::verify(&refs, &key)?;
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("lines {a}..{b}"),
        _ => format!("{} lines", r.lines),
    };
    outln!(
        "ok: {} file(s), {range}: hash chain, line numbers and {} signed checkpoint(s) intact",
        r.files.len(),
        r.checkpoints
    );
    outln!("key: {} from {from}", key::public_text(&key));
    outln!(
        "files (oldest first): {}",
        r.files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if r.from_genesis {
        outln!("start: the first line ever written");
    } else {
        outln!(
            "start: continues an older file not given here (rotated out under `keep`, or removed)"
        );
    }
    if let Some(c) = &r.last_checkpoint {
        outln!("last checkpoint: line {} at {} ({})", c.seq, c.ts, c.reason);
    }
    if r.clean_end {
        outln!("end: a shutdown checkpoint (the host stopped cleanly)");
    } else {
        outln!(
            "WARNING: the log does not end with a shutdown checkpoint: the host is running, \
             crashed, or lines after the last checkpoint were removed; the {} line(s) after it \
             are protected by the hash chain only",
            r.unsigned_tail
        );
    }
    for seq in &r.unclean_starts {
        outln!(
            "WARNING: the host started at line {seq} after a log that did not end with a shutdown \
             checkpoint (a crash, a kill, or lines removed from its end)"
        );
    }
    if r.partial_last_line {
        outln!(
            "WARNING: the last file ends in an incomplete line (a write cut short; never \
             acknowledged; the host cuts it on its next start)"
        );
    }
    Ok(())
}

fn audit_key(dirs: &DirArgs) -> anyhow::Result<()> {
    let config = dirs.config()?;
    let path = config.data_dir.join(&config.audit.key_file);
    let key = crate::audit::key::load_or_create(&path)?;
    eprintln!("audit checkpoint key: {}", path.display());
    outln!("{}", crate::audit::key::public_text(&key.verifying_key()));
    Ok(())
}

/// `hash-password`: on a terminal, asks twice without echo; otherwise reads
/// one line from standard input (for scripts).
fn hash_password() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password (not shown): ")
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Again, to confirm: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            bail!("the two passwords differ; nothing was hashed, run it again");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.chars().count() < crate::auth::users::MIN_PASSWORD_CHARS {
        bail!(
            "the password is shorter than {} characters",
            crate::auth::users::MIN_PASSWORD_CHARS
        );
    }
    outln!(
        "{}",
        crate::auth::users::hash_password(&password).map_err(|e| anyhow::anyhow!(e))?
    );
    Ok(())
}

async fn tokens_revoke(args: &TokensRevokeArgs) -> anyhow::Result<()> {
    use crate::auth::store::FamilyFilter;
    let config = args.dirs.config()?;
    let (by, whose) = match (&args.subject, &args.client) {
        (Some(s), _) => (FamilyFilter::Subject(s), format!("user `{s}`")),
        (None, Some(c)) => (FamilyFilter::Client(c), format!("client `{c}`")),
        (None, None) => bail!("name --subject or --client"),
    };
    let n = crate::auth::revoke_tokens(&config.store, &config.data_dir, by).await?;
    outln!("revoked {n} token families of {whose}");
    Ok(())
}

async fn keys_rotate(dirs: &DirArgs, retire_now: bool) -> anyhow::Result<()> {
    let config = dirs.config()?;
    let keep = if retire_now {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_secs(config.auth.access_token_ttl_secs + 60)
    };
    let kid = crate::auth::rotate_keys(&config.store, &config.data_dir, keep).await?;
    if retire_now {
        outln!(
            "new signing key {kid}; the previous keys are retired: tokens they signed are \
             refused by every host within {} seconds",
            crate::auth::keyring::RELOAD_EVERY.as_secs()
        );
    } else {
        outln!(
            "new signing key {kid}; the previous keys are accepted for {} more seconds",
            keep.as_secs()
        );
    }
    Ok(())
}

/// Keeps SIGXFSZ from ending the process: a write past RLIMIT_FSIZE then
/// fails with EFBIG like any other failed write.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
        Err(e) => tracing::warn!("cannot handle SIGXFSZ: {e}"),
    }
}

/// How long in-flight requests may run after SIGTERM or Ctrl-C.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the answers of calls cut off at the end of [`SHUTDOWN_GRACE`] get
/// to go out before the sessions close.
const CUT_OFF_ANSWERS: std::time::Duration = std::time::Duration::from_secs(2);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
