//! The audit log: one JSON object per line, hash-chained, appended and flushed
//! before the response it records is sent.
//!
//! Every line carries `prev`, the sha256 of the previous line (without its newline);
//! the first line of a fresh log has 64 zeros. Rotation by size renames the file to
//! `audit.log.1` (shifting older ones) and the new file's first line chains to the
//! last line of the rotated one, so `stockade audit verify audit.log.2 audit.log.1
//! audit.log` checks the whole history. [`verify`] reports the first line where the
//! chain breaks.
//!
//! Writes go through one task that batches lines (group commit): a caller awaits
//! [`Audit::record`] until its line is written and flushed to the file.

mod redact;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub use self::redact::{redact_arguments, redact_object, sha256_hex};
pub use self::verify::{VerifyError, VerifyReport, verify};

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
    ToolCall(ToolCallRecord),
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
}

/// Errors opening the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened or read.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer task is gone (the host is shutting down or the disk failed).
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
    /// Also print each line to stdout.
    pub stdout: bool,
}

struct Pending {
    line: Map<String, Value>,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Audit {
    /// Opens (or creates) the log, finds the hash of its last line, and starts the
    /// writer task.
    pub fn open(config: AuditConfig) -> Result<Audit, AuditError> {
        let path = config.path.clone();
        let open_err = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let (prev, size) = last_hash(&config.path).map_err(open_err)?;
        let file = open_append(&config.path).map_err(open_err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            config,
            file,
            size,
            prev,
        };
        std::thread::Builder::new()
            .name("stockade-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(open_err)?;
        Ok(Audit { tx })
    }

    /// Appends `event` and waits until it is written and flushed.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let line = match serde_json::to_value(&event) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return Err(AuditError::Unavailable("event did not serialize".into()));
            }
        };
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { line, done })
            .map_err(|_| AuditError::Unavailable("writer stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Unavailable(e)),
            Err(_) => Err(AuditError::Unavailable("writer stopped".into())),
        }
    }

    /// Records `event`, logging (not returning) a failure: for events whose
    /// response must go out regardless (a denial is still a denial).
    pub async fn note(&self, event: AuditEvent) {
        if let Err(e) = self.record(event).await {
            tracing::error!("audit: {e}");
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The hash of the last line of `path` (or of the newest rotated file when `path`
/// is empty), and the file's size.
fn last_hash(path: &Path) -> std::io::Result<(String, u64)> {
    let read_last = |p: &Path| -> std::io::Result<Option<String>> {
        match std::fs::read(p) {
            Ok(bytes) => Ok(bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .last()
                .map(|l| hex::encode(Sha256::digest(l)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if let Some(h) = read_last(path)? {
        return Ok((h, size));
    }
    let rotated = rotated_name(path, 1);
    Ok((
        read_last(&rotated)?.unwrap_or_else(|| GENESIS.to_owned()),
        size,
    ))
}

fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

struct Writer {
    config: AuditConfig,
    file: std::fs::File,
    size: u64,
    prev: String,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 1024 {
                    break;
                }
            }
            let result = self.write_batch(&mut batch);
            for p in batch.drain(..) {
                let _ = p.done.send(result.clone());
            }
        }
    }

    fn write_batch(&mut self, batch: &mut [Pending]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for p in batch.iter_mut() {
            if self.size + buf.len() as u64 >= self.config.rotate_bytes && self.size > 0 {
                self.file.write_all(&buf).map_err(|e| e.to_string())?;
                self.file.flush().map_err(|e| e.to_string())?;
                buf.clear();
                self.rotate().map_err(|e| format!("rotation failed: {e}"))?;
            }
            let mut line = Map::new();
            line.insert("ts".into(), Value::from(now_rfc3339()));
            line.insert("prev".into(), Value::from(self.prev.clone()));
            line.append(&mut p.line);
            let text = serde_json::to_string(&Value::Object(line)).map_err(|e| e.to_string())?;
            self.prev = hex::encode(Sha256::digest(text.as_bytes()));
            if self.config.stdout {
                println!("{text}");
            }
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(|e| e.to_string())?;
        self.file.flush().map_err(|e| e.to_string())?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let path = &self.config.path;
        for n in (1..self.config.keep.max(1)).rev() {
            let from = rotated_name(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_name(path, n + 1))?;
            }
        }
        std::fs::rename(path, rotated_name(path, 1))?;
        self.file = open_append(path)?;
        self.size = 0;
        Ok(())
    }
}

/// Now, as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
