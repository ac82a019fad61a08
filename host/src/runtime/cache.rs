//! The on-disk cache of compiled plugin code (`<data>/cache/`).
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to seconds;
//! loading the compiled artifact takes about a millisecond. Entries are keyed by
//! the component's sha256 **and** a hash of the engine's configuration
//! ([`Engine::precompile_compatibility_hash`]: wasmtime version, compiler
//! settings, fuel and epoch switches...), so code compiled under other settings
//! is never found, let alone used.
//!
//! Entries are never trusted blindly: loading compiled code runs it as native code
//! without validation, so every entry carries `HMAC-SHA256(key, engine hash ||
//! digest || artifact)` under a secret key only this host knows
//! (`<cache>/key`, 32 random bytes, mode 0600, created on first use). An entry
//! whose MAC does not match (corrupted, truncated, written by someone else, moved
//! to another digest's name), that wasmtime refuses, or that cannot be read is
//! ignored: the component is compiled again and the entry rewritten atomically
//! (temporary file + rename).
//!
//! Layout: `<cache>/<engine hash>/<component sha256>.cwasm`, each file
//! `MAGIC || mac (32 bytes) || artifact`.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::compiler::{CompileError, Compiler};

type HmacSha256 = Hmac<Sha256>;

/// First bytes of every entry (format version).
const MAGIC: &[u8; 8] = b"STKCWv1\n";
/// Length of the MAC.
const MAC_LEN: usize = 32;

/// How a component was obtained, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Loaded from a verified cache entry.
    Cache,
    /// Compiled now (no cache, a miss, or a rejected entry).
    Compiled,
}

/// The compiled-code cache of one engine.
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .field("engine_hash", &self.engine_hash)
            .finish_non_exhaustive()
    }
}

impl CodeCache {
    /// Opens (creating when missing) the cache in `root` for `engine`: reads or
    /// creates the MAC key.
    pub fn open(root: &Path, engine: &Engine) -> std::io::Result<CodeCache> {
        std::fs::create_dir_all(root)?;
        let key = read_or_create_key(&root.join("key"))?;
        let mut h = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        let engine_hash = hex::encode(&h.0.finalize()[..12]);
        let dir = root.join(&engine_hash);
        std::fs::create_dir_all(&dir)?;
        Ok(CodeCache {
            dir,
            key,
            engine_hash,
        })
    }

    /// The hex string identifying the engine's configuration.
    pub fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    /// The entry file for a component with sha256 `digest` (hex).
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    fn mac(&self, digest: &str, artifact: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(self.engine_hash.as_bytes());
        mac.update(b"\0");
        mac.update(digest.as_bytes());
        mac.update(b"\0");
        mac.update(artifact);
        mac
    }

    /// The component whose bytes are `wasm` with sha256 `digest` (hex): from the
    /// cache when a verified entry exists, else compiled by `compiler` (and
    /// stored).
    pub fn component(
        &self,
        engine: &Engine,
        compiler: &Compiler,
        digest: &str,
        wasm: &[u8],
    ) -> Result<(Component, Source), CompileError> {
        if !is_hex_digest(digest) {
            let (component, _) = compiler.component(engine, wasm)?;
            return Ok((component, Source::Compiled));
        }
        let path = self.entry_path(digest);
        match std::fs::read(&path) {
            Ok(entry) => match self.verified(digest, &entry) {
                Ok(artifact) => match deserialize_verified(engine, artifact) {
                    Ok(c) => return Ok((c, Source::Cache)),
                    Err(e) => tracing::warn!(
                        file = %path.display(),
                        "compiled-code cache entry refused by wasmtime ({e}); recompiling"
                    ),
                },
                Err(why) => tracing::warn!(
                    file = %path.display(),
                    "compiled-code cache entry ignored: {why}; recompiling"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), "cannot read cache entry: {e}"),
        }
        let (component, artifact) = compiler.component(engine, wasm)?;
        if let Err(e) = self.store(digest, &artifact) {
            tracing::warn!(file = %path.display(), "cannot write compiled-code cache entry: {e}");
        }
        Ok((component, Source::Compiled))
    }

    /// Checks an entry's magic and MAC; returns the artifact.
    fn verified<'a>(&self, digest: &str, entry: &'a [u8]) -> Result<&'a [u8], &'static str> {
        let rest = entry
            .strip_prefix(MAGIC.as_slice())
            .ok_or("unknown format or truncated")?;
        if rest.len() < MAC_LEN {
            return Err("truncated");
        }
        let (tag, artifact) = rest.split_at(MAC_LEN);
        self.mac(digest, artifact).verify_slice(tag).map_err(
            |_| "its MAC does not match (corrupt, truncated or not written by this host)",
        )?;
        Ok(artifact)
    }

    /// Writes an entry atomically.
    fn store(&self, digest: &str, artifact: &[u8]) -> std::io::Result<()> {
        let tag = self.mac(digest, artifact).finalize().into_bytes();
        let mut bytes = Vec::with_capacity(MAGIC.len() + MAC_LEN + artifact.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&tag);
        bytes.extend_from_slice(artifact);
        crate::fsutil::write_atomic(&self.entry_path(digest), &bytes, None)
    }
}

/// Loads compiled code whose MAC was just verified.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be compiled code that
    // wasmtime produced for a compatible engine; arbitrary bytes could run as
    // native code. `artifact` is only ever passed here after `CodeCache::verified`
    // checked its HMAC-SHA256 under the cache's secret key (0600, created by this
    // host), over this engine's configuration hash, the component's digest and the
    // artifact's every byte. So these are exactly bytes that this host's
    // `Component::serialize` produced for this component under an engine with the
    // same configuration; wasmtime itself additionally checks the version and the
    // engine settings recorded in the artifact and refuses a mismatch with an
    // error (which makes us recompile).
    unsafe { Component::deserialize(engine, artifact) }
}

/// Feeds what [`std::hash::Hash`] writes into sha256 (stable across builds,
/// unlike the standard library's hasher).
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read directly
    }
}

fn is_hex_digest(d: &str) -> bool {
    d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads the 32-byte key at `path`, or creates it (mode 0600). A key file of the
/// wrong size is replaced (every existing entry then fails its check and is
/// rebuilt).
fn read_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(_) => {
            tracing::warn!(file = %path.display(), "cache key has the wrong size; replacing it")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &key, Some(0o600))?;
    // Another process may have won the race: use whatever is on disk now.
    let bytes = std::fs::read(path)?;
    key.copy_from_slice(bytes.get(..32).ok_or_else(|| {
        std::io::Error::other("the cache key file was truncated while being created")
    })?);
    Ok(key)
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
