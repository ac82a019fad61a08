//! Persistent state of the authorization server, behind [`AuthStore`]: registered
//! clients, authorization codes, token families and refresh tokens.
//!
//! Secrets never reach the store in clear: codes, refresh tokens and client
//! secrets are kept as sha256 hashes (hex). Every operation that reads and then
//! changes state runs in one transaction, so two concurrent redemptions of a code
//! or a refresh token cannot both succeed.
//!
//! [`SqliteStore`] is the embedded default (one host). [`PostgresStore`] serves
//! several hosts behind a load balancer: it also implements [`SharedState`], the
//! state that is otherwise kept in each host's memory (rate counters, login
//! throttling, login forms, MCP session owners and handshakes).

mod postgres;
pub mod secret;
mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::postgres::{CHANGES_CHANNEL, PostgresStore};
pub use self::sqlite::SqliteStore;

/// A store failure (I/O, corruption). Answered as a 500 and logged.
#[derive(Debug, thiserror::Error)]
#[error("auth store: {0}")]
pub struct StoreError(pub String);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// A client registered with RFC 7591 dynamic registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The id Stockade gave it.
    pub client_id: String,
    /// Its display name, if it gave one.
    pub client_name: Option<String>,
    /// The exact redirect URIs it may use.
    pub redirect_uris: Vec<String>,
    /// `none`, `client_secret_post` or `client_secret_basic`.
    pub token_endpoint_auth_method: String,
    /// sha256 (hex) of its secret, for confidential clients.
    pub secret_hash: Option<String>,
    /// When it registered (seconds since the epoch).
    pub created_at: i64,
}

/// What an authorization code grants; stored under the code's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrant {
    /// The client the code was issued to.
    pub client_id: String,
    /// The redirect URI used at `/authorize`.
    pub redirect_uri: String,
    /// Whether `/authorize` named it (then `/token` must name it too, RFC 6749
    /// §4.1.3); a client with one registered URI may leave it out.
    pub redirect_uri_given: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The resource (token audience).
    pub resource: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The user who approved.
    pub subject: String,
    /// Expiry (seconds since the epoch).
    pub expires_at: i64,
}

/// The outcome of redeeming a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeem {
    /// First use: the code is now spent and the new family exists.
    Fresh(CodeGrant),
    /// The code was already used; the family it started is now revoked.
    Replayed {
        /// The family the first redemption created.
        family: Option<String>,
        /// The client the code belonged to.
        client_id: String,
    },
    /// The code is past its expiry.
    Expired,
    /// No such code.
    Unknown,
}

/// One authorization: every access and refresh token descending from one code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Its id (random).
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub subject: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The resource (token audience).
    pub resource: String,
    /// When the code was redeemed (seconds since the epoch): the family's
    /// absolute lifetime counts from here.
    pub created_at: i64,
}

/// Which families [`AuthStore::revoke_families`] revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyFilter<'a> {
    /// Every family of this user.
    Subject(&'a str),
    /// Every family of this OAuth client.
    Client(&'a str),
}

/// Decides about a valid refresh token's family before the token is spent:
/// `false` leaves everything unchanged ([`Rotate::Declined`]).
pub type AcceptFamily<'a> = &'a (dyn Fn(&Family) -> bool + Send + Sync);

/// One presentation of a refresh token, for [`AuthStore::rotate_refresh`].
pub struct Rotation<'a> {
    /// sha256 (hex) of the presented token.
    pub old_hash: &'a str,
    /// sha256 (hex) of its successor.
    pub new_hash: &'a str,
    /// The client presenting it.
    pub client_id: &'a str,
    /// Now (seconds since the epoch).
    pub now: i64,
    /// The successor lives this long (seconds)...
    pub ttl: i64,
    /// ...but never past the family's `created_at` plus this (seconds); a family
    /// older than this is [`Rotate::Expired`].
    pub max_lifetime: i64,
    /// Asked last, once the token is known to be valid.
    pub accept: AcceptFamily<'a>,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotate {
    /// Valid: it is now spent and its successor stored.
    Rotated(Family),
    /// Already used: the whole family is now revoked.
    Reused(Family),
    /// Valid token, but its family was revoked earlier.
    Revoked(Family),
    /// Past its expiry.
    Expired(Family),
    /// Presented by another client than the one it was issued to (nothing changed).
    WrongClient(Family),
    /// Valid, but [`Rotation::accept`] said no (nothing changed: the token is
    /// not spent).
    Declined(Family),
    /// No such token.
    Unknown,
}

/// The persistent state of the authorization server.
#[async_trait]
pub trait AuthStore: Send + Sync {
    /// Stores a newly registered client.
    async fn insert_client(&self, client: &Client) -> Result<(), StoreError>;
    /// A registered client by id.
    async fn client(&self, client_id: &str) -> Result<Option<Client>, StoreError>;
    /// Stores a new authorization code under `code_hash`.
    async fn insert_code(&self, code_hash: &str, grant: &CodeGrant) -> Result<(), StoreError>;
    /// Spends a code: on first use creates family `family_id` from it; on replay
    /// revokes the family the first use created.
    async fn redeem_code(
        &self,
        code_hash: &str,
        family_id: &str,
        now: i64,
    ) -> Result<Redeem, StoreError>;
    /// Stores the first refresh token of a family.
    async fn add_refresh(
        &self,
        family_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// Spends refresh token `r.old_hash` presented by `r.client_id` and stores
    /// `r.new_hash` in its place, in one transaction; detects reuse (and then
    /// revokes the family). `r.accept` is asked only about a token that would
    /// otherwise rotate.
    async fn rotate_refresh(&self, r: &Rotation<'_>) -> Result<Rotate, StoreError>;
    /// The family a refresh token (used or not) belongs to.
    async fn family_of_refresh(&self, token_hash: &str) -> Result<Option<Family>, StoreError>;
    /// Revokes a family; returns whether it existed and was active.
    async fn revoke_family(
        &self,
        family_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Revokes every active family matching `by`; returns how many.
    async fn revoke_families(
        &self,
        by: FamilyFilter<'_>,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError>;
    /// Whether a family exists, is not revoked, and belongs to `subject` and
    /// `client_id` (the claims of the token that names it: a token minted for
    /// another user with a family id seen elsewhere matches nothing).
    async fn family_active(
        &self,
        family_id: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError>;
    /// Deletes codes a day past their expiry, refresh tokens a day past theirs,
    /// and families older than a day that have no refresh token left (none of
    /// their access tokens can still be valid), signing keys a day past their
    /// retirement, and expired shared state. Returns the rows deleted.
    async fn purge(&self, now: i64) -> Result<u64, StoreError>;
    /// Every stored token signing key (retired ones until they are purged),
    /// oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Stores `key` (nothing if its `kid` is already there) and, with
    /// `retire_others_at`, schedules every other key's retirement no later than
    /// that, in one transaction.
    async fn add_signing_key(
        &self,
        key: &StoredKey,
        retire_others_at: Option<i64>,
    ) -> Result<(), StoreError>;
    /// The state several hosts share, when this store is shared (`None`: keep
    /// it in this host's memory).
    fn shared(&self) -> Option<&dyn SharedState> {
        None
    }
}

/// Decodes a column type both engines share.
pub(super) trait Col<R: sqlx::Row>:
    for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>
{
}
impl<R: sqlx::Row, T> Col<R> for T where
    T: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>
{
}

/// A `families` row (either engine).
pub(super) fn family_from<R: sqlx::Row>(row: &R) -> Result<Family, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: Col<R>,
    i64: Col<R>,
{
    Ok(Family {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        subject: row.try_get("subject")?,
        scope: row.try_get("scope")?,
        resource: row.try_get("resource")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A `clients` row (either engine).
pub(super) fn client_from<R: sqlx::Row>(row: &R) -> Result<Client, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: Col<R>,
    Option<String>: Col<R>,
    i64: Col<R>,
{
    let uris: String = row.try_get("redirect_uris")?;
    Ok(Client {
        client_id: row.try_get("client_id")?,
        client_name: row.try_get("client_name")?,
        redirect_uris: serde_json::from_str(&uris).map_err(|e| StoreError(e.to_string()))?,
        token_endpoint_auth_method: row.try_get("token_endpoint_auth_method")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A `signing_keys` row (either engine).
pub(super) fn stored_key_from<R: sqlx::Row>(row: &R) -> Result<StoredKey, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: Col<R>,
    Option<i64>: Col<R>,
    i64: Col<R>,
{
    Ok(StoredKey {
        kid: row.try_get("kid")?,
        pem: row.try_get("pem")?,
        created_at: row.try_get("created_at")?,
        retire_at: row.try_get("retire_at")?,
    })
}

/// What presenting a refresh token does, decided from its row and its
/// family's (the same rule for both engines; the engine applies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RotationStep {
    /// Another client's token: nothing changes.
    WrongClient,
    /// Spent before: revoke the family.
    Reuse,
    /// Its family was revoked: nothing changes.
    Revoked,
    /// Past its own or its family's end: nothing changes.
    Expired,
    /// `accept` said no: nothing changes.
    Declined,
    /// Spend it; the successor expires then.
    Rotate {
        /// The successor's expiry.
        expires_at: i64,
    },
}

/// The step for a token of `family` (spent at `used_at`, expiring at
/// `expires_at`; the family revoked or not) presented as `r`.
pub(super) fn rotation_step(
    family: &Family,
    used_at: Option<i64>,
    expires_at: i64,
    revoked: bool,
    r: &Rotation<'_>,
) -> RotationStep {
    let family_ends = family.created_at.saturating_add(r.max_lifetime);
    if family.client_id != r.client_id {
        RotationStep::WrongClient
    } else if used_at.is_some() {
        RotationStep::Reuse
    } else if revoked {
        RotationStep::Revoked
    } else if expires_at <= r.now || family_ends <= r.now {
        RotationStep::Expired
    } else if !(r.accept)(family) {
        RotationStep::Declined
    } else {
        RotationStep::Rotate {
            expires_at: r.now.saturating_add(r.ttl).min(family_ends),
        }
    }
}

/// A token signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its RFC 7638 thumbprint.
    pub kid: String,
    /// The PKCS#8 PEM of the P-256 private key.
    pub pem: String,
    /// When it was made (seconds since the epoch); the newest key not
    /// scheduled for retirement signs.
    pub created_at: i64,
    /// When it stops being published and accepted.
    pub retire_at: Option<i64>,
}

/// Failed logins from one address (the login throttle's record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    /// Failures counted since `first_at`.
    pub count: u32,
    /// When the counted window began (milliseconds; since the epoch in the
    /// shared store).
    pub first_at: i64,
    /// Locked out until then (milliseconds, like `first_at`).
    pub locked_until: Option<i64>,
}

/// Who opened an MCP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The user.
    pub subject: String,
    /// The OAuth client, if the token named one.
    pub client_id: Option<String>,
}

/// What became of a client reply offered to [`SharedState::relay_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Stored and announced to the host that waits for it.
    Relayed,
    /// The host that took it is the one waiting: nothing to relay.
    Local,
    /// No host waits for a reply with that id in that session: not stored.
    NotPending,
}

/// The state hosts sharing one store must agree on, beyond tokens: rate
/// counters, login throttling, login forms, and MCP sessions (owners and the
/// `initialize` parameters another host needs to carry a session on).
#[async_trait]
pub trait SharedState: Send + Sync {
    /// Counts one hit of `key` in the fixed window starting at `window_start`;
    /// returns the window's count including this hit.
    async fn hit(&self, key: &str, window_start: i64) -> Result<u64, StoreError>;
    /// Stores a login form's authorization request (`data`, JSON) under the
    /// hash of its CSRF token for `ttl` seconds; `addr` keeps at most
    /// `per_address` live forms (its oldest go).
    async fn put_form(
        &self,
        csrf_hash: &str,
        addr: &str,
        data: &str,
        now: i64,
        ttl: i64,
        per_address: i64,
    ) -> Result<(), StoreError>;
    /// Takes (deletes) a login form; `None` if unknown or expired.
    async fn take_form(&self, csrf_hash: &str, now: i64) -> Result<Option<String>, StoreError>;
    /// The failed-login record of `addr`.
    async fn login_failures(&self, addr: &str) -> Result<Option<LoginFailures>, StoreError>;
    /// Replaces the failed-login record of `addr` with `update(old)` (`None`
    /// deletes it), serialized against every other host; returns the new one.
    async fn update_login_failures(
        &self,
        addr: &str,
        update: &(dyn Fn(Option<LoginFailures>) -> Option<LoginFailures> + Send + Sync),
    ) -> Result<Option<LoginFailures>, StoreError>;
    /// Records who opened session `id` (on host `host_id`).
    async fn bind_session(
        &self,
        id: &str,
        owner: &SessionOwner,
        host_id: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Who opened session `id`, if any host knows it.
    async fn session_owner(&self, id: &str) -> Result<Option<SessionOwner>, StoreError>;
    /// Forgets session `id`.
    async fn end_session(&self, id: &str) -> Result<(), StoreError>;
    /// Notes that session `id` is in use at `now` (sessions unseen for a day
    /// are purged).
    async fn touch_session(&self, id: &str, now: i64) -> Result<(), StoreError>;
    /// Saves a session's handshake (JSON) so another host can carry it on.
    async fn save_session_state(&self, id: &str, state: &str, now: i64) -> Result<(), StoreError>;
    /// A session's saved handshake.
    async fn load_session_state(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// A counter that changes whenever any host revokes something; `None`
    /// while changes cannot be heard (then nothing may be cached).
    fn change_generation(&self) -> Option<i64>;
    /// Tells every host that `what` changed on host `from` (e.g. `tools`
    /// after a plugin reload).
    async fn publish(&self, from: &str, what: &str) -> Result<(), StoreError>;
    /// What other hosts publish: `(from, what)` pairs, this host's own
    /// included (skip them by `from`).
    fn events(&self) -> tokio::sync::broadcast::Receiver<(String, String)>;
    /// Records that host `host` sent request `request_id` (its JSON text) to
    /// the client of `session` and waits for the reply.
    async fn expect_reply(
        &self,
        session: &str,
        request_id: &str,
        host: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Forgets a request [`SharedState::expect_reply`] recorded (answered or
    /// given up).
    async fn reply_settled(&self, session: &str, request_id: &str) -> Result<(), StoreError>;
    /// Relays a client's reply (JSON-RPC `body`) to request `request_id` of
    /// `session`, taken by host `from`, to the host that waits for it
    /// (published as `reply <row id>`). Only a reply to a request some other
    /// host is waiting for is stored.
    async fn relay_reply(
        &self,
        from: &str,
        session: &str,
        request_id: &str,
        body: &str,
    ) -> Result<Relay, StoreError>;
    /// Takes (deletes) relayed reply `id` if it is addressed to host `me`:
    /// (session, body). A reply is delivered once.
    async fn take_relayed_reply(
        &self,
        id: i64,
        me: &str,
    ) -> Result<Option<(String, String)>, StoreError>;
    /// Every relayed reply addressed to `me` not yet taken (after missed
    /// notifications): (row id, session, body), oldest first.
    async fn relayed_replies_for(&self, me: &str)
    -> Result<Vec<(i64, String, String)>, StoreError>;
}

#[cfg(test)]
mod tests;
