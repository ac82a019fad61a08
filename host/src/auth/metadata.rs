//! Discovery documents: RFC 9728 protected-resource metadata, RFC 8414
//! authorization-server metadata (also served as `openid-configuration`), JWKS.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AuthState;

fn cacheable(v: Value) -> Response {
    let mut r = Json(v).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// The protected-resource metadata document (RFC 9728).
pub fn protected_resource_doc(s: &AuthState) -> Value {
    json!({
        "resource": s.resource,
        "authorization_servers": [s.issuer()],
        "scopes_supported": s.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": "Stockade",
    })
}

/// The authorization-server metadata document (RFC 8414).
pub fn authorization_server_doc(s: &AuthState) -> Value {
    let base = &s.public_url;
    json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "revocation_endpoint": format!("{base}/revoke"),
        "jwks_uri": format!("{base}/jwks.json"),
        "scopes_supported": s.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
    })
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`
pub async fn protected_resource(State(s): State<Arc<AuthState>>) -> Response {
    cacheable(protected_resource_doc(&s))
}

/// `GET /.well-known/oauth-authorization-server` (and `openid-configuration`).
pub async fn authorization_server(State(s): State<Arc<AuthState>>) -> Response {
    cacheable(authorization_server_doc(&s))
}

/// `GET /jwks.json`
pub async fn jwks(State(s): State<Arc<AuthState>>) -> Response {
    match &s.builtin {
        Some(b) => cacheable(b.keys.jwks()),
        None => cacheable(json!({ "keys": [] })),
    }
}
