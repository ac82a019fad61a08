//! Checking the hash chain of audit files.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::GENESIS;

/// Where and why a chain breaks.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line does not chain to the one before it, or is not an audit line.
    #[error("{path}:{line}: {reason}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// What a successful verification saw.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines checked.
    pub lines: usize,
    /// Whether the first file starts the chain (genesis) rather than continuing a
    /// rotated file that was not given.
    pub from_genesis: bool,
}

/// Verifies `files`, oldest first, as one chain.
pub fn verify(files: &[&Path]) -> Result<VerifyReport, VerifyError> {
    let mut prev: Option<String> = None;
    let mut lines = 0;
    let mut from_genesis = false;
    for path in files {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let broken = |line: usize, reason: String| VerifyError::Broken {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if text.is_empty() {
            continue;
        }
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            let value: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| broken(n, format!("not a JSON audit line ({e})")))?;
            let claimed = value
                .get("prev")
                .and_then(|v| v.as_str())
                .ok_or_else(|| broken(n, "no `prev` hash".into()))?;
            match &prev {
                None => from_genesis = claimed == GENESIS,
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
            prev = Some(hex::encode(Sha256::digest(line)));
            lines += 1;
        }
    }
    Ok(VerifyReport {
        lines,
        from_genesis,
    })
}
