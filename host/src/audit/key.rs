//! The checkpoint signing key (ed25519) and the checkpoint message.
//!
//! The secret key file holds `ed25519-secret:<base64 of the 32-byte seed>` (the
//! format of `stockade plugins keygen`), mode 0600, created on first use; public
//! keys are written `ed25519:<base64 of 32 bytes>`.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Why a checkpoint key could not be loaded, created or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("audit key {path}: {source}")]
    Io {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file or key text is not a key.
    #[error("audit key {what}: {reason}")]
    Invalid {
        /// The file or text.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// The file name of the secret key under the data directory.
pub const DEFAULT_KEY_FILE: &str = "keys/audit-ed25519.key";

/// Loads the secret key at `path`, creating it (mode 0600, parent 0700) if it does
/// not exist. Refuses a key file that others may read.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match load(path) {
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| io(std::io::Error::other(e)))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(format!("ed25519-secret:{}\n", B64.encode(seed)).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
            }
            Ok(SigningKey::from_bytes(&seed))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(io(e)),
    }
}

/// Loads the secret key at `path`. Refuses a key file that others may read.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Invalid {
                what: path.display().to_string(),
                reason: format!("mode {:o} lets others read it; chmod 600 it", mode & 0o777),
            });
        }
    }
    let invalid = |reason: &str| KeyError::Invalid {
        what: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let b64 = text
        .trim()
        .strip_prefix("ed25519-secret:")
        .ok_or_else(|| invalid("expected `ed25519-secret:` followed by base64"))?;
    let seed: [u8; 32] = B64
        .decode(b64)
        .map_err(|_| invalid("bad base64"))?
        .try_into()
        .map_err(|_| invalid("an ed25519 secret key is a 32-byte seed"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// `ed25519:<base64>` of a public key.
pub fn public_text(key: &VerifyingKey) -> String {
    format!("ed25519:{}", B64.encode(key.to_bytes()))
}

/// Parses `ed25519:<base64>`.
pub fn parse_public(s: &str) -> Result<VerifyingKey, KeyError> {
    let invalid = |reason: &str| KeyError::Invalid {
        what: format!("`{}`", s.chars().take(80).collect::<String>()),
        reason: reason.to_owned(),
    };
    let b64 = s
        .trim()
        .strip_prefix("ed25519:")
        .ok_or_else(|| invalid("expected `ed25519:` followed by base64"))?;
    let bytes: [u8; 32] = B64
        .decode(b64)
        .map_err(|_| invalid("bad base64"))?
        .try_into()
        .map_err(|_| invalid("an ed25519 public key is 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not an ed25519 key"))
}

/// What a checkpoint signs: its own place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointClaim<'a> {
    /// The checkpoint line's `ts`.
    pub ts: &'a str,
    /// The checkpoint line's `seq`: the lines before it number `seq - 1`.
    pub seq: u64,
    /// The checkpoint line's `prev`: the hash of the line before it (the chain head).
    pub prev: &'a str,
    /// Why it was written (`open`, `periodic`, `rotate`, `continue`, `shutdown`).
    pub reason: &'a str,
    /// The number of the file it is in (0 for the first file ever, +1 per rotation).
    pub file: u64,
    /// On `open`: how the log ended before (`genesis`, `shutdown`, `unclean`).
    pub previous_end: Option<&'a str>,
}

impl CheckpointClaim<'_> {
    fn message(&self) -> Vec<u8> {
        format!(
            "stockade-audit-checkpoint-v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.ts,
            self.seq,
            self.prev,
            self.reason,
            self.file,
            self.previous_end.unwrap_or("")
        )
        .into_bytes()
    }

    /// The base64 signature of this claim.
    pub fn sign(&self, key: &SigningKey) -> String {
        B64.encode(key.sign(&self.message()).to_bytes())
    }

    /// Whether `sig` (base64) is `key`'s signature of this claim.
    pub fn verify(&self, key: &VerifyingKey, sig: &str) -> bool {
        let Ok(bytes) = B64.decode(sig) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes) else {
            return false;
        };
        key.verify(&self.message(), &Signature::from_bytes(&bytes))
            .is_ok()
    }
}
