//! The token signing keys in force, read from the store: the newest key not
//! scheduled for retirement signs; every key not yet retired verifies and is
//! published in the JWKS.
//!
//! Rotation (`stockade keys rotate`, [`rotate`]) adds a key and schedules the
//! others' retirement after the longest access-token lifetime, so tokens signed
//! just before the rotation stay valid until they expire. Every host re-reads
//! the keys every [`RELOAD_EVERY`] and at once when it meets a token signed
//! with a key it does not know (at most once per [`MISS_RELOAD_GAP`]), so a
//! rotation done through any host (or the command line) is honoured by all of
//! them within seconds, and a token from the new key is accepted everywhere
//! immediately.
//!
//! The first key of a store is imported from `<data>/keys/es256.pem` (created
//! there when missing), so single-host installs keep the key they had.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Value, json};

use super::keys::{AccessClaims, KeyError, SigningKey, TokenRejection, check_header};
use super::store::{AuthStore, StoreError, StoredKey};

/// How often every host re-reads the keys.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// The least time between two re-reads caused by unknown key ids.
pub const MISS_RELOAD_GAP: Duration = Duration::from_secs(1);

/// Errors setting up or rotating keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file failed.
    #[error(transparent)]
    File(#[from] KeyError),
    /// A stored key is unusable.
    #[error("stored signing key {kid} is not a PKCS#8 P-256 private key: {message}")]
    Invalid {
        /// Its id.
        kid: String,
        /// Why.
        message: String,
    },
    /// No key is left to sign with.
    #[error("no signing key is in force (every stored key is retired): run `stockade keys rotate`")]
    NoneActive,
}

struct Ring {
    signer: Arc<SigningKey>,
    keys: Vec<Arc<SigningKey>>,
    jwks: Value,
}

/// The keys in force on this host.
pub struct KeyRing {
    ring: ArcSwap<Ring>,
    store: Arc<dyn AuthStore>,
    last_miss_reload: Mutex<Option<Instant>>,
    /// Called when a reload finds a key that verified before retired.
    retired: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

fn now_secs() -> i64 {
    super::now_secs()
}

/// The ring of `rows` at `now`: `None` when no key may sign.
fn build(rows: &[StoredKey], now: i64) -> Result<Option<Ring>, KeyRingError> {
    let mut keys = Vec::new();
    let mut signer: Option<(i64, Arc<SigningKey>)> = None;
    for row in rows.iter().filter(|r| r.retire_at.is_none_or(|t| t > now)) {
        let key =
            Arc::new(
                SigningKey::from_pem(&row.pem).map_err(|message| KeyRingError::Invalid {
                    kid: row.kid.clone(),
                    message,
                })?,
            );
        if row.retire_at.is_none() && signer.as_ref().is_none_or(|(t, _)| row.created_at >= *t) {
            signer = Some((row.created_at, key.clone()));
        }
        keys.push(key);
    }
    let Some((_, signer)) = signer else {
        return Ok(None);
    };
    let jwks = json!({ "keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>() });
    Ok(Some(Ring { signer, keys, jwks }))
}

impl KeyRing {
    /// The keys of `store`; a store without any gets the key of
    /// `<key_dir>/es256.pem` (created when missing).
    pub async fn open(store: Arc<dyn AuthStore>, key_dir: &Path) -> Result<KeyRing, KeyRingError> {
        let mut rows = store.signing_keys().await?;
        if rows.is_empty() {
            let (pem, path) = SigningKey::load_or_create_pem(key_dir)?;
            let key = SigningKey::from_pem(&pem)
                .map_err(|message| KeyError::Invalid { path, message })?;
            store
                .add_signing_key(
                    &StoredKey {
                        kid: key.kid().to_owned(),
                        pem,
                        created_at: now_secs(),
                        retire_at: None,
                    },
                    None,
                )
                .await?;
            rows = store.signing_keys().await?;
        }
        let ring = build(&rows, now_secs())?.ok_or(KeyRingError::NoneActive)?;
        Ok(KeyRing {
            ring: ArcSwap::from_pointee(ring),
            store,
            last_miss_reload: Mutex::new(None),
            retired: std::sync::OnceLock::new(),
        })
    }

    /// Re-reads the keys; keeps the current ones if the store fails or no key
    /// could sign (both logged).
    pub async fn reload(&self) {
        match self.store.signing_keys().await {
            Ok(rows) => match build(&rows, now_secs()) {
                Ok(Some(ring)) => {
                    let old = self.ring.load_full();
                    if old.signer.kid() != ring.signer.kid() {
                        tracing::info!(kid = ring.signer.kid(), "signing with a new key");
                    }
                    self.ring.store(Arc::new(ring));
                    let now = self.ring.load();
                    let gone: Vec<&str> = old
                        .keys
                        .iter()
                        .map(|k| k.kid())
                        .filter(|kid| !now.keys.iter().any(|k| k.kid() == *kid))
                        .collect();
                    if !gone.is_empty() {
                        tracing::info!(kids = ?gone, "signing keys retired: tokens they signed are refused");
                        if let Some(hook) = self.retired.get() {
                            hook();
                        }
                    }
                }
                Ok(None) => tracing::error!(
                    "every stored signing key is retired: still signing with {}; run `stockade keys rotate`",
                    self.ring.load().signer.kid()
                ),
                Err(e) => tracing::error!("signing keys not reloaded: {e}"),
            },
            Err(e) => tracing::warn!("signing keys not reloaded: {e}"),
        }
    }

    /// Calls `hook` whenever a reload finds that a key which verified tokens
    /// has retired (set once; e.g. to forget cached verifications).
    pub fn on_key_retired(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.retired.set(hook);
    }

    /// Starts re-reading the keys every [`RELOAD_EVERY`] (ends with the ring).
    pub fn spawn_reloader(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ring) = weak.upgrade() else { return };
                ring.reload().await;
            }
        });
    }

    /// The id of the key that signs.
    pub fn signing_kid(&self) -> String {
        self.ring.load().signer.kid().to_owned()
    }

    /// The JWKS document (`/jwks.json`): every key in force.
    pub fn jwks(&self) -> Value {
        self.ring.load().jwks.clone()
    }

    /// Signs `claims` with the newest key.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        self.ring.load().signer.sign(claims)
    }

    /// The key a token's header names (`None`: unknown here).
    fn key_for(&self, token: &str) -> Result<Option<Arc<SigningKey>>, TokenRejection> {
        let header = check_header(token, &[jsonwebtoken::Algorithm::ES256])?;
        let ring = self.ring.load();
        Ok(match header.kid {
            Some(kid) => ring.keys.iter().find(|k| k.kid() == kid).cloned(),
            // No kid: only unambiguous with one key.
            None if ring.keys.len() == 1 => Some(ring.keys[0].clone()),
            None => None,
        })
    }

    /// The key a token names, re-reading the store once (rate limited) when
    /// it is not known here: it may come from a rotation on another host.
    async fn find(&self, token: &str) -> Result<Arc<SigningKey>, TokenRejection> {
        if let Some(k) = self.key_for(token)? {
            return Ok(k);
        }
        let due = {
            let mut last = self
                .last_miss_reload
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= MISS_RELOAD_GAP);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.reload().await;
            if let Some(k) = self.key_for(token)? {
                return Ok(k);
            }
        }
        Err(TokenRejection::UnknownKey)
    }

    /// Verifies a token with the key it names ([`SigningKey::verify`]).
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        self.find(token).await?.verify(token, issuer, audience)
    }

    /// Like [`verify`](Self::verify) but accepts expired tokens (revocation).
    pub async fn verify_ignoring_expiry(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenRejection> {
        self.find(token)
            .await?
            .verify_ignoring_expiry(token, issuer, audience)
    }
}

/// Adds a new signing key to `store` and schedules every other key's
/// retirement `keep_old_for` from now (the longest access-token lifetime plus
/// leeway; zero retires them at once, after a compromise); returns the new
/// key's id.
pub async fn rotate(store: &dyn AuthStore, keep_old_for: Duration) -> Result<String, KeyRingError> {
    let pem = SigningKey::generate_pem();
    let key = SigningKey::from_pem(&pem).map_err(|message| KeyRingError::Invalid {
        kid: "(new)".into(),
        message,
    })?;
    let now = now_secs();
    store
        .add_signing_key(
            &StoredKey {
                kid: key.kid().to_owned(),
                pem,
                created_at: now,
                retire_at: None,
            },
            Some(now.saturating_add(keep_old_for.as_secs() as i64)),
        )
        .await?;
    Ok(key.kid().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::SqliteStore;

    fn claims() -> AccessClaims {
        let now = jsonwebtoken::get_current_timestamp();
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: now + 600,
            iat: now,
            jti: "j".into(),
            client_id: "c".into(),
            scope: "mcp".into(),
            fam: "f".into(),
        }
    }

    #[tokio::test]
    async fn the_first_key_comes_from_the_file_and_rotation_keeps_the_old_one_until_it_retires() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuthStore> =
            Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let file_key = SigningKey::load_or_create(&dir.path().join("keys")).unwrap();
        let ring = KeyRing::open(store.clone(), &dir.path().join("keys"))
            .await
            .unwrap();
        assert_eq!(ring.signing_kid(), file_key.kid(), "imported, not replaced");
        let old_token = ring.sign(&claims());

        // Another ring on the same store (another host) rotates.
        let other = KeyRing::open(store.clone(), &dir.path().join("nowhere"))
            .await
            .unwrap();
        let new_kid = rotate(store.as_ref(), Duration::from_secs(900))
            .await
            .unwrap();
        other.reload().await;
        let new_token = other.sign(&claims());
        assert_eq!(other.signing_kid(), new_kid);
        // The first ring has not reloaded yet, but a token from the new key
        // makes it look, so it is accepted at once.
        ring.verify(&new_token, "i", "a").await.unwrap();
        assert_eq!(ring.signing_kid(), new_kid, "the miss reloaded the ring");
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        ring.verify(&old_token, "i", "a").await.unwrap();

        // Once the old key retires it is neither published nor accepted.
        let rows = store.signing_keys().await.unwrap();
        let retired: Vec<StoredKey> = rows
            .into_iter()
            .map(|mut r| {
                if r.kid != new_kid {
                    r.retire_at = Some(now_secs() - 1);
                }
                r
            })
            .collect();
        let later = build(&retired, now_secs()).unwrap().unwrap();
        assert_eq!(later.keys.len(), 1);
        assert_eq!(later.signer.kid(), new_kid);
        // Nothing left to sign with is an error, never a silent fallback.
        let all_retired: Vec<StoredKey> = retired
            .into_iter()
            .map(|mut r| {
                r.retire_at = Some(now_secs() - 1);
                r
            })
            .collect();
        assert!(build(&all_retired, now_secs()).unwrap().is_none());
    }

    /// Issue 23: a token signed with a key that has since retired is never
    /// verified: not by the ring that signed it once it reloads (the look
    /// its unknown `kid` causes finds the key retired, not back), not for a
    /// revocation (`verify_ignoring_expiry`), not by a ring opened later
    /// (another host, a restart); the key leaves the JWKS and the
    /// retirement hook (which empties the verified-token cache) runs.
    #[tokio::test]
    async fn a_token_of_a_retired_key_is_never_verified() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuthStore> =
            Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let ring = KeyRing::open(store.clone(), &dir.path().join("keys"))
            .await
            .unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let hook = fired.clone();
        ring.on_key_retired(Box::new(move || {
            hook.fetch_add(1, Ordering::SeqCst);
        }));
        let old_kid = ring.signing_kid();
        let token = ring.sign(&claims());
        ring.verify(&token, "i", "a").await.unwrap();

        // Retired at once (`stockade keys rotate --retire-now`).
        let new_kid = rotate(store.as_ref(), Duration::ZERO).await.unwrap();
        ring.reload().await;
        assert_eq!(ring.signing_kid(), new_kid);
        assert_eq!(fired.load(Ordering::SeqCst), 1, "the hook ran once");
        let published: Vec<String> = ring.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(published, vec![new_kid.clone()]);
        assert_eq!(
            ring.verify(&token, "i", "a").await.unwrap_err(),
            TokenRejection::UnknownKey
        );
        assert_eq!(
            ring.verify_ignoring_expiry(&token, "i", "a")
                .await
                .unwrap_err(),
            TokenRejection::UnknownKey
        );
        let later = KeyRing::open(store.clone(), &dir.path().join("keys"))
            .await
            .unwrap();
        assert_eq!(later.signing_kid(), new_kid);
        assert_eq!(
            later.verify(&token, "i", "a").await.unwrap_err(),
            TokenRejection::UnknownKey
        );
        // The retired key is still in the store (its row), just not in force.
        assert!(
            store
                .signing_keys()
                .await
                .unwrap()
                .iter()
                .any(|r| r.kid == old_kid && r.retire_at.is_some())
        );
        // The new key's tokens verify: the ring is not simply refusing all.
        later
            .verify(&later.sign(&claims()), "i", "a")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_unknown_key_is_refused_after_one_look() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuthStore> =
            Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let ring = KeyRing::open(store, &dir.path().join("keys"))
            .await
            .unwrap();
        let stranger = SigningKey::generate().sign(&claims());
        assert_eq!(
            ring.verify(&stranger, "i", "a").await.unwrap_err(),
            TokenRejection::UnknownKey
        );
    }
}
