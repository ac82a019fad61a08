//! [`AuthStore`] on an embedded SQLite database (`<data>/stockade.db`).
//!
//! Durability: WAL journal with `synchronous = FULL`, so a transaction that
//! returned has reached the disk; a crash at any moment loses nothing
//! acknowledged. State-changing reads run in `BEGIN IMMEDIATE` transactions (one
//! writer at a time), which makes code and refresh-token redemption atomic.
//! Migrations are embedded and tracked with `PRAGMA user_version`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    AuthStore, Client, CodeGrant, Family, FamilyFilter, Redeem, Rotate, Rotation, RotationStep,
    StoreError, StoredKey, client_from, family_from, rotation_step, stored_key_from,
};

/// Schema migrations, applied in order; index + 1 is the `user_version` after it.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    client_name TEXT,
    redirect_uris TEXT NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    secret_hash TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE families (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scope TEXT NOT NULL,
    resource TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_reason TEXT
);
CREATE TABLE codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    family_id TEXT
);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES families(id),
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
"#,
    // Whether /authorize named the redirect URI (then /token must too). Codes
    // from before default to "named": stricter, and they live 60 s anyway.
    r#"
ALTER TABLE codes ADD COLUMN redirect_uri_given INTEGER NOT NULL DEFAULT 1;
CREATE INDEX families_subject ON families(subject);
CREATE INDEX families_client ON families(client_id);
"#,
    // Token signing keys (`stockade keys rotate`); the first one is imported
    // from `keys/es256.pem`.
    r#"
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    pem TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retire_at INTEGER
);
"#,
];

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError(format!(
                "the database schema is version {version}, newer than this Stockade knows ({known}); \
                 upgrade Stockade"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl AuthStore for SqliteStore {
    async fn insert_client(&self, c: &Client) -> Result<(), StoreError> {
        let uris =
            serde_json::to_string(&c.redirect_uris).map_err(|e| StoreError(e.to_string()))?;
        sqlx::query(
            "INSERT INTO clients (client_id, client_name, redirect_uris, token_endpoint_auth_method, \
             secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
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
        let row = sqlx::query("SELECT * FROM clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(client_from).transpose()
    }

    async fn insert_code(&self, code_hash: &str, g: &CodeGrant) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO codes (code_hash, client_id, redirect_uri, redirect_uri_given, code_challenge, \
             resource, scope, subject, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query("SELECT * FROM codes WHERE code_hash = ?")
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
                    "UPDATE families SET revoked_at = ?, revoked_reason = 'authorization code replayed' \
                     WHERE id = ? AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(f)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(Redeem::Replayed {
                family,
                client_id: grant.client_id,
            });
        }
        if grant.expires_at <= now {
            // Spend it anyway so it cannot be tried again.
            sqlx::query("UPDATE codes SET used_at = ? WHERE code_hash = ?")
                .bind(now)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Redeem::Expired);
        }
        sqlx::query("UPDATE codes SET used_at = ?, family_id = ? WHERE code_hash = ?")
            .bind(now)
            .bind(family_id)
            .bind(code_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO families (id, client_id, subject, scope, resource, created_at) VALUES (?, ?, ?, ?, ?, ?)",
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
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES (?, ?, ?)",
        )
        .bind(token_hash)
        .bind(family_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rotate_refresh(&self, r: &Rotation<'_>) -> Result<Rotate, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(
            "SELECT f.*, r.used_at AS r_used_at, r.expires_at AS r_expires_at FROM refresh_tokens r \
             JOIN families f ON f.id = r.family_id WHERE r.token_hash = ?",
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
                    "UPDATE families SET revoked_at = ?, revoked_reason = 'refresh token reused' \
                     WHERE id = ? AND revoked_at IS NULL",
                )
                .bind(r.now)
                .bind(&family.id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Rotate::Reused(family));
            }
            RotationStep::Rotate { expires_at } => expires_at,
        };
        sqlx::query("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?")
            .bind(r.now)
            .bind(r.old_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES (?, ?, ?)",
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
            "SELECT f.* FROM refresh_tokens r JOIN families f ON f.id = r.family_id WHERE r.token_hash = ?",
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
        let done = sqlx::query(
            "UPDATE families SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(family_id)
        .execute(&self.pool)
        .await?;
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
                "UPDATE families SET revoked_at = ?, revoked_reason = ? \
                 WHERE subject = ? AND revoked_at IS NULL",
                s,
            ),
            FamilyFilter::Client(c) => (
                "UPDATE families SET revoked_at = ?, revoked_reason = ? \
                 WHERE client_id = ? AND revoked_at IS NULL",
                c,
            ),
        };
        let done = sqlx::query(sql)
            .bind(now)
            .bind(reason)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn family_active(
        &self,
        family_id: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM families WHERE id = ? AND subject = ? AND client_id = ? \
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
        // A day of grace everywhere: spent codes stay so a late replay is still
        // recognised; spent refresh tokens stay past the time they could have
        // been valid, so reuse is detected for as long as that; a family goes
        // only when no access token of it can still be valid (access tokens
        // live at most a day and never start after the last refresh token's
        // expiry).
        let day_ago = now - 86_400;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM codes WHERE expires_at < ?",
            "DELETE FROM refresh_tokens WHERE expires_at < ?",
            "DELETE FROM families WHERE created_at < ? AND NOT EXISTS \
             (SELECT 1 FROM refresh_tokens r WHERE r.family_id = families.id)",
            "DELETE FROM signing_keys WHERE retire_at < ?",
        ] {
            deleted += sqlx::query(sql)
                .bind(day_ago)
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
        Ok(rows
            .iter()
            .map(stored_key_from)
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn add_signing_key(
        &self,
        key: &StoredKey,
        retire_others_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(at) = retire_others_at {
            sqlx::query(
                "UPDATE signing_keys SET retire_at = MIN(COALESCE(retire_at, ?1), ?1) WHERE kid <> ?2",
            )
            .bind(at)
            .bind(&key.kid)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT OR IGNORE INTO signing_keys (kid, pem, created_at, retire_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.pem)
        .bind(key.created_at)
        .bind(key.retire_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
