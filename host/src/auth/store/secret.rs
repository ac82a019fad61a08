//! The store secret (`[store] secret_file`): one secret that every host of a
//! shared PostgreSQL store holds and that never crosses the database link.
//!
//! Two keys are derived from it (HKDF-SHA256, one label each):
//! - a sealing key: the token signing keys are kept in `signing_keys` only
//!   sealed (ChaCha20-Poly1305, the key id as associated data), so whoever
//!   reads the database or its traffic (a backup, a replica, a passive
//!   observer of a plaintext link) cannot sign tokens;
//! - a MAC key: every `NOTIFY stockade_events` payload is authenticated and
//!   dated, so a role that may only connect to the database cannot spoof a
//!   plugin reload or replay a relayed reply; unauthenticated or stale events
//!   are ignored.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::StoreError;

/// The least length of the secret (its first line), in characters.
pub const MIN_SECRET_LEN: usize = 32;
/// How far an event's date may be from this host's clock, seconds.
pub const EVENT_MAX_AGE: i64 = 60;
/// What a sealed value starts with in the database.
const SEALED_PREFIX: &str = "sealed-v1:";

/// The keys derived from the store secret.
pub struct StoreSecret {
    seal: LessSafeKey,
    mac: ring::hmac::Key,
    /// The key of MCP request states (`mcp::mrtr`), the same on every host.
    request_state: [u8; 32],
}

impl std::fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSecret(..)")
    }
}

/// One HKDF output length for ring's `expand`.
struct Len(usize);

impl ring::hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(prk: &ring::hkdf::Prk, label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let info = [label];
    prk.expand(&info, Len(32))
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

impl StoreSecret {
    /// Reads the secret from the first line of `path` (at least
    /// [`MIN_SECRET_LEN`] characters; `openssl rand -base64 48` makes one).
    pub fn read(path: &Path) -> Result<StoreSecret, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError(format!(
                "cannot read store.secret_file {}: {e}",
                path.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or_default().trim();
        if line.chars().count() < MIN_SECRET_LEN {
            return Err(StoreError(format!(
                "store.secret_file {}: the secret is {} characters long; it needs at least \
                 {MIN_SECRET_LEN} random characters (make one with `openssl rand -base64 48`)",
                path.display(),
                line.chars().count()
            )));
        }
        Ok(StoreSecret::from_bytes(line.as_bytes()))
    }

    /// The keys of `secret`.
    pub fn from_bytes(secret: &[u8]) -> StoreSecret {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"stockade store secret");
        let prk = salt.extract(secret);
        let seal = derive(&prk, b"signing-key sealing");
        let mac = derive(&prk, b"event authentication");
        let request_state = derive(&prk, b"mcp request state");
        StoreSecret {
            seal: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &seal).expect("a 32-byte ChaCha20 key"),
            ),
            mac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &mac),
            request_state,
        }
    }

    /// The key that seals MCP request states, so a client's retry may reach
    /// any host of the store.
    pub fn request_state_key(&self) -> [u8; 32] {
        self.request_state
    }

    /// Whether `stored` is a sealed value (not a plaintext one from before
    /// sealing existed).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// `plain` sealed for the database, bound to `id` (a value sealed for one
    /// id does not open as another's).
    pub fn seal(&self, id: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random generator works");
        let mut data = plain.as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .expect("ChaCha20-Poly1305 seals any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", B64.encode(out))
    }

    /// Opens a value [`StoreSecret::seal`] made for `id`.
    pub fn open(&self, id: &str, stored: &str) -> Result<String, StoreError> {
        let wrong = || {
            StoreError(format!(
                "the stored signing key {id} does not open with this host's store.secret_file: \
                 every host of a shared store needs the same secret"
            ))
        };
        let b64 = stored.strip_prefix(SEALED_PREFIX).ok_or_else(wrong)?;
        let bytes = B64.decode(b64).map_err(|_| wrong())?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut sealed)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }

    fn tag(&self, message: &str) -> String {
        hex::encode(&ring::hmac::sign(&self.mac, message.as_bytes()).as_ref()[..16])
    }

    /// The `NOTIFY` payload of event `what` from `host` at `now`:
    /// `"{now} {tag} {host} {what}"` (host ids have no spaces).
    pub fn sign_event(&self, host: &str, what: &str, now: i64) -> String {
        let tag = self.tag(&format!("{now} {host} {what}"));
        format!("{now} {tag} {host} {what}")
    }

    /// The `(host, what)` of a payload [`StoreSecret::sign_event`] made,
    /// dated within [`EVENT_MAX_AGE`] of `now`; `None` for anything else.
    pub fn verify_event(&self, payload: &str, now: i64) -> Option<(String, String)> {
        let mut parts = payload.splitn(4, ' ');
        let (at, tag, host, what) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let at_secs: i64 = at.parse().ok()?;
        if (now - at_secs).abs() > EVENT_MAX_AGE {
            return None;
        }
        let expected = self.tag(&format!("{at} {host} {what}"));
        // Constant time: the tag is a MAC.
        use subtle::ConstantTimeEq as _;
        if expected.as_bytes().ct_eq(tag.as_bytes()).into() {
            Some((host.to_owned(), what.to_owned()))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> StoreSecret {
        StoreSecret::from_bytes(b"0123456789abcdef0123456789abcdef-test")
    }

    #[test]
    fn sealed_keys_open_only_for_their_id_and_secret() {
        let s = secret();
        let sealed = s.seal("kid-1", "-----BEGIN PRIVATE KEY-----\nabc");
        assert!(StoreSecret::is_sealed(&sealed));
        assert!(!sealed.contains("BEGIN"), "{sealed}");
        assert_eq!(
            s.open("kid-1", &sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----\nabc"
        );
        // Another id, another secret, a flipped byte, a plaintext PEM: refused.
        assert!(s.open("kid-2", &sealed).is_err());
        let other = StoreSecret::from_bytes(b"another secret of enough length, 123");
        let e = other.open("kid-1", &sealed).unwrap_err().to_string();
        assert!(e.contains("same secret"), "{e}");
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open("kid-1", &String::from_utf8(bytes).unwrap()).is_err());
        assert!(s.open("kid-1", "-----BEGIN PRIVATE KEY-----").is_err());
        // Two seals of the same key differ (fresh nonces).
        assert_ne!(s.seal("k", "x"), s.seal("k", "x"));
    }

    #[test]
    fn events_are_authenticated_and_dated() {
        let s = secret();
        let p = s.sign_event("host-a", "reply 12", 1_000);
        assert_eq!(
            s.verify_event(&p, 1_030),
            Some(("host-a".into(), "reply 12".into()))
        );
        // Too old, from the future, tampered, unsigned, another secret.
        assert_eq!(s.verify_event(&p, 1_061), None);
        assert_eq!(s.verify_event(&p, 939), None);
        assert_eq!(
            s.verify_event(&p.replace("reply 12", "reply 13"), 1_000),
            None
        );
        assert_eq!(s.verify_event(&p.replace("host-a", "host-b"), 1_000), None);
        assert_eq!(s.verify_event("host-a reply 12", 1_000), None);
        assert_eq!(s.verify_event("", 1_000), None);
        let other = StoreSecret::from_bytes(b"another secret of enough length, 123");
        assert_eq!(other.verify_event(&p, 1_000), None);
    }

    #[test]
    fn a_short_or_missing_secret_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too-short\n").unwrap();
        let e = StoreSecret::read(&short).unwrap_err().to_string();
        assert!(
            e.contains("9 characters long") && e.contains("openssl rand"),
            "{e}"
        );
        let e = StoreSecret::read(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read store.secret_file"), "{e}");
        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef-test\nignored").unwrap();
        let s = StoreSecret::read(&good).unwrap();
        let p = s.sign_event("h", "x", 5);
        assert!(
            secret().verify_event(&p, 5).is_some(),
            "the first line is the secret"
        );
    }
}
