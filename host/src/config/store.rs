//! The `[store]` table: where the authorization server keeps its state.
//!
//! Without it the state lives in `<data>/stockade.db` (SQLite, one host). With
//! `url = "postgres://..."` it lives in PostgreSQL, shared by every host that
//! names the same database: clients, codes, token families, signing keys, login
//! forms, rate counters and MCP sessions (see README "Several hosts").

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of the `[store]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreSettings {
    /// A PostgreSQL connection URL (`postgres://stockade@db.internal/stockade`)
    /// without its password (that comes from `password_file`). Unset: the
    /// embedded SQLite database in the data directory.
    pub url: Option<String>,
    /// A file whose first line is the database password (absolute path).
    pub password_file: Option<PathBuf>,
    /// Connections this host keeps to the database at most (1-256).
    pub max_connections: u32,
    /// This host's name in the audit log and in the database (letters, digits,
    /// `-`, `_`, `.`; at most 64). Default: the machine's host name.
    pub host_id: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: None,
            password_file: None,
            max_connections: 16,
            host_id: None,
        }
    }
}

impl StoreSettings {
    /// Adds what is wrong with `[store]` to `problems`.
    pub(crate) fn check(&self, problems: &mut Vec<String>) {
        match &self.url {
            Some(url) => check_postgres_url("store.url", url, problems),
            None if self.password_file.is_some() => problems.push(
                "store.password_file: only with `store.url` (the embedded SQLite store has no password)"
                    .into(),
            ),
            None => {}
        }
        if let Some(p) = &self.password_file
            && !p.is_absolute()
        {
            problems.push(format!(
                "store.password_file: `{}` must be an absolute path",
                p.display()
            ));
        }
        if self.max_connections == 0 || self.max_connections > 256 {
            problems.push(format!(
                "store.max_connections: {} is not between 1 and 256",
                self.max_connections
            ));
        }
        if let Some(id) = &self.host_id
            && !is_valid_host_id(id)
        {
            problems.push(format!(
                "store.host_id: `{id}` is not a valid host id (1-64 letters, digits, `-`, `_` or `.`)"
            ));
        }
    }
}

/// Whether `id` can name a host: 1-64 ASCII letters, digits, `-`, `_`, `.`.
pub fn is_valid_host_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a PostgreSQL URL given at config key `key`: the scheme, a database
/// name, and no password in it (passwords go in a file). A malformed URL is
/// never echoed: it may still hold a password.
pub(crate) fn check_postgres_url(key: &str, url: &str, problems: &mut Vec<String>) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            if u.password().is_some() {
                problems.push(format!(
                    "{key}: put the password in `password_file`, not in the URL (the config is \
                     not a secret store)"
                ));
            }
            if u.path().trim_start_matches('/').is_empty() {
                problems.push(format!(
                    "{key}: name the database (`postgres://user@host/DB`)"
                ));
            }
        }
        _ => problems.push(format!(
            "{key}: not a `postgres://user@host[:port]/database` URL"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(s: &StoreSettings) -> Vec<String> {
        let mut p = Vec::new();
        s.check(&mut p);
        p
    }

    #[test]
    fn the_default_is_the_embedded_store() {
        assert!(problems(&StoreSettings::default()).is_empty());
    }

    #[test]
    fn bad_settings_are_named() {
        let s = StoreSettings {
            url: Some("postgres://u:hunter2pw@db/x".into()),
            password_file: Some("relative".into()),
            max_connections: 0,
            host_id: Some("a b".into()),
        };
        let p = problems(&s).join("\n");
        assert!(
            p.contains("store.url: put the password in `password_file`"),
            "{p}"
        );
        assert!(!p.contains("hunter2pw"), "{p}");
        assert!(p.contains("store.password_file: `relative` must be an absolute path"));
        assert!(p.contains("store.max_connections: 0"));
        assert!(p.contains("store.host_id: `a b`"));
        let s = StoreSettings {
            url: Some("mysql://db/x".into()),
            ..StoreSettings::default()
        };
        assert!(problems(&s)[0].contains("not a `postgres://"));
        let s = StoreSettings {
            url: Some("postgres://db".into()),
            ..StoreSettings::default()
        };
        assert!(problems(&s)[0].contains("name the database"));
        let s = StoreSettings {
            password_file: Some("/x".into()),
            ..StoreSettings::default()
        };
        assert!(problems(&s)[0].contains("only with `store.url`"));
    }
}
