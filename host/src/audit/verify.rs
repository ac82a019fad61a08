//! Checking audit files: the hash chain, the line numbers, the signed checkpoints,
//! and that no file is missing between the first and the last one given.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::GENESIS;
use super::key::{CheckpointClaim, public_text};

/// Where and why verification fails.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No audit file was given or found.
    #[error("no audit files: {0}")]
    NoFiles(String),
    /// A line is wrong: not an audit line, does not chain to the one before it,
    /// skips line numbers, or is a checkpoint whose signature does not verify.
    #[error("{path}:{line}: {reason}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// The 1-based line number in the file.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The files do not make up a complete log: a file is missing at the end or
    /// was cut short, or no checkpoint vouches for anything.
    #[error("{0}")]
    Incomplete(String),
}

/// A checkpoint line that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSeen {
    /// Its `seq`.
    pub seq: u64,
    /// Its `ts`.
    pub ts: String,
    /// `open`, `periodic`, `rotate`, `continue` or `shutdown`.
    pub reason: String,
    /// The file number it names.
    pub file: u64,
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The files checked, oldest first (the order verification chose).
    pub files: Vec<PathBuf>,
    /// Lines checked.
    pub lines: usize,
    /// `seq` of the first and last line checked (None for logs from before line
    /// numbers).
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// Whether the first file starts the chain (genesis) rather than continuing a
    /// file that was not given (rotated out under `keep`, or removed).
    pub from_genesis: bool,
    /// Checkpoints whose signature verified (all of them, or verification fails).
    pub checkpoints: usize,
    /// The newest checkpoint.
    pub last_checkpoint: Option<CheckpointSeen>,
    /// Lines after the newest checkpoint: protected by the hash chain only.
    pub unsigned_tail: usize,
    /// Whether the last line is a `shutdown` checkpoint (the host stopped cleanly).
    pub clean_end: bool,
    /// `seq` of each `open` checkpoint that says the log before it did not end
    /// with a `shutdown` checkpoint (the host crashed or was killed, or lines were
    /// removed from the end before it started again).
    pub unclean_starts: Vec<u64>,
    /// The last file ended in an incomplete line (a write cut short by a crash;
    /// the host cuts it on its next start). It was not checked.
    pub partial_last_line: bool,
}

/// The audit files among `paths`: directories are replaced by the log files in
/// them (`NAME` and `NAME.<n>`), duplicates dropped. Not yet ordered.
pub fn audit_files(paths: &[&Path]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            out.extend(files_in_dir(path)?);
        } else {
            out.push(path.to_path_buf());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    if out.is_empty() {
        return Err(VerifyError::NoFiles(
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    Ok(out)
}

/// `NAME` without a `.<digits>` suffix, and the suffix (0 without one).
fn base_and_index(name: &str) -> (&str, u64) {
    if let Some((base, n)) = name.rsplit_once('.')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = n.parse::<u64>()
    {
        return (base, n);
    }
    (name, 0)
}

fn files_in_dir(dir: &Path) -> Result<Vec<PathBuf>, VerifyError> {
    let read = |source| VerifyError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut groups: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().map_err(read)?.is_file() {
            continue;
        }
        let (base, _) = base_and_index(&name);
        groups
            .entry(base.to_owned())
            .or_default()
            .push(entry.path());
    }
    if groups.len() > 1 {
        if let Some(g) = groups.remove("audit.log") {
            return Ok(g);
        }
        return Err(VerifyError::NoFiles(format!(
            "{} holds several logs ({}); name the files",
            dir.display(),
            groups.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(groups.into_values().next().unwrap_or_default())
}

/// Orders `files` oldest first: by the line number of their first line, or (for
/// logs from before line numbers) by rotation suffix (`.N` before `.N-1` before
/// none). Empty files come last.
pub fn order_files(files: Vec<PathBuf>) -> Result<Vec<PathBuf>, VerifyError> {
    let mut keyed = Vec::with_capacity(files.len());
    for path in files {
        let f = std::fs::File::open(&path).map_err(|source| VerifyError::Read {
            path: path.clone(),
            source,
        })?;
        let mut first = Vec::new();
        std::io::BufReader::new(f)
            .read_until(b'\n', &mut first)
            .map_err(|source| VerifyError::Read {
                path: path.clone(),
                source,
            })?;
        let seq = serde_json::from_slice::<Value>(&first)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64));
        let index = path
            .file_name()
            .map(|n| base_and_index(&n.to_string_lossy()).1)
            .unwrap_or(0);
        keyed.push((first.is_empty(), seq, index, path));
    }
    let all_numbered = keyed.iter().all(|(empty, seq, ..)| *empty || seq.is_some());
    keyed.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            if all_numbered {
                a.1.cmp(&b.1)
            } else {
                // `.0` (no suffix) is the newest; higher suffixes are older.
                let rank = |i: u64| if i == 0 { 0 } else { u64::MAX - i };
                rank(a.2).cmp(&rank(b.2)).then_with(|| a.3.cmp(&b.3))
            }
        })
    });
    Ok(keyed.into_iter().map(|k| k.3).collect())
}

/// Verifies the audit files and directories in `paths` (any order) as one log,
/// checking every checkpoint's signature with `key`.
///
/// Fails on: a line that is not an audit line, a broken hash chain, skipped or
/// repeated line numbers, a checkpoint that does not verify or names the wrong
/// file, a file (other than the last) that does not end with its `rotate`
/// checkpoint (lines cut from its end), a last file that does end with one (the
/// newer file is missing), a gap in file numbers, and a log without any
/// checkpoint.
pub fn verify(paths: &[&Path], key: &VerifyingKey) -> Result<VerifyReport, VerifyError> {
    let files = order_files(audit_files(paths)?)?;
    let mut c = Checker::new(key);
    let last_index = files.len() - 1;
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Read {
            path: path.clone(),
            source,
        })?;
        c.file(path, &bytes, i == last_index)?;
    }
    if c.report.checkpoints == 0 {
        return Err(VerifyError::Incomplete(
            "no signed checkpoint: nothing vouches for these lines \
             (a log written before checkpoints existed, or its checkpoints were removed)"
                .into(),
        ));
    }
    if c.last_was_rotate {
        return Err(VerifyError::Incomplete(format!(
            "the log continues in file number {} (after {}), which was not given or is missing",
            c.file_no.map_or(0, |n| n + 1),
            files[last_index].display()
        )));
    }
    c.report.files = files;
    Ok(c.report)
}

struct Checker<'k> {
    key: &'k VerifyingKey,
    prev: Option<String>,
    prev_seq: Option<u64>,
    /// The file number of the previous file (from its checkpoints).
    file_no: Option<u64>,
    last_was_rotate: bool,
    report: VerifyReport,
}

impl<'k> Checker<'k> {
    fn new(key: &'k VerifyingKey) -> Self {
        Checker {
            key,
            prev: None,
            prev_seq: None,
            file_no: None,
            last_was_rotate: false,
            report: VerifyReport {
                files: Vec::new(),
                lines: 0,
                first_seq: None,
                last_seq: None,
                from_genesis: false,
                checkpoints: 0,
                last_checkpoint: None,
                unsigned_tail: 0,
                clean_end: false,
                unclean_starts: Vec::new(),
                partial_last_line: false,
            },
        }
    }

    fn file(&mut self, path: &Path, bytes: &[u8], last: bool) -> Result<(), VerifyError> {
        let broken = |line: usize, reason: String| VerifyError::Broken {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut text = bytes;
        if !text.is_empty() && !text.ends_with(b"\n") {
            let n = text.split(|b| *b == b'\n').count();
            if !last {
                return Err(broken(
                    n,
                    "incomplete line (no newline) in a rotated file".into(),
                ));
            }
            self.report.partial_last_line = true;
            text = &text[..text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
        }
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        if text.is_empty() {
            return Ok(());
        }
        if self.prev.is_some() && !self.last_was_rotate && self.file_no.is_some() {
            return Err(VerifyError::Incomplete(format!(
                "the file before {} does not end with its `rotate` checkpoint: \
                 lines were removed from its end",
                path.display()
            )));
        }
        let mut this_file: Option<u64> = None;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            let value: Value = serde_json::from_slice(line)
                .map_err(|e| broken(n, format!("not a JSON audit line ({e})")))?;
            let claimed = value
                .get("prev")
                .and_then(Value::as_str)
                .ok_or_else(|| broken(n, "no `prev` hash".into()))?;
            match &self.prev {
                None => self.report.from_genesis = claimed == GENESIS,
                Some(expected) if expected != claimed => {
                    return Err(broken(
                        n,
                        format!(
                            "chain broken: `prev` is {claimed} but the previous line hashes to {expected} \
                             (the line before was changed, or lines were removed or inserted here)"
                        ),
                    ));
                }
                Some(_) => {}
            }
            let seq = value.get("seq").and_then(Value::as_u64);
            match (self.prev_seq, seq) {
                (Some(p), Some(s)) if s != p + 1 => {
                    return Err(broken(
                        n,
                        format!("line number {s} follows {p}: lines were removed or repeated"),
                    ));
                }
                (Some(_), None) => return Err(broken(n, "no `seq` line number".into())),
                (None, Some(s)) if self.prev.is_none() && claimed == GENESIS && s != 1 => {
                    return Err(broken(n, format!("the first line ever is numbered {s}")));
                }
                _ => {}
            }
            self.last_was_rotate = false;
            if value.get("event").and_then(Value::as_str) == Some("checkpoint") {
                let seen = self
                    .checkpoint(&value, claimed, seq)
                    .map_err(|reason| broken(n, reason))?;
                match this_file {
                    None => {
                        if let Some(before) = self.file_no
                            && seen.file != before + 1
                        {
                            return Err(broken(
                                n,
                                format!(
                                    "this is file number {} but the file before is number {before}: \
                                     files in between are missing",
                                    seen.file
                                ),
                            ));
                        }
                        this_file = Some(seen.file);
                    }
                    Some(f) if f != seen.file => {
                        return Err(broken(
                            n,
                            format!("checkpoint names file {} in file {f}", seen.file),
                        ));
                    }
                    Some(_) => {}
                }
                self.last_was_rotate = seen.reason == "rotate";
                self.report.clean_end = seen.reason == "shutdown";
                if seen.reason == "open"
                    && value.get("previous_end").and_then(Value::as_str) == Some("unclean")
                {
                    self.report.unclean_starts.push(seen.seq);
                }
                self.report.checkpoints += 1;
                self.report.last_checkpoint = Some(seen);
                self.report.unsigned_tail = 0;
            } else {
                self.report.clean_end = false;
                self.report.unsigned_tail += 1;
            }
            if self.report.lines == 0 {
                self.report.first_seq = seq;
            }
            self.report.last_seq = seq;
            self.report.lines += 1;
            self.prev = Some(hex::encode(Sha256::digest(line)));
            self.prev_seq = seq;
        }
        if this_file.is_some() {
            self.file_no = this_file;
        }
        Ok(())
    }

    /// Checks a checkpoint line's signature.
    fn checkpoint(
        &self,
        value: &Value,
        prev: &str,
        seq: Option<u64>,
    ) -> Result<CheckpointSeen, String> {
        let s = |k: &str| value.get(k).and_then(Value::as_str);
        let (Some(ts), Some(seq), Some(reason), Some(file), Some(sig)) = (
            s("ts"),
            seq,
            s("reason"),
            value.get("file").and_then(Value::as_u64),
            s("sig"),
        ) else {
            return Err("checkpoint without `ts`, `seq`, `reason`, `file` or `sig`".into());
        };
        let claim = CheckpointClaim {
            ts,
            seq,
            prev,
            reason,
            file,
            previous_end: s("previous_end"),
        };
        if !claim.verify(self.key, sig) {
            return Err(format!(
                "checkpoint signature does not verify with {} (the lines before it were \
                 rewritten, or another key signed it{})",
                public_text(self.key),
                s("key")
                    .map(|k| format!(": the line names {k}"))
                    .unwrap_or_default()
            ));
        }
        Ok(CheckpointSeen {
            seq,
            ts: ts.to_owned(),
            reason: reason.to_owned(),
            file,
        })
    }
}
