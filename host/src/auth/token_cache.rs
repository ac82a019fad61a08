//! Verified access tokens, remembered so a client's next request skips the
//! ES256 signature check and the store lookup.
//!
//! Revocation still takes effect at once, whichever process revokes: every
//! entry is tagged with the database's `PRAGMA data_version` as it was before
//! the token's family was checked, and an entry is used only while that
//! version is unchanged. SQLite changes the version whenever another connection
//! commits to the file, so any revocation, refresh rotation, purge, or
//! `stockade tokens revoke` from another process makes every entry stale; the
//! next request checks its token in full again. Entries also end with the
//! token's `exp`, and all of them at once when a signing key is retired
//! ([`TokenCache::invalidate`]): a token signed with a retired key is checked
//! again, and refused.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Principal;

/// How many tokens are remembered (least recently used beyond).
const CAPACITY: usize = 4096;

/// Reads the store's change counter (`None`: unknown, cache nothing).
type VersionSource = Box<dyn Fn() -> Option<i64> + Send + Sync>;

/// The verified tokens of one host.
pub struct TokenCache {
    entries: quick_cache::sync::Cache<[u8; 32], Arc<Entry>>,
    /// Bumped by [`TokenCache::invalidate`]; entries of an older epoch are
    /// never used.
    epoch: std::sync::atomic::AtomicU64,
    /// The store's change counter: SQLite's `PRAGMA data_version` read on a
    /// connection of its own, or the PostgreSQL store's notification counter.
    version: VersionSource,
}

struct Entry {
    principal: Principal,
    exp: u64,
    stamp: Stamp,
}

/// What an entry's validity is tied to: the store's change counter and the
/// cache's epoch, both read before the token was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    data_version: i64,
    epoch: u64,
}

/// A token's cache key: its sha256.
pub struct Key([u8; 32]);

impl TokenCache {
    /// A cache watching the database at `db` (which must exist).
    pub fn open(db: &Path) -> Result<TokenCache, String> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("cannot open {} for the token cache: {e}", db.display()))?;
        let conn = Mutex::new(conn);
        Ok(Self::watching(Box::new(move || {
            let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            let mut stmt = conn.prepare_cached("PRAGMA data_version").ok()?;
            stmt.query_row([], |r| r.get(0)).ok()
        })))
    }

    /// A cache whose entries are valid while `version` returns the value it
    /// returned before they were checked (a shared store's change counter).
    pub fn watching(version: VersionSource) -> TokenCache {
        TokenCache {
            entries: quick_cache::sync::Cache::new(CAPACITY),
            epoch: Default::default(),
            version,
        }
    }

    /// The key of `token`.
    pub fn key(token: &str) -> Key {
        Key(Sha256::digest(token.as_bytes()).into())
    }

    /// The database's change counter and this cache's epoch now, `None` if
    /// the counter cannot be read (then nothing is cached). Read it before
    /// checking a token, and [`TokenCache::put`] the result with it.
    pub fn stamp(&self) -> Option<Stamp> {
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        (self.version)().map(|data_version| Stamp {
            data_version,
            epoch,
        })
    }

    /// Forgets every entry, and any verification in flight that read its
    /// stamp before (a signing key was retired).
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entries.clear();
    }

    /// The caller of a token verified earlier, if it is still valid: not expired,
    /// and nothing committed to the database since its family was checked.
    pub fn get(&self, key: &Key, now: u64) -> Option<Principal> {
        let entry = self.entries.get(&key.0)?;
        if entry.exp <= now || Some(entry.stamp) != self.stamp() {
            self.entries.remove(&key.0);
            return None;
        }
        Some(entry.principal.clone())
    }

    /// Remembers a token checked in full, with the stamp read before its
    /// family was checked.
    pub fn put(&self, key: Key, principal: &Principal, exp: u64, stamp: Stamp) {
        self.entries.insert(
            key.0,
            Arc::new(Entry {
                principal: principal.clone(),
                exp,
                stamp,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            subject: "operator".into(),
            client_id: Some("c".into()),
            scopes: vec!["mcp".into()],
            audience: None,
        }
    }

    #[test]
    fn entries_end_with_expiry_and_with_any_commit_by_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let writer = rusqlite::Connection::open(&db).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")
            .unwrap();
        let cache = TokenCache::open(&db).unwrap();
        let v = cache.stamp().unwrap();
        cache.put(TokenCache::key("tok"), &principal(), 1000, v);
        assert_eq!(
            cache.get(&TokenCache::key("tok"), 999).unwrap().subject,
            "operator"
        );
        assert!(cache.get(&TokenCache::key("other"), 999).is_none());
        assert!(
            cache.get(&TokenCache::key("tok"), 1000).is_none(),
            "expired"
        );

        cache.put(TokenCache::key("tok"), &principal(), 1000, v);
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert!(
            cache.get(&TokenCache::key("tok"), 999).is_none(),
            "a commit elsewhere"
        );
        // Tagged with a version read before a commit: never used after it.
        cache.put(TokenCache::key("tok"), &principal(), 1000, v);
        assert!(cache.get(&TokenCache::key("tok"), 999).is_none());

        // A retired key ends every entry, and what was being checked then.
        let v = cache.stamp().unwrap();
        cache.put(TokenCache::key("tok"), &principal(), 1000, v);
        assert!(cache.get(&TokenCache::key("tok"), 999).is_some());
        cache.invalidate();
        assert!(cache.get(&TokenCache::key("tok"), 999).is_none());
        cache.put(TokenCache::key("tok"), &principal(), 1000, v);
        assert!(
            cache.get(&TokenCache::key("tok"), 999).is_none(),
            "stamped before the invalidation"
        );
    }
}
