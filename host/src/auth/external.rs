//! External identity provider mode: `/mcp` accepts JWT access tokens signed by
//! the provider's keys (fetched from `auth.jwks_url`), with `iss` = `auth.issuer`
//! and `aud` = `auth.audience` (default: the resource URL).
//!
//! # Tokens
//!
//! - Only asymmetric algorithms are accepted (RS*, PS*, ES256/384, EdDSA): `none`
//!   and HMAC are refused, and symmetric (`oct`) keys in the key set are ignored.
//!   A key is used only for the algorithms it can serve: RSA keys for RS*/PS*,
//!   P-256 for ES256, P-384 for ES384, Ed25519 for EdDSA; when its JWK names an
//!   `alg`, for that one alone. Keys published for another use (`use` other than
//!   `sig`, `key_ops` without `verify`) and keys that do not parse are skipped one
//!   by one: one odd key never makes the whole set unusable.
//! - `typ`: when the header has one it must be `JWT` or `at+jwt` (RFC 9068),
//!   compared case-insensitively and with or without the `application/` prefix.
//!   Anything else (`dpop+jwt` proofs, `logout+jwt`, ID tokens typed otherwise)
//!   is refused as an invalid token. A token without `typ` is accepted: many
//!   providers omit it on access tokens; such a token still has to carry our
//!   `aud` (an ID token's audience is the client, not this resource).
//!
//! # The key set (JWKS)
//!
//! - It is fetched in the background at start, then kept. A request whose token
//!   names a key of the cached set never waits for the network.
//! - Once the set is [`REFRESH_AFTER`] old, the first request to notice starts a
//!   refresh in the background and is itself served from the cache.
//! - While the provider cannot be reached the cached set stays in use, for up to
//!   [`MAX_STALE`] after the last successful fetch. Past that every token is
//!   refused (`key set unavailable`) until a fetch succeeds: fail closed.
//! - A token naming a `kid` the set lacks (or a set that is missing or too old)
//!   asks for a fetch. At most one fetch runs at a time, and a new one starts at
//!   most [`MIN_REFETCH`] after the previous attempt (key ids are chosen by
//!   whoever sends the token, so the limit is one for all of them). Up to
//!   [`MAX_WAITERS`] requests wait for the fetch in flight, each at most
//!   [`MAX_WAIT`]; any other is refused at once. Nothing queues.
//! - A fetch gives up after [`FETCH_TIMEOUT`]. Its body is read chunk by chunk and
//!   dropped as soon as it passes [`MAX_JWKS_BYTES`] (a larger `Content-Length`
//!   is refused before reading any of it). It follows at most [`MAX_REDIRECTS`]
//!   redirects, each to `https` (or `http` on a loopback host, the rule for
//!   `auth.jwks_url`) and never from `https` down to `http`
//!   ([`check_redirect`]).
//! - A successful fetch is the provider's word: it replaces the cached set, even
//!   when it holds no usable key. A failed one leaves the cached set in use.
//! - Every fetch is traced: URL, outcome, key count or error, duration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use super::keys::{TokenRejection, check_header, decode_with};
use super::{AuthSetupError, Principal};
use crate::config::{AuthSettings, is_https_or_loopback};

const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Age after which the key set is refreshed in the background.
pub const REFRESH_AFTER: Duration = Duration::from_secs(600);
/// How long after the last successful fetch the key set stays usable while the
/// provider cannot be reached.
pub const MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// The least time between two fetch attempts.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// A fetch (connect, redirects, headers and body) gives up after this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a request waits for the fetch in flight.
pub const MAX_WAIT: Duration = FETCH_TIMEOUT;
/// How many requests may wait for the fetch in flight; more are refused at once.
pub const MAX_WAITERS: usize = 256;
/// The largest key set read, bytes.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// The most redirects a fetch follows.
pub const MAX_REDIRECTS: usize = 3;

/// Why a fetch of the key set failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The fetch took longer than its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting, a refused redirect, or reading failed (with the reasons).
    #[error("{}", error_chain(.0))]
    Request(reqwest::Error),
    /// The provider answered with another status than 2xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The response declares a body larger than the limit: not read at all.
    #[error("key set larger than {} KiB (Content-Length {declared}); not read", .limit / 1024)]
    Declared {
        /// The limit, bytes.
        limit: usize,
        /// The declared length.
        declared: u64,
    },
    /// The body grew past the limit: reading stopped there.
    #[error("key set larger than {} KiB; stopped reading after {read} bytes", .limit / 1024)]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
        /// Bytes read (at most the limit plus one chunk).
        read: usize,
    },
    /// The body is not a JWK set (`{"keys": [...]}`).
    #[error("not a JWK set: {0}")]
    NotJwks(#[from] serde_json::Error),
}

impl FetchError {
    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout(timeout)
        } else {
            FetchError::Request(e)
        }
    }
}

/// Why a redirect of the key-set fetch is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectRefusal {
    /// More than [`MAX_REDIRECTS`] in a row.
    #[error("more than {0} redirects")]
    TooMany(usize),
    /// From `https` down to `http`.
    #[error("redirect from https down to {to} refused")]
    Downgrade {
        /// The redirect's target.
        to: String,
    },
    /// To something other than `https` or `http` on a loopback host.
    #[error("redirect to {to} refused: only https (or http on a loopback host)")]
    Insecure {
        /// The redirect's target.
        to: String,
    },
}

/// Whether the key-set fetch may follow a redirect to `next`, `previous` being
/// the URLs fetched so far (the configured one first): at most
/// [`MAX_REDIRECTS`], each to `https` or to `http` on a loopback host, and never
/// to `http` once any URL of the chain was `https`.
pub fn check_redirect(previous: &[url::Url], next: &url::Url) -> Result<(), RedirectRefusal> {
    if previous.len() > MAX_REDIRECTS {
        return Err(RedirectRefusal::TooMany(MAX_REDIRECTS));
    }
    if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return Err(RedirectRefusal::Downgrade {
            to: next.to_string(),
        });
    }
    if !is_https_or_loopback(next) {
        return Err(RedirectRefusal::Insecure {
            to: next.to_string(),
        });
    }
    Ok(())
}

/// Whether a token's `typ` header is acceptable: absent, or `JWT` / `at+jwt`
/// (case-insensitive, `application/` prefix optional).
fn type_accepted(typ: Option<&str>) -> bool {
    let Some(t) = typ else {
        return true;
    };
    let t = match t.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
        _ => t,
    };
    t.eq_ignore_ascii_case("jwt") || t.eq_ignore_ascii_case("at+jwt")
}

/// Timings of the key cache (constants in production, short in tests).
#[derive(Debug, Clone, Copy)]
struct Timing {
    refresh_after: Duration,
    max_stale: Duration,
    min_refetch: Duration,
    fetch_timeout: Duration,
    max_wait: Duration,
}

const TIMING: Timing = Timing {
    refresh_after: REFRESH_AFTER,
    max_stale: MAX_STALE,
    min_refetch: MIN_REFETCH,
    fetch_timeout: FETCH_TIMEOUT,
    max_wait: MAX_WAIT,
};

/// One verification key of the provider.
struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The keys of one successful fetch.
struct KeySet {
    keys: Vec<Key>,
    fetched: Instant,
}

/// What the set holds for a token.
enum Lookup<'a> {
    Keys(Vec<&'a DecodingKey>),
    /// The `kid` is there, but not for this algorithm.
    WrongAlgorithm,
    Missing,
}

impl KeySet {
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let named: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .collect();
        let usable: Vec<&DecodingKey> = named
            .iter()
            .filter(|k| k.algorithms.contains(&alg))
            .map(|k| &k.key)
            .collect();
        match (usable.is_empty(), named.is_empty() || kid.is_none()) {
            (false, _) => Lookup::Keys(usable),
            (true, true) => Lookup::Missing,
            (true, false) => Lookup::WrongAlgorithm,
        }
    }
}

#[derive(Default)]
struct FetchState {
    running: bool,
    last_attempt: Option<Instant>,
}

enum Start {
    /// A fetch is in flight (just started or already running).
    Running,
    /// The last attempt is too recent.
    RateLimited,
}

/// The key cache and its fetcher (shared with the background fetch task).
struct Keys {
    jwks_url: String,
    http: reqwest::Client,
    timing: Timing,
    current: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
    /// Bumped when a fetch ends (success or failure).
    done: watch::Sender<u64>,
    waiters: Semaphore,
    expiry_reported: AtomicBool,
}

/// Validates an external provider's tokens.
pub struct ExternalIdp {
    issuer: String,
    audience: String,
    keys: Arc<Keys>,
}

#[derive(Deserialize)]
struct ExternalClaims {
    sub: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Value>,
}

impl ExternalIdp {
    /// From the `[auth]` settings (validated: issuer and jwks_url are set).
    /// Starts fetching the key set in the background when called inside a
    /// tokio runtime.
    pub fn new(settings: &AuthSettings, resource: &str) -> Result<ExternalIdp, AuthSetupError> {
        let missing = |k: &str| {
            AuthSetupError::Other(format!("auth.{k} is required with mode = \"external\""))
        };
        let issuer = settings.issuer.clone().ok_or_else(|| missing("issuer"))?;
        let jwks_url = settings
            .jwks_url
            .clone()
            .ok_or_else(|| missing("jwks_url"))?;
        let audience = settings
            .audience
            .clone()
            .unwrap_or_else(|| resource.to_owned());
        Self::with_timing(issuer, audience, jwks_url, TIMING)
    }

    fn with_timing(
        issuer: String,
        audience: String,
        jwks_url: String,
        timing: Timing,
    ) -> Result<ExternalIdp, AuthSetupError> {
        super::keys::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timing.fetch_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timing.fetch_timeout))
            .redirect(reqwest::redirect::Policy::custom(
                |attempt| match check_redirect(attempt.previous(), attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                },
            ))
            .build()
            .map_err(|e| AuthSetupError::Other(format!("http client: {e}")))?;
        let keys = Arc::new(Keys {
            jwks_url,
            http,
            timing,
            current: ArcSwapOption::empty(),
            state: Mutex::new(FetchState::default()),
            done: watch::Sender::new(0),
            waiters: Semaphore::new(MAX_WAITERS),
            expiry_reported: AtomicBool::new(false),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            keys.start_fetch();
        }
        Ok(ExternalIdp {
            issuer,
            audience,
            keys,
        })
    }

    /// The provider's issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Validates `token` and returns its caller. Waits for the network only
    /// when the cached key set cannot serve the token (see the module doc).
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenRejection> {
        let header = check_header(token, ACCEPTED)?;
        if !type_accepted(header.typ.as_deref()) {
            tracing::debug!(typ = ?header.typ, "external token refused: type not accepted");
            return Err(TokenRejection::Claims);
        }
        let kid = header.kid.as_deref();
        let cached = self.keys.usable(true);
        if let Some(set) = &cached {
            match set.lookup(kid, header.alg) {
                Lookup::Keys(keys) => return self.verify(token, header.alg, keys),
                Lookup::WrongAlgorithm => return Err(TokenRejection::Algorithm),
                Lookup::Missing => {}
            }
        }
        // An unknown key, or no usable set: one fetch for everyone, waited
        // for briefly.
        match self.keys.fetch_and_wait().await {
            None => Err(TokenRejection::KeysUnavailable),
            Some(set) => match set.lookup(kid, header.alg) {
                Lookup::Keys(keys) => self.verify(token, header.alg, keys),
                Lookup::WrongAlgorithm => Err(TokenRejection::Algorithm),
                Lookup::Missing => Err(TokenRejection::UnknownKey),
            },
        }
    }

    fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        keys: Vec<&DecodingKey>,
    ) -> Result<Principal, TokenRejection> {
        let mut last = TokenRejection::Signature;
        for key in keys {
            match decode_with::<ExternalClaims>(token, key, alg, &self.issuer, &self.audience, true)
            {
                Ok(claims) => return Ok(principal(claims, &self.audience)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Keys {
    fn state(&self) -> MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached set if it may still be used; with `refresh`, starts a
    /// background refresh when it is due.
    fn usable(self: &Arc<Self>, refresh: bool) -> Option<Arc<KeySet>> {
        let set = self.current.load_full()?;
        let age = set.fetched.elapsed();
        if refresh && age > self.timing.refresh_after {
            self.start_fetch();
        }
        if age > self.timing.max_stale {
            if !self.expiry_reported.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    url = %self.jwks_url,
                    age_secs = age.as_secs(),
                    "the identity provider's key set could not be refreshed for {:?}: \
                     refusing every token until it can be fetched",
                    self.timing.max_stale
                );
            }
            return None;
        }
        Some(set)
    }

    /// Starts a fetch unless one is running or the last attempt is too recent.
    fn start_fetch(self: &Arc<Self>) -> Start {
        let mut state = self.state();
        if state.running {
            return Start::Running;
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.timing.min_refetch)
        {
            return Start::RateLimited;
        }
        state.running = true;
        state.last_attempt = Some(Instant::now());
        drop(state);
        let keys = self.clone();
        tokio::spawn(async move { keys.run_fetch().await });
        Start::Running
    }

    /// Asks for a fetch and waits (bounded) for the one in flight; returns the
    /// usable set afterwards.
    async fn fetch_and_wait(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let mut done = self.done.subscribe();
        match self.start_fetch() {
            Start::RateLimited => {
                tracing::debug!("key set fetch not started: the last attempt is too recent")
            }
            Start::Running => match self.waiters.try_acquire() {
                Ok(_permit) => {
                    let _ = tokio::time::timeout(self.timing.max_wait, done.changed()).await;
                }
                Err(_) => tracing::debug!("too many requests wait for the key set: refused"),
            },
        }
        self.usable(false)
    }

    async fn run_fetch(self: Arc<Self>) {
        /// Ends the fetch even if this task is cancelled or panics.
        struct Ended<'a>(&'a Keys);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.state().running = false;
                self.0.done.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        let _ended = Ended(&self);
        let started = Instant::now();
        let timeout = self.timing.fetch_timeout;
        let outcome =
            match tokio::time::timeout(timeout, fetch_jwks(&self.http, &self.jwks_url, timeout))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout(timeout)),
            };
        let duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok((keys, skipped)) => {
                let count = keys.len();
                self.current.store(Some(Arc::new(KeySet {
                    keys,
                    fetched: Instant::now(),
                })));
                self.expiry_reported.store(false, Ordering::Relaxed);
                if count == 0 {
                    tracing::warn!(url = %self.jwks_url, skipped, duration_ms,
                        "the identity provider's JWKS has no usable signing key");
                } else {
                    tracing::info!(url = %self.jwks_url, keys = count, skipped, duration_ms,
                        "fetched the identity provider's JWKS");
                }
            }
            Err(e) => {
                let cached_age_secs = self
                    .current
                    .load()
                    .as_ref()
                    .map(|s| s.fetched.elapsed().as_secs());
                tracing::warn!(url = %self.jwks_url, duration_ms, ?cached_age_secs,
                    "cannot fetch the identity provider's JWKS: {e}");
            }
        }
    }
}

/// Fetches and parses the key set at `url`: status, size (declared, then while
/// reading), JSON. Returns the usable keys and how many were skipped.
async fn fetch_jwks(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(Vec<Key>, usize), FetchError> {
    let body = fetch_body(http, url, timeout, MAX_JWKS_BYTES).await?;
    parse_jwks(&body)
}

async fn fetch_body(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    let err = |e| FetchError::from_reqwest(e, timeout);
    let mut resp = http
        .get(url)
        .header("accept", "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(err)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    if let Some(declared) = resp.content_length()
        && declared > limit as u64
    {
        return Err(FetchError::Declared { limit, declared });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(err)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge {
                limit,
                read: body.len() + chunk.len(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<Value>,
}

/// The usable keys of a JWK set, and how many were skipped.
fn parse_jwks(body: &[u8]) -> Result<(Vec<Key>, usize), FetchError> {
    let set: RawSet = serde_json::from_slice(body)?;
    let total = set.keys.len();
    let keys: Vec<Key> = set
        .keys
        .into_iter()
        .filter_map(|v| {
            let jwk: Jwk = serde_json::from_value(v).ok()?;
            let algorithms = algorithms_of(&jwk);
            if algorithms.is_empty() {
                return None;
            }
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(Key {
                kid: jwk.common.key_id,
                algorithms,
                key,
            })
        })
        .collect();
    let skipped = total - keys.len();
    Ok((keys, skipped))
}

/// The accepted algorithms a published key may verify (none: skip it).
fn algorithms_of(jwk: &Jwk) -> Vec<Algorithm> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Vec::new();
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Vec::new();
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => &[],
        },
        _ => &[],
    };
    match &jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(named) => match algorithm_named(named) {
            Some(alg) if by_type.contains(&alg) => vec![alg],
            _ => Vec::new(),
        },
    }
}

fn algorithm_named(k: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match k {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// An error and its sources, `: `-separated (reqwest hides the reason of a
/// refused redirect or a connection failure in its sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

fn principal(c: ExternalClaims, audience: &str) -> Principal {
    let scopes = match (c.scope, c.scp) {
        (Some(s), _) => super::rules::parse_scope(&s),
        (None, Some(Value::Array(a))) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        (None, Some(Value::String(s))) => super::rules::parse_scope(&s),
        _ => Vec::new(),
    };
    Principal {
        subject: c.sub,
        client_id: c.client_id.or(c.azp),
        scopes,
        audience: Some(audience.to_owned()),
    }
}

#[cfg(test)]
#[path = "external_tests.rs"]
mod tests;
