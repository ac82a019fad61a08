//! External identity provider mode: `/mcp` accepts JWT access tokens signed by
//! the provider's keys (fetched from `auth.jwks_url`), with `iss` = `auth.issuer`
//! and `aud` = `auth.audience` (default: the resource URL).
//!
//! Only asymmetric algorithms are accepted (RS*, PS*, ES256/384, EdDSA): `none`
//! and HMAC are refused, and symmetric (`oct`) keys in the key set are ignored.
//! The key set is cached for ten minutes and refetched (at most every 30 s) when
//! a token names an unknown `kid`, so provider key rotation just works.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::keys::{TokenRejection, check_header, decode_with};
use super::{AuthSetupError, Principal};
use crate::config::AuthSettings;

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
const CACHE_FOR: Duration = Duration::from_secs(600);
const MIN_REFETCH: Duration = Duration::from_secs(30);
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Cached {
    fetched: Option<Instant>,
    keys: Vec<(Option<String>, DecodingKey)>,
}

/// Validates an external provider's tokens.
pub struct ExternalIdp {
    issuer: String,
    audience: String,
    jwks_url: String,
    http: reqwest::Client,
    cache: tokio::sync::RwLock<Cached>,
    fetching: tokio::sync::Mutex<()>,
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
    pub fn new(settings: &AuthSettings, resource: &str) -> Result<ExternalIdp, AuthSetupError> {
        super::keys::install_crypto_provider();
        let missing = |k: &str| {
            AuthSetupError::Other(format!("auth.{k} is required with mode = \"external\""))
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| AuthSetupError::Other(format!("http client: {e}")))?;
        Ok(ExternalIdp {
            issuer: settings.issuer.clone().ok_or_else(|| missing("issuer"))?,
            audience: settings
                .audience
                .clone()
                .unwrap_or_else(|| resource.to_owned()),
            jwks_url: settings
                .jwks_url
                .clone()
                .ok_or_else(|| missing("jwks_url"))?,
            http,
            cache: tokio::sync::RwLock::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The provider's issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Validates `token` and returns its caller.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenRejection> {
        let header = check_header(token, ACCEPTED)?;
        let kid = header.kid.clone();
        let stale = {
            let c = self.cache.read().await;
            c.fetched.is_none_or(|t| t.elapsed() > CACHE_FOR) || !has_key(&c, kid.as_deref())
        };
        if stale {
            self.refresh().await;
        }
        let c = self.cache.read().await;
        if c.fetched.is_none() {
            return Err(TokenRejection::KeysUnavailable);
        }
        let candidates: Vec<&DecodingKey> = c
            .keys
            .iter()
            .filter(|(k, key)| {
                key.family() == header.alg.family()
                    && (kid.is_none() || k.as_deref() == kid.as_deref())
            })
            .map(|(_, key)| key)
            .collect();
        if candidates.is_empty() {
            return Err(TokenRejection::UnknownKey);
        }
        let mut last = TokenRejection::Signature;
        for key in candidates {
            match decode_with::<ExternalClaims>(
                token,
                key,
                header.alg,
                &self.issuer,
                &self.audience,
                true,
            ) {
                Ok(claims) => return Ok(principal(claims, &self.audience)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        if self
            .cache
            .read()
            .await
            .fetched
            .is_some_and(|t| t.elapsed() < MIN_REFETCH)
        {
            return;
        }
        match self.fetch().await {
            Ok(keys) => {
                let mut c = self.cache.write().await;
                c.keys = keys;
                c.fetched = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(url = %self.jwks_url, "cannot fetch the identity provider's JWKS: {e}")
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
        let resp = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("key set larger than 1 MiB".into());
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok(set
            .keys
            .iter()
            .filter(|j| !matches!(j.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter_map(|j| {
                DecodingKey::from_jwk(j)
                    .ok()
                    .map(|k| (j.common.key_id.clone(), k))
            })
            .collect())
    }
}

fn has_key(c: &Cached, kid: Option<&str>) -> bool {
    match kid {
        Some(k) => c.keys.iter().any(|(id, _)| id.as_deref() == Some(k)),
        None => !c.keys.is_empty(),
    }
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
