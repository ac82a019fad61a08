//! Authentication: the built-in OAuth 2.1 authorization server, the bearer gate in
//! front of `/mcp`, and validation of an external identity provider's tokens.
//!
//! - [`metadata`]: RFC 9728 protected-resource and RFC 8414 server metadata.
//! - [`register`]: RFC 7591 dynamic client registration; [`cimd`]: Client ID
//!   Metadata Documents (a client id that is an https URL).
//! - [`authorize`]: `/authorize` and its login page (PKCE S256, exact redirect
//!   URIs, CSRF, anti-framing, per-address login throttling and page rate
//!   limit); [`pending`]: the login forms waiting, with a share per address.
//! - [`token`]: `/token` (`authorization_code`, `refresh_token`); [`revoke`]:
//!   RFC 7009 `/revoke`.
//! - [`keys`]: an ES256 signing key, access-token JWTs; [`keyring`]: the keys
//!   in force (from the store; rotation, JWKS).
//! - [`bearer`]: the gate: bearer token → [`Principal`], scope challenges, Origin
//!   checks, per-subject rate limits; [`sessions`]: each MCP session bound to the
//!   caller that created it.
//! - [`external`]: an external identity provider's JWTs (JWKS URL).
//! - [`store`]: [`store::AuthStore`] on SQLite (one host) or PostgreSQL
//!   (several hosts); [`shared`]: login forms, login throttling, the subject
//!   limit and session owners, in memory or in the shared store;
//!   [`revoke_tokens`] for `stockade tokens revoke`, [`rotate_keys`] for
//!   `stockade keys rotate`.
//!
//! Expired rows (codes, refresh tokens, dead families) and stale in-memory
//! entries (login forms, throttles, limiters, cached metadata documents) are
//! swept every [`SWEEP_EVERY`] by a task started with the state.
//!
//! Invariants: passwords, tokens, codes and client secrets never reach a log or an
//! audit line (only their purpose, the client and the subject do); secrets are
//! stored as sha256 hashes and compared in constant time; every refusal is
//! audited before its response is sent. This module never imports `runtime`,
//! `plugins` or `mcp`: it learns which scope a tool needs through a
//! [`ScopeResolver`].
//!
//! The MCP layer finds the caller as a [`Principal`] in the request's
//! `http::request::Parts` extensions (rmcp puts the `Parts` into each request
//! context). No `Principal` is inserted when `auth.mode = "none"`.

pub mod authorize;
pub mod bearer;
pub mod cimd;
pub mod envelope;
pub mod external;
pub mod first_run;
pub mod keyring;
pub mod keys;
pub mod metadata;
pub mod pending;
pub mod ratelimit;
pub mod register;
pub mod revoke;
pub mod rules;
pub mod sessions;
pub mod shared;
pub mod store;
pub mod token;
pub mod token_cache;
pub mod users;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{Audit, AuditEvent};
use crate::config::{AuthMode, AuthSettings, StoreSettings};

pub use self::bearer::ScopeResolver;
pub use self::keys::{SigningKey, TokenRejection};
pub use self::users::{Credentials, Secret};

/// The authenticated caller of an `/mcp` request, inserted by the gate into the
/// request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user (the token's `sub`).
    pub subject: String,
    /// The OAuth client the token was issued to, when known.
    pub client_id: Option<String>,
    /// The scopes the token carries.
    pub scopes: Vec<String>,
    /// The token's audience.
    pub audience: Option<String>,
}

impl Principal {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Errors setting up authentication at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// No usable credentials for the built-in server.
    #[error("{0}")]
    Credentials(String),
    /// The signing key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The signing keys could not be set up.
    #[error(transparent)]
    Keys(#[from] keyring::KeyRingError),
    /// Another start-up problem.
    #[error("{0}")]
    Other(String),
}

/// Everything the built-in authorization server needs.
pub struct Builtin {
    /// Persistent state.
    pub store: Arc<dyn store::AuthStore>,
    /// The signing keys in force.
    pub keys: Arc<keyring::KeyRing>,
    /// Who may log in.
    pub credentials: Credentials,
    /// Access-token lifetime, seconds.
    pub access_ttl: u64,
    /// Refresh-token lifetime, seconds.
    pub refresh_ttl: i64,
    /// A token family's absolute lifetime from the code exchange, seconds.
    pub family_max_lifetime: i64,
    /// Skip the login page for loopback redirect URIs.
    pub auto_approve: bool,
    /// Authorizations waiting for the login form, by CSRF token.
    pub pending: Arc<shared::Forms<authorize::Pending>>,
    /// Failed-login throttling per client address.
    pub logins: Arc<shared::Logins>,
    /// Registrations per client address.
    pub registrations: Arc<ratelimit::AddressLimiter>,
    /// `GET /authorize` (login pages, metadata-document fetches) per client address.
    pub authorize_pages: Arc<ratelimit::AddressLimiter>,
    /// Fetches Client ID Metadata Documents.
    pub cimd: Arc<cimd::Fetcher>,
    /// Verified access tokens (`None` if the database could not be watched).
    pub tokens: Option<Arc<token_cache::TokenCache>>,
}

/// Login pages (`GET /authorize`) one client address may open per minute.
pub const AUTHORIZE_PER_MINUTE: u32 = 30;
/// How often expired rows and stale in-memory entries are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);

impl Builtin {
    /// Starts the task that sweeps expired rows and stale entries every
    /// [`SWEEP_EVERY`] (the first sweep runs at once). It holds weak references
    /// and ends with the state. Outside a tokio runtime nothing is started.
    fn spawn_sweeper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::downgrade(&self.store);
        let pending = Arc::downgrade(&self.pending);
        let logins = Arc::downgrade(&self.logins);
        let limiters = [
            Arc::downgrade(&self.registrations),
            Arc::downgrade(&self.authorize_pages),
        ];
        let cimd = Arc::downgrade(&self.cimd);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(store) = store.upgrade() else { return };
                match store.purge(now_secs()).await {
                    Ok(n) => tracing::debug!(rows = n, "auth store: expired rows purged"),
                    Err(e) => tracing::warn!("auth store: purging expired rows failed: {e}"),
                }
                drop(store);
                if let Some(p) = pending.upgrade() {
                    p.sweep();
                }
                if let Some(l) = logins.upgrade() {
                    l.sweep();
                }
                for l in limiters.iter().filter_map(std::sync::Weak::upgrade) {
                    l.sweep();
                }
                if let Some(c) = cimd.upgrade() {
                    c.sweep();
                }
            }
        });
    }
}

/// Purges expired rows of `store` every [`SWEEP_EVERY`] (the first at once),
/// for hosts whose store no built-in server sweeps (an external provider, or
/// none); ends when the runtime does.
fn spawn_purger(store: Arc<dyn store::AuthStore>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match store.purge(now_secs()).await {
                Ok(n) => tracing::debug!(rows = n, "shared store: expired rows purged"),
                Err(e) => tracing::warn!("shared store: purging expired rows failed: {e}"),
            }
        }
    });
}

/// Opens the store a host with these settings uses, for a command run beside
/// it: PostgreSQL when `store.url` is set, else `<data>/stockade.db`, which
/// must exist (a typo in `--data` is not a new empty store).
pub async fn open_store(
    settings: &StoreSettings,
    data_dir: &Path,
) -> Result<Arc<dyn store::AuthStore>, AuthSetupError> {
    if settings.url.is_some() {
        return Ok(Arc::new(store::PostgresStore::connect(settings).await?));
    }
    let path = data_dir.join("stockade.db");
    if !path.is_file() {
        return Err(AuthSetupError::Other(format!(
            "no token store at {}: is this the host's data directory (--data)?",
            path.display()
        )));
    }
    Ok(Arc::new(store::SqliteStore::open(&path).await?))
}

/// Revokes every token family of a user or a client (`stockade tokens
/// revoke`); returns how many. Works while hosts serve from the same store:
/// their gates check the family on every request (a cached check goes stale
/// with the commit), so the revocation takes effect at once.
pub async fn revoke_tokens(
    settings: &StoreSettings,
    data_dir: &Path,
    by: store::FamilyFilter<'_>,
) -> Result<u64, AuthSetupError> {
    let store = open_store(settings, data_dir).await?;
    let reason = match by {
        store::FamilyFilter::Subject(_) => "revoked by `stockade tokens revoke --subject`",
        store::FamilyFilter::Client(_) => "revoked by `stockade tokens revoke --client`",
    };
    Ok(store.revoke_families(by, reason, now_secs()).await?)
}

/// Adds a new token signing key (`stockade keys rotate`): every host signs
/// with it within [`keyring::RELOAD_EVERY`]; the old keys stay published and
/// accepted for `keep_old_for` (the longest access-token lifetime plus
/// leeway), then retire. Returns the new key id. A store with no key yet gets
/// its first one from `<data>/keys/es256.pem` before the rotation.
pub async fn rotate_keys(
    settings: &StoreSettings,
    data_dir: &Path,
    keep_old_for: Duration,
) -> Result<String, AuthSetupError> {
    let store = open_store(settings, data_dir).await?;
    if store.signing_keys().await?.is_empty() {
        keyring::KeyRing::open(store.clone(), &data_dir.join("keys")).await?;
    }
    Ok(keyring::rotate(store.as_ref(), keep_old_for).await?)
}

/// The authentication state shared by the gate and the OAuth endpoints.
pub struct AuthState {
    /// The configured mode.
    pub mode: AuthMode,
    /// The public URL (issuer), without a trailing slash.
    pub public_url: String,
    /// The protected resource: `<public_url>/mcp`.
    pub resource: String,
    /// Scopes advertised; the first is the default.
    pub scopes_supported: Vec<String>,
    /// The audit log.
    pub audit: Audit,
    /// Browser origins allowed on `/mcp` (normalized `scheme://host:port`).
    pub allowed_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Per-subject limit on `/mcp` POSTs.
    pub mcp_limit: Option<shared::SubjectLimit>,
    /// Which caller created each MCP session.
    pub sessions: shared::Sessions,
    /// The state shared with other hosts (PostgreSQL store), if any: MCP
    /// session handshakes live there too.
    pub shared: Option<Arc<dyn store::SharedState>>,
    /// This host's id (`store.host_id`, else the machine's host name).
    pub host_id: String,
    /// The built-in server (mode `builtin`).
    pub builtin: Option<Builtin>,
    /// The external provider (mode `external`).
    pub external: Option<external::ExternalIdp>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("mode", &self.mode)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// The credentials of the built-in server: the operator password
/// (`STOCKADE_PASSWORD`, else `auth.password_file`) and/or the users file.
/// `serve` calls it before it writes anything, so a start without credentials
/// fails with nothing written; [`AuthState::new`] calls it again to use them.
pub fn builtin_credentials(
    settings: &AuthSettings,
    password: Option<Secret>,
    data_dir: &Path,
) -> Result<Credentials, AuthSetupError> {
    let generated = first_run::applies(settings, password.as_ref());
    let password: Option<users::OperatorPassword> = match password {
        Some(p) => Some(p.into()),
        None => match &settings.password_file {
            Some(f) => Some(
                Secret::from_file(f)
                    .map_err(AuthSetupError::Credentials)?
                    .into(),
            ),
            None if generated => first_run::stored_hash(data_dir)
                .map_err(AuthSetupError::Credentials)?
                .map(users::OperatorPassword::Hash),
            None => None,
        },
    };
    Credentials::load(
        password,
        settings.users_file.as_deref(),
        &settings.scopes_supported,
        settings.auto_approve,
    )
    .map_err(AuthSetupError::Credentials)
}
impl AuthState {
    /// Sets up authentication from the `[auth]` settings. `password` is the
    /// operator password from `STOCKADE_PASSWORD`, if set (it wins over
    /// `password_file`).
    pub async fn new(
        settings: &AuthSettings,
        store_settings: &StoreSettings,
        host_id: &str,
        listen: SocketAddr,
        data_dir: &Path,
        password: Option<Secret>,
        audit: Audit,
    ) -> Result<AuthState, AuthSetupError> {
        let public_url = settings.public_url(listen);
        let resource = format!("{public_url}/mcp");
        let mut allowed_origins: Vec<String> = settings
            .allowed_origins
            .iter()
            .filter_map(|o| rules::normalize_origin(o))
            .collect();
        if let Some(o) = rules::normalize_origin(&public_url) {
            allowed_origins.push(o);
        }
        // The PostgreSQL store is opened in every mode (sessions and limits
        // are shared with an external provider too); SQLite only serves the
        // built-in server.
        let postgres = match &store_settings.url {
            Some(_) => Some(store::PostgresStore::connect(store_settings).await?),
            None => None,
        };
        let shared: Option<Arc<dyn store::SharedState>> = postgres
            .clone()
            .map(|p| Arc::new(p) as Arc<dyn store::SharedState>);
        let mcp_limit =
            std::num::NonZeroU32::new(settings.rate_limit_per_minute).map(|n| match &shared {
                Some(store) => shared::SubjectLimit::Shared {
                    store: store.clone(),
                    per_minute: n,
                },
                None => shared::SubjectLimit::Local(ratelimit::SubjectLimiter::new(n)),
            });
        let sessions = match &shared {
            Some(store) => shared::Sessions::shared(store.clone(), host_id.to_owned()),
            None => shared::Sessions::local(),
        };
        let mut state = AuthState {
            mode: settings.mode,
            public_url: public_url.clone(),
            resource,
            scopes_supported: settings.scopes_supported.clone(),
            audit,
            allowed_origins,
            trust_forwarded_for: settings.trust_forwarded_for,
            mcp_limit,
            sessions,
            shared: shared.clone(),
            host_id: host_id.to_owned(),
            builtin: None,
            external: None,
        };
        if settings.mode != AuthMode::Builtin
            && let Some(pg) = &postgres
        {
            // The built-in server's sweeper purges the store; without it the
            // shared state (sessions, rate counters, replies) still expires.
            spawn_purger(Arc::new(pg.clone()));
        }
        match settings.mode {
            AuthMode::None => {}
            AuthMode::External => {
                state.external = Some(external::ExternalIdp::new(settings, &state.resource)?);
            }
            AuthMode::Builtin => {
                let credentials = builtin_credentials(settings, password, data_dir)?;
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    AuthSetupError::Other(format!("cannot create {}: {e}", data_dir.display()))
                })?;
                let (store, tokens): (Arc<dyn store::AuthStore>, _) = match postgres {
                    Some(pg) => {
                        let changes = pg.changes();
                        let cache = token_cache::TokenCache::watching(Box::new(move || {
                            let g = changes.load(std::sync::atomic::Ordering::SeqCst);
                            (g >= 0).then_some(g)
                        }));
                        (Arc::new(pg), Some(cache))
                    }
                    None => {
                        let db = data_dir.join("stockade.db");
                        let store = store::SqliteStore::open(&db).await?;
                        let tokens = token_cache::TokenCache::open(&db)
                            .inspect_err(|e| tracing::warn!("verified tokens are not cached: {e}"))
                            .ok();
                        (Arc::new(store), tokens)
                    }
                };
                let tokens: Option<Arc<token_cache::TokenCache>> = tokens.map(Arc::new);
                let keys =
                    Arc::new(keyring::KeyRing::open(store.clone(), &data_dir.join("keys")).await?);
                if let Some(cache) = &tokens {
                    // A retired key must not live on in verified tokens.
                    let cache = Arc::downgrade(cache);
                    keys.on_key_retired(Box::new(move || {
                        if let Some(c) = cache.upgrade() {
                            c.invalidate();
                        }
                    }));
                }
                keys.spawn_reloader();
                let (pending, logins) = match &shared {
                    Some(s) => (
                        shared::Forms::Shared(s.clone()),
                        shared::Logins::Shared(s.clone()),
                    ),
                    None => (
                        shared::Forms::Local(pending::PendingForms::default()),
                        shared::Logins::Local(ratelimit::LoginThrottle::default()),
                    ),
                };
                let builtin = Builtin {
                    store,
                    keys,
                    credentials,
                    access_ttl: settings.access_token_ttl_secs,
                    refresh_ttl: i64::from(settings.refresh_token_ttl_days) * 86_400,
                    family_max_lifetime: i64::from(settings.refresh_max_lifetime_days) * 86_400,
                    auto_approve: settings.auto_approve,
                    pending: Arc::new(pending),
                    logins: Arc::new(logins),
                    registrations: Arc::new(ratelimit::AddressLimiter::per_minute(30)),
                    authorize_pages: Arc::new(ratelimit::AddressLimiter::per_minute(
                        AUTHORIZE_PER_MINUTE,
                    )),
                    cimd: Arc::new(cimd::Fetcher::new(settings.allow_cimd_private_networks)),
                    tokens,
                };
                builtin.spawn_sweeper();
                state.builtin = Some(builtin);
            }
        }
        Ok(state)
    }

    /// The protected-resource metadata URL named in 401 challenges.
    pub fn resource_metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            self.public_url
        )
    }

    /// The default scope (the first supported one).
    pub fn default_scope(&self) -> &str {
        self.scopes_supported
            .first()
            .map(String::as_str)
            .unwrap_or("mcp")
    }

    /// The issuer whose tokens `/mcp` accepts.
    pub fn issuer(&self) -> &str {
        match &self.external {
            Some(e) => e.issuer(),
            None => &self.public_url,
        }
    }

    /// Reads a form or JSON body of at most `max` bytes for an OAuth endpoint.
    /// Too large: audited with `reason` and answered 413; unreadable: 400.
    pub async fn read_oauth_body(
        &self,
        body: axum::body::Body,
        max: usize,
        reason: &str,
        path: &str,
        ip: &str,
    ) -> Result<axum::body::Bytes, Response> {
        match read_body(body, max).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge) => {
                self.deny(StatusCode::PAYLOAD_TOO_LARGE, reason, path, ip, None)
                    .await;
                Err(oauth_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "request body too large",
                ))
            }
            Err(BodyError::Unreadable) => Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unreadable body",
            )),
        }
    }

    /// Records a refusal in the audit log (awaited: it is written before the
    /// response goes out).
    pub async fn deny(
        &self,
        status: StatusCode,
        reason: impl Into<String>,
        path: &str,
        ip: &str,
        subject: Option<String>,
    ) {
        let reason = reason.into();
        tracing::info!(status = status.as_u16(), %reason, %path, %ip, "request denied");
        self.audit
            .note(AuditEvent::RequestDenied {
                status: status.as_u16(),
                reason,
                path: path.to_owned(),
                ip: ip.to_owned(),
                subject,
            })
            .await;
    }

    /// The client address of a request: the peer, or the last `X-Forwarded-For`
    /// entry when configured to trust it.
    pub fn client_ip(&self, headers: &HeaderMap, extensions: &axum::http::Extensions) -> String {
        if self.trust_forwarded_for
            && let Some(ip) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .next_back()
                .and_then(|v| v.rsplit(',').next())
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
        {
            return ip.to_string();
        }
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The OAuth endpoints for the configured mode (none in `none`; metadata only in
/// `external`).
pub fn routes(state: Arc<AuthState>) -> Router {
    let mut r: Router<Arc<AuthState>> = Router::new();
    if state.mode == AuthMode::None {
        return Router::new();
    }
    r = r
        .route(
            "/.well-known/oauth-protected-resource",
            get(metadata::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(metadata::protected_resource),
        );
    if state.builtin.is_some() {
        r = r
            .route(
                "/.well-known/oauth-authorization-server",
                get(metadata::authorization_server),
            )
            .route(
                "/.well-known/openid-configuration",
                get(metadata::authorization_server),
            )
            .route("/jwks.json", get(metadata::jwks))
            .route("/register", post(register::register))
            .route("/authorize", get(authorize::show).post(authorize::submit))
            .route("/token", post(token::token))
            .route("/revoke", post(revoke::revoke));
    }
    r.with_state(state)
}

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the operating system's random source works");
    b
}

/// A random URL-safe token carrying 256 bits.
pub fn random_token() -> String {
    B64.encode(random_bytes::<32>())
}

/// sha256 of `s`, hex.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JSON OAuth error (`{"error", "error_description"}`) with `no-store`.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    no_store(resp.headers_mut());
    resp
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache`.
pub fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Reads a request body of at most `max` bytes; `Err` is a ready 413 or 400.
pub async fn read_body(body: axum::body::Body, max: usize) -> Result<axum::body::Bytes, BodyError> {
    match axum::body::to_bytes(body, max).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            Err(if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable
            })
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than allowed (413).
    TooLarge,
    /// The connection failed mid-body (400).
    Unreadable,
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated parameter is an
/// error (RFC 6749 §3.1).
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter `{k}` repeated"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
