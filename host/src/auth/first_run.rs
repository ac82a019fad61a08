//! A first run with no login configured: the host makes up the operator
//! password, shows it once, and keeps only its argon2id hash.
//!
//! "No login configured" means the built-in server with no `STOCKADE_PASSWORD`,
//! no `auth.password_file`, no `auth.users_file` and no auto-approve. The hash
//! lives in `<data>/keys/operator-password.argon2` (mode 0600, in the private
//! keys directory); later starts use it. Setting a password any other way takes
//! precedence; deleting the file makes the next start generate a new one.

use std::path::{Path, PathBuf};

use super::users::Secret;
use crate::config::AuthSettings;

/// The file under the data directory.
pub const FILE: &str = "keys/operator-password.argon2";

/// The hash file of `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Whether the built-in server has no login configured, so the generated
/// password is the operator's.
pub fn applies(settings: &AuthSettings, password: Option<&Secret>) -> bool {
    password.is_none()
        && settings.password_file.is_none()
        && settings.users_file.is_none()
        && !settings.auto_approve
}

/// Generates the operator password when `data_dir` has none yet: writes its
/// hash and returns the password, which the caller shows once. `Ok(None)` when
/// a hash is already stored.
pub fn ensure(data_dir: &Path) -> Result<Option<Secret>, String> {
    let path = path_in(data_dir);
    if path.exists() {
        return Ok(None);
    }
    let password = generate();
    let hash = super::users::hash_password(&password)?;
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    }
    crate::fsutil::write_atomic(&path, format!("{hash}\n").as_bytes(), Some(0o600))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Some(Secret::new(password)))
}

/// The stored hash, when there is one.
pub fn stored_hash(data_dir: &Path) -> Result<Option<String>, String> {
    let path = path_in(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            crate::fsutil::warn_if_exposed(&path, "the generated operator password's hash");
            let hash = text.trim().to_owned();
            argon2::PasswordHash::new(&hash).map_err(|e| {
                format!(
                    "{} is not an argon2 hash ({e}); delete it to have a new password generated",
                    path.display()
                )
            })?;
            Ok(Some(hash))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Five groups of five lower-case letters and digits (about 129 bits), easy
/// to read back and to type: `k3p9x-...`.
fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes = super::random_bytes::<25>();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_kept_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let password = ensure(dir.path())
            .unwrap()
            .expect("generated on the first run");
        let p = password.expose();
        assert_eq!(p.len(), 29, "{p}");
        assert!(
            p.chars()
                .all(|c| c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!(ensure(dir.path()).unwrap().is_none(), "not generated twice");
        let hash = stored_hash(dir.path()).unwrap().unwrap();
        assert!(
            hash.starts_with("$argon2id$") && !hash.contains(p),
            "{hash}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path_in(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(path_in(dir.path()), "not a hash").unwrap();
        assert!(stored_hash(dir.path()).unwrap_err().contains("delete it"));
    }
}
