//! The audit log: one JSON object per line, hash-chained, signed at checkpoints,
//! written and fsynced before the response it records is sent.
//!
//! Every line carries `ts`, `seq` (its number since the first line ever written,
//! from 1) and `prev`, the sha256 of the previous line (without its newline); the
//! first line ever has 64 zeros. Rotation by size renames the file to
//! `audit.log.1` (shifting older ones); the new file's lines continue the chain and
//! the numbering. [`verify`] checks all of it.
//!
//! **Checkpoints**: the writer adds an ed25519-signed `checkpoint` line (see
//! [`key::CheckpointClaim`]) when it opens the log (`open`, saying how the log ended
//! before: `genesis`, `shutdown` or `unclean`), after every `checkpoint_lines` lines
//! or `checkpoint_interval` after the first line not yet covered (`periodic`), as
//! the last line of a file before rotation (`rotate`), as the first line of the
//! next file (`continue`) and at [`Audit::close`] (`shutdown`). A checkpoint signs
//! its `seq`, `prev`, `ts`, reason and file number, so it vouches for every line
//! before it. The secret key lives in the data directory (mode 0600).
//!
//! **Durability and failing closed**: writes go through one thread that batches
//! the lines that arrive together (group commit): one `write`, one `sync_data`,
//! then every caller in the batch is answered. The chain head moves only after a
//! successful write; a failed write is truncated back to the last whole line. While
//! the log cannot be written, [`Audit::record`] fails, [`Audit::is_available`] is
//! false (the HTTP guard answers 503) and the writer retries every
//! [`RETRY_INTERVAL`]; the first line it manages to write is `audit_resumed`, with
//! the number of lines it had to refuse.

pub mod key;
mod redact;
mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

pub use self::key::KeyError;
pub use self::redact::{redact_arguments, redact_object, sha256_hex};
pub use self::verify::{
    CheckpointSeen, VerifyError, VerifyReport, audit_files, order_files, verify,
};
pub use self::writer::RETRY_INTERVAL;
use self::writer::{Msg, Writer};

/// The hash chained before the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One auditable decision. Serialized with `"event": "<snake_case name>"`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum AuditEvent {
    /// The host started.
    HostStarted { version: String, listen: String },
    /// A login on the authorization page succeeded.
    LoginSucceeded {
        subject: String,
        client_id: String,
        ip: String,
    },
    /// A login failed (wrong password, unknown user, rate limited).
    LoginFailed {
        subject: Option<String>,
        client_id: Option<String>,
        ip: String,
        reason: String,
    },
    /// A client registered itself (RFC 7591).
    ClientRegistered {
        client_id: String,
        client_name: Option<String>,
        redirect_uris: Vec<String>,
        ip: String,
    },
    /// Tokens were issued for an authorization code.
    TokenIssued {
        subject: String,
        client_id: String,
        scope: String,
        audience: String,
        family: String,
    },
    /// A refresh token was used and rotated.
    TokenRefreshed {
        subject: String,
        client_id: String,
        family: String,
    },
    /// A token was revoked (RFC 7009) or a family was revoked.
    TokenRevoked {
        client_id: Option<String>,
        family: Option<String>,
        reason: String,
    },
    /// An already-used refresh token or authorization code was presented again.
    ReuseDetected {
        kind: String,
        client_id: Option<String>,
        family: Option<String>,
        ip: String,
    },
    /// A request was refused.
    RequestDenied {
        status: u16,
        reason: String,
        path: String,
        ip: String,
        subject: Option<String>,
    },
    /// A plugin call finished (or failed).
    ToolCall(Box<ToolCallRecord>),
    /// A plugin asked for a capability it was not granted.
    CapabilityDenied {
        plugin: String,
        tool: Option<String>,
        capability: String,
        detail: String,
    },
    /// A plugin version was loaded and is serving.
    PluginLoaded {
        plugin: String,
        version: String,
        digest: String,
        tools: Vec<String>,
    },
    /// A plugin file was refused.
    PluginRefused {
        plugin: String,
        file: String,
        digest: Option<String>,
        reason: String,
    },
    /// A plugin was removed from the directory.
    PluginRemoved { plugin: String },
    /// The operator's configuration changed (or a change was refused).
    ConfigReloaded { ok: bool, detail: String },
}

/// The audit record of one plugin call.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ToolCallRecord {
    /// The authenticated subject, if any.
    pub subject: Option<String>,
    /// The OAuth client, if any.
    pub client_id: Option<String>,
    /// `tool`, `resource` or `prompt`.
    pub kind: &'static str,
    /// The tool name, resource URI or prompt name.
    pub target: String,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The plugin file's sha256.
    pub digest: String,
    /// The sha256 of the arguments as received.
    pub arguments_sha256: String,
    /// The arguments with secrets masked, truncated.
    pub arguments: Value,
    /// `ok`, `tool_error`, `invalid_arguments`, `failed`, `denied`, `cancelled`.
    pub outcome: &'static str,
    /// A short description of a failure.
    pub error: Option<String>,
    /// The limit that stopped the call, if one did.
    pub limit: Option<&'static str>,
    /// Wall-clock duration in microseconds.
    pub duration_us: u64,
    /// Fuel consumed.
    pub fuel: u64,
    /// Log and progress messages dropped for exceeding the call's budget.
    pub dropped_notifications: u64,
    /// The MCP revision the request spoke (`2026-07-28`, `2025-11-25`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The client's self-description, `name/version` (self-reported: a hint
    /// for the reader, never proof of anything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Errors opening or writing the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened, read or written at start.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The checkpoint key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The line could not be written (disk full, I/O error) or the writer is gone
    /// (the host is shutting down). The caller must not answer as if it had been.
    #[error("the audit log is unavailable: {0}")]
    Unavailable(String),
}

/// Where audit lines go.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The log file (`<data>/audit/audit.log` by default).
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes.
    pub rotate_bytes: u64,
    /// Rotated files to keep (`audit.log.1` ... `audit.log.N`).
    pub keep: u32,
    /// Also print each line to stdout (once it is on disk).
    pub stdout: bool,
    /// The checkpoint signing key (`<data>/keys/audit-ed25519.key` by default),
    /// created with mode 0600 if missing.
    pub key_path: PathBuf,
    /// Write a checkpoint at the latest after this many lines.
    pub checkpoint_lines: u64,
    /// Write a checkpoint at the latest this long after the first line that no
    /// checkpoint covers yet.
    pub checkpoint_interval: Duration,
    /// This host's id, written as `host` in every line when several hosts
    /// share a store (each keeps its own log and chain).
    pub host: Option<String>,
}

/// A handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: std::sync::mpsc::Sender<Msg>,
    available: Arc<AtomicBool>,
}

tokio::task_local! {
    /// Set when an audit write failed inside [`track_failures`].
    static FAILED: Arc<AtomicBool>;
}

/// Runs `fut` and tells whether any audit write inside it (on the same task)
/// failed. The HTTP guard wraps every request in it, so a request whose decision
/// could not be recorded is answered 503 whatever its handler answered.
pub async fn track_failures<F: std::future::Future>(fut: F) -> (F::Output, bool) {
    let flag = Arc::new(AtomicBool::new(false));
    let out = FAILED.scope(flag.clone(), fut).await;
    (out, flag.load(Ordering::SeqCst))
}

impl Audit {
    /// Opens (or creates) the log and its key, repairs a partly written last line,
    /// finds the chain head, writes the `open` checkpoint (fsynced) and starts the
    /// writer thread. Fails if any of that fails.
    pub fn open(config: AuditConfig) -> Result<Audit, AuditError> {
        let available = Arc::new(AtomicBool::new(true));
        let path = config.path.clone();
        let writer = Writer::open(config, available.clone())?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("stockade-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Open { path, source })?;
        Ok(Audit { tx, available })
    }

    /// Whether the last write succeeded. While false, lines are refused and the
    /// writer retries in the background; HTTP requests get 503.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::SeqCst)
    }

    /// Appends `event` and waits until it is written and fsynced. On failure the
    /// line is not in the log, the chain is unchanged, and the enclosing
    /// [`track_failures`] (if any) is told.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let result = self.send(event).await;
        if result.is_err() {
            let _ = FAILED.try_with(|f| f.store(true, Ordering::SeqCst));
        }
        result
    }

    async fn send(&self, event: AuditEvent) -> Result<(), AuditError> {
        let line = match serde_json::to_value(&event) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return Err(AuditError::Unavailable("event did not serialize".into()));
            }
        };
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Line { line, done })
            .map_err(|_| AuditError::Unavailable("writer stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Unavailable(e)),
            Err(_) => Err(AuditError::Unavailable("writer stopped".into())),
        }
    }

    /// Records `event`, logging (not returning) a failure. Inside an HTTP request
    /// the failure still fails the request closed: the guard's
    /// [`track_failures`] sees it and answers 503 instead of the handler's answer.
    /// Outside one (plugin reloads), the event has happened anyway; the log counts
    /// the lost lines in its next `audit_resumed` line.
    pub async fn note(&self, event: AuditEvent) {
        if let Err(e) = self.record(event).await {
            tracing::error!("audit: {e}");
        }
    }

    /// Writes the `shutdown` checkpoint and stops the writer: later records fail.
    pub async fn close(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Close(done))
            .map_err(|_| AuditError::Unavailable("writer stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Unavailable(e)),
            Err(_) => Err(AuditError::Unavailable("writer stopped".into())),
        }
    }
}

/// Now, as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
