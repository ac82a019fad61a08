//! [`AuthStore`] and [`SharedState`] on PostgreSQL, for several hosts behind a
//! load balancer (`[store] url = "postgres://..."`).
//!
//! Every host runs the same migrations at start, serialized by an advisory
//! lock. Operations that read and then change state run in one transaction
//! that locks the rows it read (`SELECT ... FOR UPDATE`), so two hosts
//! redeeming one code or rotating one refresh token at the same moment see each
//! other: the second waits for the first to commit, then finds the token spent
//! (and revokes the family, as reuse). Revocations are announced with
//! `NOTIFY stockade_changes` inside their transaction (delivered on commit):
//! every host's verified-token cache listens and goes stale at once.
//!
//! The listening connection is proven alive: every host sends a heartbeat
//! (`NOTIFY stockade_heartbeat`) every [`HEARTBEAT_EVERY`], and a listener
//! that hears nothing at all for [`HEARTBEAT_DEADLINE`] (a connection cut
//! silently by a NAT, a balancer or a partition) is dropped and replaced;
//! until the new one listens nothing is cached, so a revocation is never
//! missed for longer than that.
//!
//! Signing keys are stored sealed with the store secret
//! ([`super::secret::StoreSecret`]) and events between hosts are
//! authenticated with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::secret::StoreSecret;
use super::{
    AuthStore, Client, CodeGrant, Family, FamilyFilter, Redeem, Relay, Rotate, Rotation,
    RotationStep, SharedState, StoreError, StoredKey, client_from, family_from, rotation_step,
    stored_key_from,
};
use crate::config::StoreSettings;

/// The channel revocations are announced on.
pub const CHANGES_CHANNEL: &str = "stockade_changes";
/// The channel hosts tell each other of other changes on (payloads made by
/// [`StoreSecret::sign_event`]).
pub const EVENTS_CHANNEL: &str = "stockade_events";
/// The channel of the listeners' heartbeats.
pub const HEARTBEAT_CHANNEL: &str = "stockade_heartbeat";
/// How often each host sends a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A listener that heard nothing for this long is replaced.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(12);
/// The schema version from which signing keys are stored sealed.
const SEALED_KEYS_FROM: i64 = 4;

/// Schema migrations, applied in order; index + 1 is the version after it.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    client_name TEXT,
    redirect_uris TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    secret_hash TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE families (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX families_subject ON families(subject);
CREATE INDEX families_client ON families(client_id);
CREATE TABLE codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    redirect_uri_given BOOLEAN NOT NULL,
    code_challenge TEXT NOT NULL,
    resource TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    family_id TEXT
);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES families(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    pem TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retire_at BIGINT
);
CREATE TABLE rate_counters (
    key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE TABLE login_failures (
    addr TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    first_at BIGINT NOT NULL,
    locked_until BIGINT
);
CREATE TABLE login_forms (
    csrf_hash TEXT PRIMARY KEY,
    addr TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_forms_addr ON login_forms(addr, created_at);
CREATE TABLE mcp_sessions (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    client_id TEXT,
    state TEXT,
    host_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
"#,
    // The `metrics` figures of every host (written by `metrics::shared`):
    // each host updates only its own rows, reports sum all of them.
    r#"
CREATE TABLE metrics_buckets (
    host TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    kind TEXT NOT NULL,
    plugin TEXT NOT NULL,
    target TEXT NOT NULL,
    subject TEXT NOT NULL,
    calls BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    limit_hits BIGINT NOT NULL,
    denials BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    duration_us_sum BIGINT NOT NULL,
    duration_us_max BIGINT NOT NULL,
    histogram TEXT NOT NULL,
    PRIMARY KEY (host, bucket, kind, plugin, target, subject)
);
CREATE INDEX metrics_buckets_bucket ON metrics_buckets(bucket);
"#,
    // Client replies to server-to-client requests (sampling, elicitation),
    // relayed to the host whose call waits for them.
    r#"
CREATE TABLE mcp_replies (
    id BIGSERIAL PRIMARY KEY,
    session TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
"#,
    // Signing keys are sealed from here on (done in code, `seal_stored_keys`);
    // server-to-client requests waiting for a reply, so only replies to them
    // are relayed, and to the host that waits.
    r#"
CREATE TABLE mcp_pending (
    session TEXT NOT NULL,
    request_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session, request_id)
);
ALTER TABLE mcp_replies ADD COLUMN to_host TEXT NOT NULL DEFAULT '';
"#,
];

/// A lock id for migrations (any constant shared by all hosts).
const MIGRATION_LOCK: i64 = 0x5354_4f43_4b41_4445; // "STOCKADE"

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Bumped on every announced change; negative while this host is not
    /// listening (then nothing may be cached).
    changes: Arc<AtomicI64>,
    /// Events from [`EVENTS_CHANNEL`] (authenticated).
    events: tokio::sync::broadcast::Sender<(String, String)>,
    /// Seals signing keys and authenticates events.
    secret: Arc<StoreSecret>,
}

impl PostgresStore {
    /// Connects (with the password from `settings.password_file`), migrates,
    /// and starts listening for changes.
    pub async fn connect(settings: &StoreSettings) -> Result<PostgresStore, StoreError> {
        let secret = match &settings.secret_file {
            Some(path) => StoreSecret::read(path)?,
            None => {
                return Err(StoreError(
                    "store.secret_file is required with store.url (see README \"Several hosts\")"
                        .into(),
                ));
            }
        };
        let options = crate::pgconn::options(
            settings.url.as_deref().unwrap_or_default(),
            settings.password_file.as_deref(),
            "stockade",
            "store.url",
            "store.password_file",
        )
        .map_err(StoreError)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Duration::from_secs(300))
            .connect_with(options)
            .await
            .map_err(|e| StoreError(format!("cannot connect to the PostgreSQL store: {e}")))?;
        let store = PostgresStore {
            pool,
            changes: Arc::new(AtomicI64::new(-1)),
            events: tokio::sync::broadcast::channel(1024).0,
            secret: Arc::new(secret),
        };
        store.migrate().await?;
        store.spawn_listener();
        store.spawn_heartbeat();
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        // Checked rather than `IF NOT EXISTS`, whose notice every start would log.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('stockade_schema') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            sqlx::raw_sql("CREATE TABLE stockade_schema (version INTEGER NOT NULL)")
                .execute(&mut *tx)
                .await?;
        }
        let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM stockade_schema")
            .fetch_one(&mut *tx)
            .await?;
        let version = i64::from(version.unwrap_or(0));
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError(format!(
                "the PostgreSQL store's schema is version {version}, newer than this Stockade \
                 knows ({known}); upgrade Stockade on this host"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO stockade_schema (version) VALUES ($1)")
                .bind(i as i32 + 1)
                .execute(&mut *tx)
                .await?;
        }
        if version < SEALED_KEYS_FROM {
            self.seal_stored_keys(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Seals the signing keys stored in plaintext before sealing existed
    /// (once, in the migration to [`SEALED_KEYS_FROM`]; a plaintext key found
    /// later is refused, not sealed).
    async fn seal_stored_keys(&self, tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        let rows = sqlx::query("SELECT kid, pem FROM signing_keys")
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            let kid: String = row.try_get("kid")?;
            let pem: String = row.try_get("pem")?;
            if StoreSecret::is_sealed(&pem) {
                continue;
            }
            sqlx::query("UPDATE signing_keys SET pem = $2 WHERE kid = $1")
                .bind(&kid)
                .bind(self.secret.seal(&kid, &pem))
                .execute(&mut *tx)
                .await?;
            tracing::info!(kid, "store: sealed a signing key stored in plaintext");
        }
        Ok(())
    }

    /// Sends a heartbeat on [`HEARTBEAT_CHANNEL`] every [`HEARTBEAT_EVERY`]
    /// (ends with the store), so every listener hears something that often.
    fn spawn_heartbeat(&self) {
        let pool = self.pool.clone();
        let alive = Arc::downgrade(&self.changes);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                tick.tick().await;
                if alive.strong_count() == 0 || pool.is_closed() {
                    return;
                }
                let sent = tokio::time::timeout(
                    HEARTBEAT_EVERY,
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(HEARTBEAT_CHANNEL)
                        .execute(&pool),
                )
                .await;
                if !matches!(sent, Ok(Ok(_))) {
                    tracing::debug!("store: a heartbeat was not sent");
                }
            }
        });
    }

    /// Listens on [`CHANGES_CHANNEL`], bumping `changes` for every
    /// notification; while the connection is down `changes` is negative, and
    /// it reconnects every second.
    fn spawn_listener(&self) {
        let pool = self.pool.clone();
        let changes = Arc::downgrade(&self.changes);
        let events = self.events.clone();
        let secret = self.secret.clone();
        tokio::spawn(async move {
            loop {
                let Some(c) = changes.upgrade() else { return };
                c.store(-1, Ordering::SeqCst);
                drop(c);
                let connected =
                    tokio::time::timeout(HEARTBEAT_DEADLINE, PgListener::connect_with(&pool)).await;
                match connected {
                    Ok(Ok(mut listener)) => {
                        let listening = tokio::time::timeout(
                            HEARTBEAT_DEADLINE,
                            listener.listen_all([
                                CHANGES_CHANNEL,
                                EVENTS_CHANNEL,
                                HEARTBEAT_CHANNEL,
                            ]),
                        )
                        .await;
                        if !matches!(listening, Ok(Ok(()))) {
                            tracing::warn!("store: cannot listen for changes; retrying");
                        } else {
                            // Listening from here on: a fresh generation.
                            let Some(c) = changes.upgrade() else { return };
                            c.store(fresh_generation(), Ordering::SeqCst);
                            drop(c);
                            // Until the connection is lost or falls silent
                            // (notifications may have been missed then: start
                            // over). The listener is dropped either way, so an
                            // interrupted receive does no harm.
                            loop {
                                let n = match tokio::time::timeout(
                                    HEARTBEAT_DEADLINE,
                                    listener.try_recv(),
                                )
                                .await
                                {
                                    Ok(Ok(Some(n))) => n,
                                    Ok(_) => {
                                        tracing::warn!(
                                            "store: lost the change notifications; reconnecting"
                                        );
                                        break;
                                    }
                                    Err(_) => {
                                        tracing::warn!(
                                            "store: the change listener heard nothing for {} s \
                                             (not even a heartbeat): its connection is presumed \
                                             dead; nothing is cached until a new one listens",
                                            HEARTBEAT_DEADLINE.as_secs()
                                        );
                                        break;
                                    }
                                };
                                match n.channel() {
                                    HEARTBEAT_CHANNEL => {}
                                    EVENTS_CHANNEL => {
                                        match secret
                                            .verify_event(n.payload(), crate::auth::now_secs())
                                        {
                                            Some(event) => {
                                                let _ = events.send(event);
                                            }
                                            None => {
                                                crate::metrics::prom::global()
                                                    .shared_refusal("unauthenticated_event");
                                                tracing::warn!(
                                                    "store: ignored an unauthenticated or stale \
                                                     event on {EVENTS_CHANNEL} (a database role \
                                                     other than the hosts' may be notifying; \
                                                     see README \"Security for several hosts\")"
                                                );
                                            }
                                        }
                                    }
                                    _ => {
                                        let Some(c) = changes.upgrade() else { return };
                                        c.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("store: cannot listen for changes: {e}"),
                    Err(_) => {
                        tracing::warn!("store: cannot listen for changes: connecting timed out")
                    }
                }
                if changes.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// The change counter: cached verifications are valid while it is
    /// unchanged; `None` while this host is not listening.
    pub fn change_generation(&self) -> Option<i64> {
        let g = self.changes.load(Ordering::SeqCst);
        (g >= 0).then_some(g)
    }

    /// A shared handle to the change counter (for the token cache).
    pub fn changes(&self) -> Arc<AtomicI64> {
        self.changes.clone()
    }
}

/// A generation that no earlier connection used (so entries cached before a
/// reconnection never match again).
fn fresh_generation() -> i64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    micros << 12
}

/// A `login_failures` row.
fn failures_from(r: &sqlx::postgres::PgRow) -> Result<LoginFailures, sqlx::Error> {
    Ok(LoginFailures {
        count: r.try_get::<i32, _>("count")?.max(0) as u32,
        first_at: r.try_get("first_at")?,
        locked_until: r.try_get("locked_until")?,
    })
}

async fn notify(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANGES_CHANNEL)
        .execute(tx)
        .await?;
    Ok(())
}

#[async_trait]
impl AuthStore for PostgresStore {
    async fn insert_client(&self, c: &Client) -> Result<(), StoreError> {
        let uris =
            serde_json::to_string(&c.redirect_uris).map_err(|e| StoreError(e.to_string()))?;
        sqlx::query(
            "INSERT INTO clients (client_id, client_name, redirect_uris, token_endpoint_auth_method, \
             secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.client_id)
        .bind(&c.client_name)
        .bind(uris)
        .bind(&c.token_endpoint_auth_method)
        .bind(&c.secret_hash)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        let row = sqlx::query("SELECT * FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(client_from).transpose()
    }

    async fn insert_code(&self, code_hash: &str, g: &CodeGrant) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO codes (code_hash, client_id, redirect_uri, redirect_uri_given, code_challenge, \
             resource, scope, subject, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(code_hash)
        .bind(&g.client_id)
        .bind(&g.redirect_uri)
        .bind(g.redirect_uri_given)
        .bind(&g.code_challenge)
        .bind(&g.resource)
        .bind(&g.scope)
        .bind(&g.subject)
        .bind(g.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        family_id: &str,
        now: i64,
    ) -> Result<Redeem, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM codes WHERE code_hash = $1 FOR UPDATE")
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Redeem::Unknown);
        };
        let grant = CodeGrant {
            client_id: row.try_get("client_id")?,
            redirect_uri: row.try_get("redirect_uri")?,
            redirect_uri_given: row.try_get("redirect_uri_given")?,
            code_challenge: row.try_get("code_challenge")?,
            resource: row.try_get("resource")?,
            scope: row.try_get("scope")?,
            subject: row.try_get("subject")?,
            expires_at: row.try_get("expires_at")?,
        };
        let used_at: Option<i64> = row.try_get("used_at")?;
        if used_at.is_some() {
            let family: Option<String> = row.try_get("family_id")?;
            if let Some(f) = &family {
                sqlx::query(
                    "UPDATE families SET revoked_at = $1, revoked_reason = 'authorization code replayed' \
                     WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(f)
                .execute(&mut *tx)
                .await?;
                notify(&mut tx).await?;
            }
            tx.commit().await?;
            return Ok(Redeem::Replayed {
                family,
                client_id: grant.client_id,
            });
        }
        if grant.expires_at <= now {
            sqlx::query("UPDATE codes SET used_at = $1 WHERE code_hash = $2")
                .bind(now)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Redeem::Expired);
        }
        sqlx::query("UPDATE codes SET used_at = $1, family_id = $2 WHERE code_hash = $3")
            .bind(now)
            .bind(family_id)
            .bind(code_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO families (id, client_id, subject, scope, resource, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(family_id)
        .bind(&grant.client_id)
        .bind(&grant.subject)
        .bind(&grant.scope)
        .bind(&grant.resource)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Redeem::Fresh(grant))
    }

    async fn add_refresh(
        &self,
        family_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(family_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rotate_refresh(&self, r: &Rotation<'_>) -> Result<Rotate, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Both rows locked: a concurrent rotation of the same token (from any
        // host) waits here and then finds it spent.
        let Some(row) = sqlx::query(
            "SELECT f.*, r.used_at AS r_used_at, r.expires_at AS r_expires_at FROM refresh_tokens r \
             JOIN families f ON f.id = r.family_id WHERE r.token_hash = $1 FOR UPDATE",
        )
        .bind(r.old_hash)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Rotate::Unknown);
        };
        let family = family_from(&row)?;
        let used_at: Option<i64> = row.try_get("r_used_at")?;
        let expires_at: i64 = row.try_get("r_expires_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let expires_at = match rotation_step(&family, used_at, expires_at, revoked_at.is_some(), r)
        {
            RotationStep::WrongClient => return Ok(Rotate::WrongClient(family)),
            RotationStep::Revoked => return Ok(Rotate::Revoked(family)),
            RotationStep::Expired => return Ok(Rotate::Expired(family)),
            RotationStep::Declined => return Ok(Rotate::Declined(family)),
            RotationStep::Reuse => {
                sqlx::query(
                    "UPDATE families SET revoked_at = $1, revoked_reason = 'refresh token reused' \
                     WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(r.now)
                .bind(&family.id)
                .execute(&mut *tx)
                .await?;
                notify(&mut tx).await?;
                tx.commit().await?;
                return Ok(Rotate::Reused(family));
            }
            RotationStep::Rotate { expires_at } => expires_at,
        };
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2")
            .bind(r.now)
            .bind(r.old_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(r.new_hash)
        .bind(&family.id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Rotate::Rotated(family))
    }

    async fn family_of_refresh(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        let row = sqlx::query(
            "SELECT f.* FROM refresh_tokens r JOIN families f ON f.id = r.family_id \
             WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(family_from).transpose()?)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE families SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(family_id)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_families(
        &self,
        by: FamilyFilter<'_>,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let (sql, key) = match by {
            FamilyFilter::Subject(s) => (
                "UPDATE families SET revoked_at = $1, revoked_reason = $2 \
                 WHERE subject = $3 AND revoked_at IS NULL",
                s,
            ),
            FamilyFilter::Client(c) => (
                "UPDATE families SET revoked_at = $1, revoked_reason = $2 \
                 WHERE client_id = $3 AND revoked_at IS NULL",
                c,
            ),
        };
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql)
            .bind(now)
            .bind(reason)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn family_active(
        &self,
        family_id: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM families WHERE id = $1 AND subject = $2 AND client_id = $3 \
             AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(subject)
        .bind(client_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn purge(&self, now: i64) -> Result<u64, StoreError> {
        // The same day of grace as the SQLite store; plus the shared state
        // only this engine keeps.
        let day_ago = now - 86_400;
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for (sql, at) in [
            ("DELETE FROM codes WHERE expires_at < $1", day_ago),
            ("DELETE FROM refresh_tokens WHERE expires_at < $1", day_ago),
            (
                "DELETE FROM families WHERE created_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM refresh_tokens r WHERE r.family_id = families.id)",
                day_ago,
            ),
            ("DELETE FROM signing_keys WHERE retire_at < $1", day_ago),
            (
                "DELETE FROM rate_counters WHERE window_start < $1",
                now - 3_600,
            ),
            ("DELETE FROM login_forms WHERE expires_at < $1", now),
            (
                "DELETE FROM login_failures WHERE first_at < $1 \
                 AND (locked_until IS NULL OR locked_until < $1)",
                // Milliseconds; every record older than an hour is past its
                // window and its longest lockout.
                now.saturating_sub(3_600).saturating_mul(1000),
            ),
            ("DELETE FROM mcp_sessions WHERE seen_at < $1", day_ago),
            ("DELETE FROM mcp_replies WHERE created_at < $1", now - 600),
            ("DELETE FROM mcp_pending WHERE created_at < $1", now - 3_600),
        ] {
            deleted += sqlx::query(sql)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut key = stored_key_from(row)?;
            if !StoreSecret::is_sealed(&key.pem) {
                // Only a writer of the database could have put it there.
                tracing::error!(
                    kid = key.kid,
                    "store: a signing key is stored unsealed; it is ignored"
                );
                continue;
            }
            key.pem = self.secret.open(&key.kid, &key.pem)?;
            keys.push(key);
        }
        Ok(keys)
    }

    async fn add_signing_key(
        &self,
        key: &StoredKey,
        retire_others_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(at) = retire_others_at {
            sqlx::query(
                "UPDATE signing_keys SET retire_at = LEAST(COALESCE(retire_at, $1), $1) \
                 WHERE kid <> $2",
            )
            .bind(at)
            .bind(&key.kid)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO signing_keys (kid, pem, created_at, retire_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(self.secret.seal(&key.kid, &key.pem))
        .bind(key.created_at)
        .bind(key.retire_at)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    fn shared(&self) -> Option<&dyn SharedState> {
        Some(self)
    }
}

#[async_trait]
impl SharedState for PostgresStore {
    async fn hit(&self, key: &str, window_start: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO rate_counters (key, window_start, count) VALUES ($1, $2, 1) \
             ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counters.count + 1 \
             RETURNING count",
        )
        .bind(key)
        .bind(window_start)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn put_form(
        &self,
        csrf_hash: &str,
        addr: &str,
        data: &str,
        now: i64,
        ttl: i64,
        per_address: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // One address holds at most `per_address` live forms: its oldest go.
        sqlx::query(
            "DELETE FROM login_forms WHERE addr = $1 AND (expires_at <= $2 OR csrf_hash IN \
             (SELECT csrf_hash FROM login_forms WHERE addr = $1 AND expires_at > $2 \
              ORDER BY created_at DESC OFFSET $3))",
        )
        .bind(addr)
        .bind(now)
        .bind((per_address - 1).max(0))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO login_forms (csrf_hash, addr, data, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(csrf_hash)
        .bind(addr)
        .bind(data)
        .bind(now)
        .bind(now + ttl)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_form(&self, csrf_hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        let data: Option<String> = sqlx::query_scalar(
            "DELETE FROM login_forms WHERE csrf_hash = $1 RETURNING \
             CASE WHEN expires_at > $2 THEN data END",
        )
        .bind(csrf_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok(data)
    }

    async fn login_failures(&self, addr: &str) -> Result<Option<LoginFailures>, StoreError> {
        let row = sqlx::query("SELECT * FROM login_failures WHERE addr = $1")
            .bind(addr)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(failures_from).transpose()?)
    }

    async fn update_login_failures(
        &self,
        addr: &str,
        update: &(dyn Fn(Option<LoginFailures>) -> Option<LoginFailures> + Send + Sync),
    ) -> Result<Option<LoginFailures>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialize updates of one address across hosts.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(addr)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT * FROM login_failures WHERE addr = $1")
            .bind(addr)
            .fetch_optional(&mut *tx)
            .await?;
        let old = row.as_ref().map(failures_from).transpose()?;
        let new = update(old);
        match &new {
            Some(f) => {
                sqlx::query(
                    "INSERT INTO login_failures (addr, count, first_at, locked_until) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (addr) DO UPDATE SET \
                     count = EXCLUDED.count, first_at = EXCLUDED.first_at, \
                     locked_until = EXCLUDED.locked_until",
                )
                .bind(addr)
                .bind(f.count.min(i32::MAX as u32) as i32)
                .bind(f.first_at)
                .bind(f.locked_until)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM login_failures WHERE addr = $1")
                    .bind(addr)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn bind_session(
        &self,
        id: &str,
        owner: &SessionOwner,
        host_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mcp_sessions (id, subject, client_id, host_id, created_at, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO UPDATE SET \
             subject = EXCLUDED.subject, client_id = EXCLUDED.client_id, host_id = EXCLUDED.host_id \
             WHERE mcp_sessions.subject = ''",
        )
        .bind(id)
        .bind(&owner.subject)
        .bind(&owner.client_id)
        .bind(host_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_owner(&self, id: &str) -> Result<Option<SessionOwner>, StoreError> {
        let row = sqlx::query("SELECT subject, client_id FROM mcp_sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(SessionOwner {
                subject: r.try_get("subject")?,
                client_id: r.try_get("client_id")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    async fn touch_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE mcp_sessions SET seen_at = $2 WHERE id = $1 AND seen_at < $2")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn end_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mcp_sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_session_state(&self, id: &str, state: &str, now: i64) -> Result<(), StoreError> {
        // rmcp saves the state before the `initialize` answer reaches the gate
        // that binds the owner: a row saved first has an empty owner (which
        // nobody matches) until `bind_session` fills it in, once.
        sqlx::query(
            "INSERT INTO mcp_sessions (id, subject, client_id, state, host_id, created_at, seen_at) \
             VALUES ($1, '', NULL, $2, '', $3, $3) ON CONFLICT (id) DO UPDATE SET state = $2, seen_at = $3",
        )
        .bind(id)
        .bind(state)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_session_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT state FROM mcp_sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    fn change_generation(&self) -> Option<i64> {
        PostgresStore::change_generation(self)
    }

    async fn publish(&self, from: &str, what: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(self.secret.sign_event(from, what, crate::auth::now_secs()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.events.subscribe()
    }

    async fn expect_reply(
        &self,
        session: &str,
        request_id: &str,
        host: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mcp_pending (session, request_id, host_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (session, request_id) \
             DO UPDATE SET host_id = $3, created_at = $4",
        )
        .bind(session)
        .bind(request_id)
        .bind(host)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reply_settled(&self, session: &str, request_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM mcp_pending WHERE session = $1 AND request_id = $2")
            .bind(session)
            .bind(request_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn relay_reply(
        &self,
        from: &str,
        session: &str,
        request_id: &str,
        body: &str,
    ) -> Result<Relay, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Taken once: a second copy of the reply finds nothing pending.
        let waiting: Option<String> = sqlx::query_scalar(
            "DELETE FROM mcp_pending WHERE session = $1 AND request_id = $2 AND host_id <> $3 \
             RETURNING host_id",
        )
        .bind(session)
        .bind(request_id)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(to) = waiting else {
            let local: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM mcp_pending WHERE session = $1 AND request_id = $2)",
            )
            .bind(session)
            .bind(request_id)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(if local {
                Relay::Local
            } else {
                Relay::NotPending
            });
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO mcp_replies (session, body, created_at, to_host) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(session)
        .bind(body)
        .bind(crate::auth::now_secs())
        .bind(&to)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(
                self.secret
                    .sign_event(from, &format!("reply {id}"), crate::auth::now_secs()),
            )
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Relay::Relayed)
    }

    async fn take_relayed_reply(
        &self,
        id: i64,
        me: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM mcp_replies WHERE id = $1 AND to_host = $2 RETURNING session, body",
        )
        .bind(id)
        .bind(me)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| Ok::<_, sqlx::Error>((r.try_get("session")?, r.try_get("body")?)))
            .transpose()?)
    }

    async fn relayed_replies_for(
        &self,
        me: &str,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let rows =
            sqlx::query("DELETE FROM mcp_replies WHERE to_host = $1 RETURNING id, session, body")
                .bind(me)
                .fetch_all(&self.pool)
                .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("session")?, r.try_get("body")?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.0);
        Ok(out)
    }
}

use super::{LoginFailures, SessionOwner};
