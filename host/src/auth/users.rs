//! Who may log in on the built-in server: the operator password
//! (`STOCKADE_PASSWORD` or `auth.password_file`) and/or a users file with argon2
//! password hashes and per-user scopes.
//!
//! Users file (TOML):
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # stockade hash-password
//! scopes = ["mcp", "admin"]
//! ```

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest acceptable password.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The subject of the operator (password) login.
pub const OPERATOR: &str = "operator";

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// Reads the first line of `path`.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read auth.password_file {}: {e}", path.display()))?;
        crate::fsutil::warn_if_exposed(path, "the password file (auth.password_file)");
        Ok(Secret(text.lines().next().unwrap_or("").to_owned()))
    }

    /// The secret itself; call sites are the only places it is read.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

struct User {
    name: String,
    hash: String,
    scopes: Vec<String>,
}

/// A successful login: who, and which scopes they may be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The subject.
    pub subject: String,
    /// Scopes this user may hold.
    pub allowed_scopes: Vec<String>,
}

/// The operator's password as the host knows it.
pub enum OperatorPassword {
    /// Given in plain text (`STOCKADE_PASSWORD`, `auth.password_file`).
    Plain(Secret),
    /// Only its argon2 hash is known (generated on the first run, see
    /// [`super::first_run`]).
    Hash(String),
}

impl From<Secret> for OperatorPassword {
    fn from(s: Secret) -> Self {
        Self::Plain(s)
    }
}

/// How the operator password is checked.
enum Operator {
    /// sha256 of a per-process salt and the password: fast, constant time.
    Salted([u8; 32]),
    /// An argon2 PHC string.
    Argon2(String),
}

/// The credentials the login page checks.
pub struct Credentials {
    operator: Option<Operator>,
    salt: [u8; 32],
    users: Vec<User>,
    all_scopes: Vec<String>,
    /// Auto-approve logs clients in as the operator without a password.
    auto_approve: bool,
    /// A hash verified for unknown user names, so timing does not tell which exist.
    dummy_hash: String,
}

impl Credentials {
    /// Builds the credentials; refuses weak or missing ones with a message for the
    /// operator. `auto_approve` allows having no password at all.
    pub fn load(
        password: Option<OperatorPassword>,
        users_file: Option<&Path>,
        scopes_supported: &[String],
        auto_approve: bool,
    ) -> Result<Credentials, String> {
        let salt = super::random_bytes::<32>();
        let operator = match password {
            Some(OperatorPassword::Plain(p)) => {
                if p.expose().chars().count() < MIN_PASSWORD_CHARS {
                    return Err(format!(
                        "the operator password (STOCKADE_PASSWORD or auth.password_file) is shorter than \
                         {MIN_PASSWORD_CHARS} characters: choose a longer one"
                    ));
                }
                Some(Operator::Salted(salted(&salt, p.expose())))
            }
            Some(OperatorPassword::Hash(h)) => Some(Operator::Argon2(h)),
            None => None,
        };
        let mut users = Vec::new();
        if let Some(path) = users_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read auth.users_file {}: {e}", path.display()))?;
            crate::fsutil::warn_if_exposed(path, "the users file (auth.users_file)");
            let file: UsersFile = toml::from_str(&text)
                .map_err(|e| format!("auth.users_file {} is invalid: {e}", path.display()))?;
            let mut problems = Vec::new();
            for u in file.user {
                if u.name.is_empty() || u.name.len() > 64 || u.name.chars().any(char::is_control) {
                    problems.push(format!(
                        "user `{}`: name must be 1-64 printable characters",
                        u.name
                    ));
                }
                if let Err(e) = PasswordHash::new(&u.password_hash) {
                    problems.push(format!(
                        "user `{}`: password_hash is not a PHC string: {e}",
                        u.name
                    ));
                }
                let scopes = u.scopes.unwrap_or_else(|| scopes_supported.to_vec());
                for s in &scopes {
                    if !scopes_supported.contains(s) {
                        problems.push(format!(
                            "user `{}`: scope `{s}` is not in auth.scopes_supported",
                            u.name
                        ));
                    }
                }
                if users.iter().any(|x: &User| x.name == u.name)
                    || u.name == OPERATOR && operator.is_some()
                {
                    problems.push(format!("user `{}` appears twice", u.name));
                }
                users.push(User {
                    name: u.name,
                    hash: u.password_hash,
                    scopes,
                });
            }
            if !problems.is_empty() {
                return Err(format!(
                    "auth.users_file {}:\n  - {}",
                    path.display(),
                    problems.join("\n  - ")
                ));
            }
        }
        if operator.is_none() && users.is_empty() && !auto_approve {
            return Err(format!(
                "no login configured for the built-in OAuth server: set STOCKADE_PASSWORD (at least \
                 {MIN_PASSWORD_CHARS} characters), auth.password_file or auth.users_file; or run with \
                 --auth none on loopback for local experiments"
            ));
        }
        let dummy_hash = if users.is_empty() {
            String::new()
        } else {
            hash_password("not a real password")?
        };
        Ok(Credentials {
            operator,
            salt,
            users,
            all_scopes: scopes_supported.to_vec(),
            auto_approve,
            dummy_hash,
        })
    }

    /// Whether the login page needs a user name field.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an operator password is configured.
    pub fn has_operator(&self) -> bool {
        self.operator.is_some()
    }

    /// The operator login used by auto-approve.
    pub fn operator_login(&self) -> LoggedIn {
        LoggedIn {
            subject: OPERATOR.into(),
            allowed_scopes: self.all_scopes.clone(),
        }
    }

    /// The scopes `subject` may hold now, or `None` when no such login exists
    /// any more (a user removed from the users file, the operator once neither a
    /// password nor auto-approve is configured). Tokens are re-checked against
    /// this at refresh and at the gate.
    pub fn current_scopes(&self, subject: &str) -> Option<&[String]> {
        if subject == OPERATOR && (self.operator.is_some() || self.auto_approve) {
            return Some(&self.all_scopes);
        }
        self.users
            .iter()
            .find(|u| u.name == subject)
            .map(|u| u.scopes.as_slice())
    }

    /// Checks a login. `user` empty (or `operator`) means the operator password.
    /// Argon2 runs on a blocking thread.
    pub async fn verify(&self, user: &str, password: &str) -> Option<LoggedIn> {
        let user = user.trim();
        if (user.is_empty() || user == OPERATOR)
            && let Some(expected) = &self.operator
        {
            let ok = match expected {
                Operator::Salted(expected) => {
                    bool::from(salted(&self.salt, password).ct_eq(expected))
                }
                Operator::Argon2(hash) => argon2_matches(hash.clone(), password.to_owned()).await,
            };
            return ok.then(|| self.operator_login());
        }
        if self.users.is_empty() {
            return None;
        }
        let found = self.users.iter().find(|u| u.name == user);
        let hash = found
            .map(|u| u.hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let ok = argon2_matches(hash, password.to_owned()).await;
        match (ok, found) {
            (true, Some(u)) => Some(LoggedIn {
                subject: u.name.clone(),
                allowed_scopes: u.scopes.clone(),
            }),
            _ => None,
        }
    }
}

/// Verifies `password` against an argon2 PHC string on a blocking thread.
async fn argon2_matches(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

fn salted(salt: &[u8; 32], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// An argon2id PHC hash of `password` (for users files: `stockade hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&super::random_bytes::<16>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}
