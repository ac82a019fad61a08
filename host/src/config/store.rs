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
    /// A file whose first line is the store secret (absolute path; at least 32
    /// random characters, the same on every host). Required with `url`: it
    /// seals the signing keys in the database and authenticates the hosts'
    /// notifications to each other; it never crosses the database link.
    pub secret_file: Option<PathBuf>,
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
            secret_file: None,
            max_connections: 16,
            host_id: None,
        }
    }
}

impl StoreSettings {
    /// Adds what is wrong with `[store]` to `problems`.
    pub(crate) fn check(&self, problems: &mut Vec<String>) {
        match &self.url {
            Some(url) => {
                check_postgres_url("store.url", url, problems);
                if self.secret_file.is_none() {
                    problems.push(
                        "store.secret_file: required with `store.url`: a file holding one line \
                         of at least 32 random characters, the same on every host (make one \
                         with `openssl rand -base64 48`); it seals the signing keys in the \
                         database"
                            .into(),
                    );
                }
            }
            None if self.password_file.is_some() => problems.push(
                "store.password_file: only with `store.url` (the embedded SQLite store has no password)"
                    .into(),
            ),
            None if self.secret_file.is_some() => problems.push(
                "store.secret_file: only with `store.url` (the embedded SQLite store keeps its \
                 key in the data directory)"
                    .into(),
            ),
            None => {}
        }
        for (key, path) in [
            ("store.password_file", &self.password_file),
            ("store.secret_file", &self.secret_file),
        ] {
            if let Some(p) = path
                && !p.is_absolute()
            {
                problems.push(format!("{key}: `{}` must be an absolute path", p.display()));
            }
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

/// The `sslmode`s that encrypt the link.
const TLS_MODES: &[&str] = &["require", "verify-ca", "verify-full"];

/// Whether `host` (of a PostgreSQL URL) is this machine: loopback, or a Unix
/// socket directory (none, or a path).
fn is_local_host(u: &url::Url) -> bool {
    let socket_dir = u
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    match u.host() {
        None => true,
        Some(_) if socket_dir => true,
        // `postgres:` is not a special scheme to the URL parser: its hosts,
        // IP addresses included, come as opaque names.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.is_empty()
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
    }
}

/// Checks a PostgreSQL URL given at config key `key`: the scheme, a database
/// name, no password in it (passwords go in a file), and TLS to any database
/// that is not on this machine (`sslmode=require`, `verify-ca` or
/// `verify-full`; PostgreSQL's own default, `prefer`, falls back to plaintext
/// without a word). A malformed URL is never echoed: it may still hold a
/// password.
pub(crate) fn check_postgres_url(key: &str, url: &str, problems: &mut Vec<String>) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            let mode = u
                .query_pairs()
                .find(|(k, _)| k == "sslmode")
                .map(|(_, v)| v.into_owned());
            if !is_local_host(&u) && !mode.as_deref().is_some_and(|m| TLS_MODES.contains(&m)) {
                problems.push(format!(
                    "{key}: the database on `{}` is reached over the network, which needs TLS: \
                     add `?sslmode=verify-full&sslrootcert=/path/to/ca.pem` (or `sslmode=require` \
                     to encrypt without checking the server); `sslmode={}` would send queries, \
                     results and session state in plaintext",
                    u.host_str().unwrap_or_default(),
                    mode.as_deref().unwrap_or("prefer")
                ));
            }
            // libpq and sqlx also read a password from the query string.
            if u.password().is_some()
                || u.query_pairs()
                    .any(|(k, _)| k.eq_ignore_ascii_case("password"))
            {
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
            secret_file: None,
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
        assert!(
            p.contains("store.secret_file: required with `store.url`"),
            "{p}"
        );
        assert!(
            p.contains("the database on `db` is reached over the network, which needs TLS"),
            "{p}"
        );
        let s = StoreSettings {
            url: Some("mysql://db/x".into()),
            ..StoreSettings::default()
        };
        assert!(problems(&s)[0].contains("not a `postgres://"));
        let s = StoreSettings {
            url: Some("postgres://db".into()),
            ..StoreSettings::default()
        };
        assert!(problems(&s).join("\n").contains("name the database"));
        let s = StoreSettings {
            password_file: Some("/x".into()),
            ..StoreSettings::default()
        };
        assert!(problems(&s)[0].contains("only with `store.url`"));
    }

    #[test]
    fn a_database_elsewhere_needs_tls() {
        let with = |url: &str| StoreSettings {
            url: Some(url.into()),
            secret_file: Some("/etc/stockade/store-secret".into()),
            ..StoreSettings::default()
        };
        for ok in [
            "postgres://u@127.0.0.1:5432/x",
            "postgres://u@localhost/x",
            "postgres://u@[::1]/x",
            "postgres:///x?host=/run/postgresql",
            "postgres://u@db.internal/x?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "postgres://u@10.0.0.5/x?sslmode=require",
            "postgres://u@10.0.0.5/x?sslmode=verify-ca",
        ] {
            assert!(
                problems(&with(ok)).is_empty(),
                "{ok}: {:?}",
                problems(&with(ok))
            );
        }
        for bad in [
            "postgres://u@db.internal/x",
            "postgres://u@db.internal/x?sslmode=prefer",
            "postgres://u@10.0.0.5/x?sslmode=disable",
            "postgres://u@10.0.0.5/x?sslmode=allow",
        ] {
            let p = problems(&with(bad)).join("\n");
            assert!(
                p.contains("needs TLS") && p.contains("sslmode=verify-full"),
                "{bad}: {p}"
            );
        }
    }
}
