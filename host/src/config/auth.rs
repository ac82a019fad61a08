//! The `[auth]` table: who may reach `/mcp` and how they log in.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How requests to `/mcp` are authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Stockade is its own OAuth 2.1 authorization server (the default).
    #[default]
    Builtin,
    /// Tokens come from an external identity provider (validated with its JWKS).
    External,
    /// No authentication at all: only allowed when listening on loopback.
    None,
}

/// Settings of the `[auth]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// `builtin` (default), `external` or `none`.
    pub mode: AuthMode,
    /// The URL clients use to reach this host, without `/mcp` (e.g.
    /// `https://mcp.example.com` behind a TLS proxy). The OAuth issuer equals it
    /// exactly and the protected resource is `<public_url>/mcp`. Default:
    /// `http://` + the listen address.
    pub public_url: Option<String>,
    /// A file holding the operator password (first line). `STOCKADE_PASSWORD`
    /// takes precedence. At least 12 characters.
    pub password_file: Option<PathBuf>,
    /// A TOML file of users (`[[user]] name, password_hash (argon2 PHC), scopes`);
    /// see `stockade hash-password`.
    pub users_file: Option<PathBuf>,
    /// Scopes this server knows. The first one is the default scope: it is granted
    /// when a client asks for none and named in 401 challenges.
    pub scopes_supported: Vec<String>,
    /// Lifetime of access tokens (JWTs), in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in days (each rotation starts a new one, up
    /// to `refresh_max_lifetime_days`).
    pub refresh_token_ttl_days: u32,
    /// Absolute lifetime of a login (a token family), in days from the code
    /// exchange: no refresh token outlives it, however often it rotates; then
    /// the user logs in again.
    pub refresh_max_lifetime_days: u32,
    /// Skip the password page for clients redirecting to a loopback address.
    /// Single-user loopback setups only: refused unless listening on loopback
    /// without a users file.
    pub auto_approve: bool,
    /// Browser origins (`scheme://host[:port]`) allowed to call `/mcp`, besides
    /// the public URL's own origin. Requests with any other `Origin` get 403.
    pub allowed_origins: Vec<String>,
    /// Requests to `/mcp` one subject may make per minute (POSTs; 0 = unlimited).
    pub rate_limit_per_minute: u32,
    /// Allow Client ID Metadata Documents on loopback, private or link-local
    /// addresses (off by default: they would let a client probe your network).
    pub allow_cimd_private_networks: bool,
    /// Take the client address from the last `X-Forwarded-For` entry (set this
    /// when a reverse proxy you control adds that header).
    pub trust_forwarded_for: bool,
    /// External mode: the identity provider's issuer (the tokens' `iss`).
    pub issuer: Option<String>,
    /// External mode: the provider's JWKS URL (https, or http on loopback).
    pub jwks_url: Option<String>,
    /// External mode: the `aud` tokens must carry (default: the resource URL,
    /// `<public_url>/mcp`).
    pub audience: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Builtin,
            public_url: None,
            password_file: None,
            users_file: None,
            scopes_supported: vec!["mcp".into()],
            access_token_ttl_secs: 900,
            refresh_token_ttl_days: 30,
            refresh_max_lifetime_days: 30,
            auto_approve: false,
            allowed_origins: Vec::new(),
            rate_limit_per_minute: 600,
            allow_cimd_private_networks: false,
            trust_forwarded_for: false,
            issuer: None,
            jwks_url: None,
            audience: None,
        }
    }
}

/// Whether `s` is a valid OAuth scope token (RFC 6749 §3.3).
pub fn is_valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Whether `url` is `https://…`, or `http://` to a loopback host.
pub fn is_https_or_loopback(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host().is_some_and(|h| is_loopback_host(&h)),
        _ => false,
    }
}

/// Whether `host` is `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

impl AuthSettings {
    /// The public URL: configured (without a trailing slash) or derived from `listen`.
    pub fn public_url(&self, listen: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{listen}"),
        }
    }

    /// Checks every value, appending problems to `problems`.
    pub(crate) fn check(&self, listen: SocketAddr, problems: &mut Vec<String>) {
        let loopback = listen.ip().is_loopback();
        if let Some(u) = &self.public_url {
            match url::Url::parse(u) {
                Ok(url) => {
                    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                        problems.push(format!(
                            "auth.public_url: `{u}` must be an http(s) URL with a host"
                        ));
                    } else if url.query().is_some()
                        || url.fragment().is_some()
                        || !url.username().is_empty()
                    {
                        problems.push(format!(
                            "auth.public_url: `{u}` must not have a query, fragment or user"
                        ));
                    } else if url.path() != "/" {
                        problems.push(format!(
                            "auth.public_url: `{u}` must not have a path: serve Stockade at the root of its host"
                        ));
                    } else if url.scheme() == "http"
                        && !is_https_or_loopback(&url)
                        && self.mode == AuthMode::Builtin
                    {
                        problems.push(format!(
                            "auth.public_url: `{u}` is plain http to a non-loopback host: tokens and passwords \
                             would cross the network in clear; use https (a TLS reverse proxy)"
                        ));
                    }
                }
                Err(e) => problems.push(format!("auth.public_url: `{u}` is not a URL: {e}")),
            }
        } else if listen.ip().is_unspecified() && self.mode != AuthMode::None {
            // `http://0.0.0.0:PORT` would be the issuer and the only allowed Host:
            // no remote client could use it.
            problems.push(format!(
                "listen: {listen} accepts connections from other machines, so set the URL they use: \
                 --public-url https://mcp.example.com (STOCKADE_PUBLIC_URL or auth.public_url), \
                 with TLS in front (see \"Behind a TLS reverse proxy\" in README.md); \
                 or listen on 127.0.0.1 for local use"
            ));
        }
        if self.scopes_supported.is_empty() {
            problems.push(
                "auth.scopes_supported: list at least one scope (the default scope comes first)"
                    .into(),
            );
        }
        for s in &self.scopes_supported {
            if !is_valid_scope(s) {
                problems.push(format!(
                    "auth.scopes_supported: `{s}` is not a valid scope token"
                ));
            }
        }
        if !(30..=86_400).contains(&self.access_token_ttl_secs) {
            problems.push("auth.access_token_ttl_secs: must be between 30 and 86400".into());
        }
        if !(1..=365).contains(&self.refresh_token_ttl_days) {
            problems.push("auth.refresh_token_ttl_days: must be between 1 and 365".into());
        }
        if !(1..=3650).contains(&self.refresh_max_lifetime_days) {
            problems.push("auth.refresh_max_lifetime_days: must be between 1 and 3650".into());
        }
        for o in &self.allowed_origins {
            let ok = url::Url::parse(o)
                .ok()
                .is_some_and(|u| u.host().is_some() && u.path() == "/" && u.query().is_none());
            if !ok {
                problems.push(format!(
                    "auth.allowed_origins: `{o}` is not an origin like https://app.example.com"
                ));
            }
        }
        match self.mode {
            AuthMode::None => {
                if !loopback {
                    problems.push(format!(
                        "auth.mode = \"none\" is only allowed when listening on loopback, not {listen}: \
                         use the built-in OAuth server (mode = \"builtin\") or an external identity provider"
                    ));
                }
            }
            AuthMode::Builtin => {
                if self.auto_approve && (!loopback || self.users_file.is_some()) {
                    problems.push(
                        "auth.auto_approve: only for a single user on loopback (listen on 127.0.0.1 or ::1, \
                         no users_file)"
                            .into(),
                    );
                }
            }
            AuthMode::External => {
                if self.auto_approve {
                    problems.push("auth.auto_approve: only with mode = \"builtin\"".into());
                }
                match &self.issuer {
                    None => problems.push("auth.issuer: required with mode = \"external\"".into()),
                    Some(i) if url::Url::parse(i).is_err() => {
                        problems.push(format!("auth.issuer: `{i}` is not a URL"))
                    }
                    Some(_) => {}
                }
                match self.jwks_url.as_deref().map(url::Url::parse) {
                    None => {
                        problems.push("auth.jwks_url: required with mode = \"external\"".into())
                    }
                    Some(Ok(u)) if is_https_or_loopback(&u) => {}
                    Some(_) => problems.push(
                        "auth.jwks_url: must be an https URL (or http on a loopback host)".into(),
                    ),
                }
            }
        }
    }
}
