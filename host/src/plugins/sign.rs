//! Plugin signatures (ed25519), for plugin directories fed from untrusted sources.
//!
//! An author signs with `stockade plugins sign FILE --key SECRET_KEY_FILE`, which
//! writes `FILE.sig`; the operator lists trusted public keys under `[signatures]`
//! and sets `require = true`: then `foo.wasm` loads only with a `foo.wasm.sig`
//! made by one of them. The signed message is `stockade-plugin-v1:` followed by
//! the file's sha256 in hex, so a signature covers exactly one file's bytes.
//!
//! Key formats: public `ed25519:<base64 of 32 bytes>`; secret key files hold
//! `ed25519-secret:<base64 of the 32-byte seed>`; `.sig` files hold the base64
//! signature.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub use crate::config::SignatureSettings;

fn message(digest_hex: &str) -> Vec<u8> {
    format!("stockade-plugin-v1:{digest_hex}").into_bytes()
}

/// Parses `ed25519:<base64>`.
pub fn parse_public(s: &str) -> Result<VerifyingKey, String> {
    let b64 = s
        .trim()
        .strip_prefix("ed25519:")
        .ok_or("expected `ed25519:` followed by base64")?;
    let bytes: [u8; 32] = B64
        .decode(b64)
        .map_err(|e| format!("bad base64: {e}"))?
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 key: {e}"))
}

fn parse_secret(s: &str) -> Result<SigningKey, String> {
    let b64 = s
        .trim()
        .strip_prefix("ed25519-secret:")
        .ok_or("expected `ed25519-secret:` followed by base64")?;
    let seed: [u8; 32] = B64
        .decode(b64)
        .map_err(|e| format!("bad base64: {e}"))?
        .try_into()
        .map_err(|_| "an ed25519 secret key is a 32-byte seed".to_string())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The `.sig` file beside `path`.
pub fn sig_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// A new key pair: (secret key file contents, public key).
pub fn generate() -> (String, String) {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("the OS random generator");
    let key = SigningKey::from_bytes(&seed);
    (
        format!("ed25519-secret:{}\n", B64.encode(seed)),
        format!("ed25519:{}", B64.encode(key.verifying_key().to_bytes())),
    )
}

/// The signature (base64) of a file with `digest_hex` under the secret key text.
pub fn sign(secret: &str, digest_hex: &str) -> Result<String, String> {
    let key = parse_secret(secret)?;
    Ok(B64.encode(key.sign(&message(digest_hex)).to_bytes()))
}

/// Which trusted key signed the file with `digest_hex`, given its `.sig` text.
pub fn verify(trusted: &[String], sig_text: &str, digest_hex: &str) -> Result<String, String> {
    let bytes: [u8; 64] = B64
        .decode(sig_text.trim())
        .map_err(|e| format!("the signature is not base64: {e}"))?
        .try_into()
        .map_err(|_| "an ed25519 signature is 64 bytes".to_string())?;
    let sig = Signature::from_bytes(&bytes);
    let msg = message(digest_hex);
    for k in trusted {
        if let Ok(key) = parse_public(k)
            && key.verify(&msg, &sig).is_ok()
        {
            return Ok(k.clone());
        }
    }
    Err("no trusted key made this signature (wrong key, or the file changed after signing)".into())
}

/// Applies the signature policy to the file at `path` with `digest_hex`.
pub fn check(settings: &SignatureSettings, path: &Path, digest_hex: &str) -> Result<(), String> {
    if !settings.require {
        return Ok(());
    }
    let sig = sig_path(path);
    let text = std::fs::read_to_string(&sig).map_err(|_| {
        format!(
            "no signature file {} (signatures.require is on)",
            sig.display()
        )
    })?;
    verify(&settings.trusted_keys, &text, digest_hex).map(|_| ())
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
