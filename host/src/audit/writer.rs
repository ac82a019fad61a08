//! The writer thread: group commit with `sync_data`, failing closed, truncation of
//! failed writes, checkpoints, rotation, and recovery once the disk takes writes
//! again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::key::{self, CheckpointClaim};
use super::{AuditConfig, AuditError, GENESIS, now_rfc3339};

/// How long a failing log waits before it tries to write again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// The most lines one write carries.
const MAX_BATCH: usize = 1024;

/// A message to the writer.
pub(super) enum Msg {
    /// Append a line; answer once it is on disk (or failed).
    Line {
        line: Map<String, Value>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Write the `shutdown` checkpoint and stop.
    Close(oneshot::Sender<Result<(), String>>),
}

/// Since when, and how much, the log has been failing.
struct Failure {
    since: String,
    refused: u64,
    error: String,
}

pub(super) struct Writer {
    config: AuditConfig,
    key: SigningKey,
    public: String,
    file: std::fs::File,
    /// The file's length up to its last whole, synced line.
    len: u64,
    /// A failed write may have left bytes past `len` that could not be cut yet.
    dirty: bool,
    /// Hash of the last line written.
    prev: String,
    /// `seq` of the last line written (0: none yet).
    seq: u64,
    /// Number of the current file (0 for the first ever; +1 per rotation).
    file_no: u64,
    /// Lines written since the last checkpoint, and when the first of them was.
    uncovered: u64,
    uncovered_since: Option<Instant>,
    failure: Option<Failure>,
    available: Arc<AtomicBool>,
}

/// Lines prepared on top of the current chain head, not yet written.
struct Draft {
    buf: Vec<u8>,
    texts: Vec<String>,
    prev: String,
    seq: u64,
    /// Lines after the last checkpoint in this draft (all of them if none).
    uncovered: u64,
    checkpointed: bool,
}

/// What the end of the existing log says.
struct Tail {
    prev: String,
    seq: u64,
    file_no: u64,
    previous_end: &'static str,
}

impl Writer {
    /// Opens the log as [`super::Audit::open`] describes and writes the `open`
    /// checkpoint.
    pub(super) fn open(
        config: AuditConfig,
        available: Arc<AtomicBool>,
    ) -> Result<Writer, AuditError> {
        let path = config.path.clone();
        let open_err = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let key = key::load_or_create(&config.key_path)?;
        let len = repair_partial_line(&path).map_err(open_err)?;
        let tail = read_tail(&path).map_err(open_err)?;
        let file = open_append(&path).map_err(open_err)?;
        crate::fsutil::warn_if_exposed(&path, "the audit log");
        let mut writer = Writer {
            public: key::public_text(&key.verifying_key()),
            key,
            config,
            file,
            len,
            dirty: false,
            prev: tail.prev,
            seq: tail.seq,
            file_no: tail.file_no,
            uncovered: 0,
            uncovered_since: None,
            failure: None,
            available,
        };
        let mut d = writer.draft();
        writer.push_checkpoint(&mut d, "open", Some(tail.previous_end));
        writer.commit(d).map_err(open_err)?;
        Ok(writer)
    }

    /// The thread's loop: until every handle is gone or [`Msg::Close`].
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let first = match self.next_wakeup() {
                Some(wait) => rx.recv_timeout(wait),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let first = match first {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut lines = Vec::new();
            let mut waiting = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line { line, done } => {
                        lines.push(line);
                        waiting.push(done);
                    }
                    Msg::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if lines.len() < MAX_BATCH {
                    // Empty or disconnected: write what we have.
                    next = rx.try_recv().ok();
                }
            }
            if !lines.is_empty() {
                let result = self.write_lines(lines);
                for done in waiting {
                    let _ = done.send(result.clone());
                }
            }
            if let Some(done) = close {
                let _ = done.send(self.shutdown());
                return;
            }
        }
    }

    /// How long to wait for lines before there is something else to do.
    fn next_wakeup(&self) -> Option<Duration> {
        if self.failure.is_some() {
            return Some(RETRY_INTERVAL);
        }
        self.uncovered_since.map(|since| {
            (since + self.config.checkpoint_interval).saturating_duration_since(Instant::now())
        })
    }

    /// No lines came: retry a failing log, or write a due periodic checkpoint.
    fn tick(&mut self) {
        if self.failure.is_some() {
            let _ = self.write_lines(Vec::new());
        } else if self.uncovered > 0 {
            let mut d = self.draft();
            self.push_checkpoint(&mut d, "periodic", None);
            if let Err(e) = self.commit(d) {
                self.fail(e.to_string(), 0);
            }
        }
    }

    /// Writes `lines` (after an `audit_resumed` line if the log was failing, and
    /// followed by a checkpoint when one is due), rotating first if the file is
    /// full. All or nothing.
    fn write_lines(&mut self, lines: Vec<Map<String, Value>>) -> Result<(), String> {
        let count = lines.len() as u64;
        let result = self.try_write_lines(lines);
        match &result {
            Ok(()) => {
                if let Some(f) = self.failure.take() {
                    tracing::warn!(
                        since = %f.since,
                        refused = f.refused,
                        "audit log writable again; requests are served again"
                    );
                }
                self.available.store(true, Ordering::SeqCst);
            }
            Err(e) => self.fail(e.clone(), count),
        }
        result
    }

    fn try_write_lines(&mut self, lines: Vec<Map<String, Value>>) -> Result<(), String> {
        if self.len >= self.config.rotate_bytes {
            self.rotate()
                .map_err(|e| format!("cannot rotate {}: {e}", self.config.path.display()))?;
        }
        let mut d = self.draft();
        if let Some(f) = &self.failure {
            let resumed = json!({
                "event": "audit_resumed",
                "since": f.since,
                "refused": f.refused,
                "error": f.error,
            });
            if let Value::Object(m) = resumed {
                self.push(&mut d, m);
            }
        }
        let mut events: Vec<String> = Vec::new();
        let mut denials: Vec<(String, String)> = Vec::new();
        for line in lines {
            if let Some(event) = line.get("event").and_then(Value::as_str) {
                events.push(event.to_owned());
                if event == "capability_denied" {
                    let field = |k: &str| {
                        line.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    denials.push((field("plugin"), field("capability")));
                }
            }
            self.push(&mut d, line);
        }
        if self.uncovered + d.uncovered >= self.config.checkpoint_lines.max(1) {
            self.push_checkpoint(&mut d, "periodic", None);
        }
        let started = std::time::Instant::now();
        let done = self
            .commit(d)
            .map_err(|e| format!("cannot write {}: {e}", self.config.path.display()));
        let prom = crate::metrics::prom::global();
        prom.audit_write(started.elapsed());
        if done.is_ok() {
            events.iter().for_each(|e| prom.event(e));
            denials
                .iter()
                .for_each(|(p, c)| prom.capability_denied(p, c));
        }
        done
    }

    /// Marks the log as failing (HTTP requests get 503 until a write succeeds).
    fn fail(&mut self, error: String, refused: u64) {
        self.available.store(false, Ordering::SeqCst);
        match &mut self.failure {
            Some(f) => {
                f.refused += refused;
                f.error = error;
            }
            None => {
                tracing::error!(
                    "audit: {error}; refusing requests until the audit log can be written again"
                );
                self.failure = Some(Failure {
                    since: now_rfc3339(),
                    refused,
                    error,
                });
            }
        }
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let mut d = self.draft();
        self.push_checkpoint(&mut d, "shutdown", None);
        self.commit(d)
            .map_err(|e| format!("cannot write {}: {e}", self.config.path.display()))
    }

    fn draft(&self) -> Draft {
        Draft {
            buf: Vec::new(),
            texts: Vec::new(),
            prev: self.prev.clone(),
            seq: self.seq,
            uncovered: 0,
            checkpointed: false,
        }
    }

    /// Adds a line with `ts`, `seq` and `prev` in front of `fields`.
    fn push(&self, d: &mut Draft, mut fields: Map<String, Value>) {
        let text = self.line_text(d, &now_rfc3339(), &mut fields);
        d.uncovered += 1;
        d.buf.extend_from_slice(text.as_bytes());
        d.buf.push(b'\n');
        d.texts.push(text);
    }

    fn line_text(&self, d: &mut Draft, ts: &str, fields: &mut Map<String, Value>) -> String {
        d.seq += 1;
        let mut line = Map::new();
        line.insert("ts".into(), Value::from(ts));
        line.insert("seq".into(), Value::from(d.seq));
        line.insert("prev".into(), Value::from(d.prev.clone()));
        if let Some(host) = &self.config.host {
            line.insert("host".into(), Value::from(host.as_str()));
        }
        line.append(fields);
        let text = Value::Object(line).to_string();
        d.prev = hex::encode(Sha256::digest(text.as_bytes()));
        text
    }

    /// Adds a signed checkpoint line.
    fn push_checkpoint(&self, d: &mut Draft, reason: &str, previous_end: Option<&str>) {
        let ts = now_rfc3339();
        let claim = CheckpointClaim {
            ts: &ts,
            seq: d.seq + 1,
            prev: &d.prev,
            reason,
            file: self.file_no,
            previous_end,
        };
        let sig = claim.sign(&self.key);
        let mut fields = Map::new();
        fields.insert("event".into(), Value::from("checkpoint"));
        fields.insert("reason".into(), Value::from(reason));
        fields.insert("file".into(), Value::from(self.file_no));
        if let Some(p) = previous_end {
            fields.insert("previous_end".into(), Value::from(p));
        }
        fields.insert("key".into(), Value::from(self.public.clone()));
        fields.insert("sig".into(), Value::from(sig));
        let text = self.line_text(d, &ts, &mut fields);
        d.uncovered = 0;
        d.checkpointed = true;
        d.buf.extend_from_slice(text.as_bytes());
        d.buf.push(b'\n');
        d.texts.push(text);
    }

    /// Writes and fsyncs `d`; only then moves the chain head. On failure, cuts
    /// the file back to its last whole line (or remembers to, before the next
    /// write).
    fn commit(&mut self, d: Draft) -> std::io::Result<()> {
        if self.dirty {
            self.file.set_len(self.len)?;
            self.dirty = false;
        }
        if let Err(e) = self
            .file
            .write_all(&d.buf)
            .and_then(|()| self.file.sync_data())
        {
            self.dirty = true;
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .is_ok()
            {
                self.dirty = false;
            }
            return Err(e);
        }
        self.len += d.buf.len() as u64;
        self.prev = d.prev;
        self.seq = d.seq;
        if d.checkpointed {
            self.uncovered = d.uncovered;
            self.uncovered_since = None;
        } else {
            self.uncovered += d.uncovered;
        }
        if self.uncovered > 0 && self.uncovered_since.is_none() {
            self.uncovered_since = Some(Instant::now());
        }
        if self.config.stdout {
            for t in &d.texts {
                println!("{t}");
            }
        }
        Ok(())
    }

    /// Ends the current file with a `rotate` checkpoint, shifts the files, and
    /// starts the next one with a `continue` checkpoint.
    fn rotate(&mut self) -> std::io::Result<()> {
        let mut d = self.draft();
        self.push_checkpoint(&mut d, "rotate", None);
        self.commit(d)?;
        let path = self.config.path.clone();
        // A rotation that failed after the rename already moved the file away.
        if path.exists() {
            // The oldest kept file is replaced below; files past it (left by a
            // larger `keep` before) would be a gap in the chain: removed too.
            let mut n = self.config.keep.max(1) + 1;
            while rotated_name(&path, n).exists() {
                std::fs::remove_file(rotated_name(&path, n))?;
                n += 1;
            }
            for n in (1..self.config.keep.max(1)).rev() {
                let from = rotated_name(&path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated_name(&path, n + 1))?;
                }
            }
            std::fs::rename(&path, rotated_name(&path, 1))?;
        }
        let file = open_append(&path)?;
        sync_dir(&path)?;
        self.file = file;
        self.len = 0;
        self.dirty = false;
        self.file_no += 1;
        let mut d = self.draft();
        self.push_checkpoint(&mut d, "continue", None);
        self.commit(d)
    }
}

/// Opens the log for appending; a new log is created readable by its owner only
/// (it names users, clients and addresses).
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// `path` with `.n` appended.
pub(super) fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Cuts a last line that was not completely written (no newline: the host died
/// mid-write; no caller was ever told it was written). Returns the length.
fn repair_partial_line(path: &Path) -> std::io::Result<u64> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(bytes.len() as u64);
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(
        file = %path.display(),
        bytes = bytes.len() - keep,
        "audit: cutting a partly written last line (never acknowledged)"
    );
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    f.sync_data()?;
    Ok(keep as u64)
}

/// The chain head, line number and file number to continue from: the current
/// file's last line, or (if it is empty) the newest rotated file's.
fn read_tail(path: &Path) -> std::io::Result<Tail> {
    let read = |p: &Path| -> std::io::Result<Vec<u8>> {
        match std::fs::read(p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    };
    let current = read(path)?;
    let (bytes, next_file) = if current.iter().any(|b| *b != b'\n') {
        (current, false)
    } else {
        (read(&rotated_name(path, 1))?, true)
    };
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let Some(last) = lines.last() else {
        return Ok(Tail {
            prev: GENESIS.to_owned(),
            seq: 0,
            file_no: 0,
            previous_end: "genesis",
        });
    };
    let parsed: Option<Value> = serde_json::from_slice(last).ok();
    let seq = parsed
        .as_ref()
        .and_then(|v| v.get("seq"))
        .and_then(Value::as_u64)
        // A log from before line numbers: count this file's lines.
        .unwrap_or(lines.len() as u64);
    let clean = parsed.as_ref().is_some_and(|v| {
        v.get("event").and_then(Value::as_str) == Some("checkpoint")
            && v.get("reason").and_then(Value::as_str) == Some("shutdown")
    });
    // The file number is in the newest checkpoint (near the end: one every
    // `checkpoint_lines` lines at most).
    let file_no = lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find(|v| v.get("event").and_then(Value::as_str) == Some("checkpoint"))
        .and_then(|v| v.get("file").and_then(Value::as_u64))
        .unwrap_or(0);
    Ok(Tail {
        prev: hex::encode(Sha256::digest(last)),
        seq,
        file_no: file_no + u64::from(next_file),
        previous_end: if clean { "shutdown" } else { "unclean" },
    })
}
