//! `POST /register`: RFC 7591 dynamic client registration.
//!
//! Open registration (MCP clients register themselves), limited per address.
//! Public clients (`token_endpoint_auth_method: none`, the default) get no secret;
//! confidential ones get a secret that is stored only as a hash.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::store::Client;
use super::{AuthState, no_store, oauth_error, rules};
use crate::audit::AuditEvent;

/// The largest registration request accepted.
const MAX_REGISTRATION_BYTES: usize = 64 << 10;

/// The client metadata Stockade reads (unknown members are ignored, RFC 7591 §2).
#[derive(Debug, Deserialize)]
pub struct ClientMetadata {
    /// Redirect URIs (required).
    #[serde(default)]
    pub redirect_uris: Option<Vec<String>>,
    /// A display name.
    #[serde(default)]
    pub client_name: Option<String>,
    /// `none` (default), `client_secret_post`, `client_secret_basic`.
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// Must be within `authorization_code`, `refresh_token`.
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    /// Must be within `code`.
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
    /// Requested scopes (informational).
    #[serde(default)]
    pub scope: Option<String>,
    /// The client id, for Client ID Metadata Documents.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// Validated metadata: the cleaned-up client name and the redirect URIs.
pub type Validated = (Option<String>, Vec<String>);

/// A refusal: the RFC 7591 error code and a description.
pub type MetadataError = (&'static str, String);

/// Validates client metadata; returns the cleaned-up client name and redirect URIs.
pub fn validate_metadata(m: &ClientMetadata) -> Result<Validated, MetadataError> {
    let uris = match &m.redirect_uris {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err((
                "invalid_redirect_uri",
                "redirect_uris: at least one redirect URI is required".into(),
            ));
        }
    };
    if uris.len() > 20 {
        return Err(("invalid_redirect_uri", "redirect_uris: at most 20".into()));
    }
    for u in uris {
        rules::check_redirect_uri(u).map_err(|e| ("invalid_redirect_uri", e))?;
    }
    if let Some(g) = &m.grant_types
        && let Some(bad) = g
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err((
            "invalid_client_metadata",
            format!("grant_types: `{bad}` is not supported"),
        ));
    }
    if let Some(r) = &m.response_types
        && let Some(bad) = r.iter().find(|r| r.as_str() != "code")
    {
        return Err((
            "invalid_client_metadata",
            format!("response_types: `{bad}` is not supported"),
        ));
    }
    if let Some(method) = &m.token_endpoint_auth_method
        && !matches!(
            method.as_str(),
            "none" | "client_secret_post" | "client_secret_basic"
        )
    {
        return Err((
            "invalid_client_metadata",
            format!(
                "token_endpoint_auth_method: `{method}` is not supported (none, client_secret_post, client_secret_basic)"
            ),
        ));
    }
    let name = m
        .client_name
        .as_deref()
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        })
        .filter(|n| !n.trim().is_empty());
    Ok((name, uris.clone()))
}

/// `POST /register`
pub async fn register(State(s): State<Arc<AuthState>>, req: Request) -> Response {
    let b = s.builtin.as_ref().expect("route mounted in builtin mode");
    let ip = s.client_ip(req.headers(), req.extensions());
    let path = "/register";
    let limit = b.registrations.check(&ip);
    if !limit.allowed {
        s.deny(
            StatusCode::TOO_MANY_REQUESTS,
            "registration rate limit",
            path,
            &ip,
            None,
        )
        .await;
        let mut r = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many registrations; retry later",
        );
        limit.apply(r.headers_mut());
        return r;
    }
    let body = match s
        .read_oauth_body(
            req.into_body(),
            MAX_REGISTRATION_BYTES,
            "registration body too large",
            path,
            &ip,
        )
        .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let meta: ClientMetadata = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                format!("registration: malformed JSON: {e}"),
                path,
                &ip,
                None,
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                "the body is not a JSON client metadata object",
            );
        }
    };
    let (client_name, redirect_uris) = match validate_metadata(&meta) {
        Ok(v) => v,
        Err((code, why)) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                format!("registration refused: {why}"),
                path,
                &ip,
                None,
            )
            .await;
            return oauth_error(StatusCode::BAD_REQUEST, code, &why);
        }
    };
    let method = meta
        .token_endpoint_auth_method
        .clone()
        .unwrap_or_else(|| "none".into());
    let secret = (method != "none").then(super::random_token);
    let client = Client {
        client_id: format!("stk_{}", &super::random_token()[..22]),
        client_name: client_name.clone(),
        redirect_uris: redirect_uris.clone(),
        token_endpoint_auth_method: method.clone(),
        secret_hash: secret.as_deref().map(super::sha256_hex),
        created_at: super::now_secs(),
    };
    if let Err(e) = b.store.insert_client(&client).await {
        tracing::error!("registration failed: {e}");
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "registration failed",
        );
    }
    s.audit
        .note(AuditEvent::ClientRegistered {
            client_id: client.client_id.clone(),
            client_name: client_name.clone(),
            redirect_uris: redirect_uris.clone(),
            ip,
        })
        .await;
    let mut doc = json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.created_at,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    });
    if let Some(n) = client_name {
        doc["client_name"] = Value::from(n);
    }
    if let Some(sc) = meta.scope.as_deref() {
        let allowed: Vec<String> = rules::parse_scope(sc)
            .into_iter()
            .filter(|x| s.scopes_supported.contains(x))
            .collect();
        if !allowed.is_empty() {
            doc["scope"] = Value::from(allowed.join(" "));
        }
    }
    if let Some(secret) = secret {
        doc["client_secret"] = Value::from(secret);
        doc["client_secret_expires_at"] = Value::from(0);
    }
    let mut r = (StatusCode::CREATED, axum::Json(doc)).into_response();
    no_store(r.headers_mut());
    r
}
