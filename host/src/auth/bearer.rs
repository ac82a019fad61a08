//! The gate in front of `/mcp`: Origin check, bearer token → [`Principal`],
//! per-subject rate limit, and the scope challenge for `tools/call`.
//!
//! Answers, each audited before it is sent:
//! - 403 for a browser `Origin` that is not allowed (DNS rebinding, CSRF);
//! - 401 `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` without a
//!   token, with `error="invalid_token"` for a bad one (expired, not yet valid,
//!   forged, another audience, `alg: none`, revoked, its user removed or left
//!   without any of its scopes) and for a token in the query string;
//! - 429 with `RateLimit`, `RateLimit-Policy` and `Retry-After` past the
//!   per-subject limit (the `RateLimit` headers are on allowed responses too);
//! - 413 for a body over the limit, 400 (JSON-RPC parse error) for a body that is
//!   not JSON;
//! - 403 `error="insufficient_scope", scope="…"` for a `tools/call` of a tool
//!   whose plugin needs a scope the token lacks.
//!
//! Built-in tokens are checked against the store (family not revoked) and the
//! current users on every request, so revocation, `stockade tokens revoke` and a
//! removed user take effect at once; scopes taken from a user are dropped from
//! the [`Principal`] at once too.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::keys::TokenRejection;
use super::{AuthState, BodyError, Principal, read_body};
use crate::config::AuthMode;

/// Which scope a tool needs (by tool name), if any. Supplied by the wiring in
/// `cli.rs` from the plugin catalog, read at call time.
pub type ScopeResolver = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the gate needs.
#[derive(Clone)]
pub struct Gate {
    /// The authentication state.
    pub auth: Arc<AuthState>,
    /// The scope each tool needs.
    pub scopes: ScopeResolver,
    /// The largest body accepted, bytes.
    pub max_body: usize,
}

/// Checks a token and returns its caller.
pub async fn authenticate(auth: &AuthState, token: &str) -> Result<Principal, TokenRejection> {
    if let Some(ext) = &auth.external {
        return ext.validate(token).await;
    }
    let Some(b) = &auth.builtin else {
        return Err(TokenRejection::Malformed);
    };
    let claims = b.key.verify(token, &auth.public_url, &auth.resource)?;
    match b.store.family_active(&claims.fam).await {
        Ok(true) => {}
        Ok(false) => return Err(TokenRejection::Revoked),
        Err(e) => {
            tracing::error!("gate: {e}");
            return Err(TokenRejection::KeysUnavailable);
        }
    }
    let allowed = b
        .credentials
        .current_scopes(&claims.sub)
        .ok_or(TokenRejection::SubjectGone)?;
    let scopes: Vec<String> = super::rules::parse_scope(&claims.scope)
        .into_iter()
        .filter(|s| allowed.contains(s))
        .collect();
    if scopes.is_empty() {
        return Err(TokenRejection::ScopesWithdrawn);
    }
    Ok(Principal {
        subject: claims.sub,
        client_id: Some(claims.client_id),
        scopes,
        audience: Some(claims.aud),
    })
}

fn challenge(auth: &AuthState, error: Option<(&str, &str)>, scope: &str) -> HeaderValue {
    let mut v = format!(
        "Bearer resource_metadata=\"{}\", scope=\"{}\"",
        auth.resource_metadata_url(),
        scope
    );
    if let Some((code, desc)) = error {
        v.push_str(&format!(", error=\"{code}\", error_description=\"{desc}\""));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } }),
        ),
    )
        .into_response()
}

/// Whether `origin` (an `Origin` header value) may call `/mcp`.
pub fn origin_allowed(auth: &AuthState, origin: &str) -> bool {
    super::rules::normalize_origin(origin).is_some_and(|o| auth.allowed_origins.contains(&o))
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let auth = &g.auth;
    let ip = auth.client_ip(req.headers(), req.extensions());
    let path = "/mcp";

    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        if !origin_allowed(auth, o) {
            auth.deny(
                StatusCode::FORBIDDEN,
                format!(
                    "origin `{}` not allowed",
                    o.chars().take(200).collect::<String>()
                ),
                path,
                &ip,
                None,
            )
            .await;
            return json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this Origin may not call the MCP endpoint",
            );
        }
    }
    if auth.mode == AuthMode::None {
        return next.run(req).await;
    }
    let default_scope = auth.default_scope().to_owned();
    let unauthorized = |error: Option<(&str, &str)>| {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            error.map(|e| e.0).unwrap_or("unauthorized"),
            error.map(|e| e.1).unwrap_or("a bearer token is required"),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            challenge(auth, error, &default_scope),
        );
        r
    };
    let query_token = req.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token" || k == "token")
    });
    if query_token {
        auth.deny(
            StatusCode::UNAUTHORIZED,
            "token in the query string (only the Authorization header is accepted)",
            path,
            &ip,
            None,
        )
        .await;
        return unauthorized(Some((
            "invalid_request",
            "tokens are accepted only in the Authorization header",
        )));
    }
    let token = match req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => {
            auth.deny(StatusCode::UNAUTHORIZED, "no bearer token", path, &ip, None)
                .await;
            return unauthorized(None);
        }
        Some(v) => match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                t.trim().to_owned()
            }
            _ => {
                auth.deny(
                    StatusCode::UNAUTHORIZED,
                    "Authorization header is not a bearer token",
                    path,
                    &ip,
                    None,
                )
                .await;
                return unauthorized(Some(("invalid_token", "expected a bearer token")));
            }
        },
    };
    let principal = match authenticate(auth, &token).await {
        Ok(p) => p,
        Err(why) => {
            auth.deny(
                StatusCode::UNAUTHORIZED,
                format!("invalid token: {why}"),
                path,
                &ip,
                None,
            )
            .await;
            return unauthorized(Some((
                "invalid_token",
                "the access token is invalid, expired or revoked",
            )));
        }
    };

    let mut rate = None;
    if req.method() == Method::POST
        && let Some(limiter) = &auth.mcp_limit
    {
        let d = limiter.check(&principal.subject);
        if !d.allowed {
            auth.deny(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
                path,
                &ip,
                Some(principal.subject.clone()),
            )
            .await;
            let mut r = jsonrpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                -32000,
                "rate limit exceeded; retry later",
            );
            d.apply(r.headers_mut());
            return r;
        }
        rate = Some(d);
    }

    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::POST {
        let bytes = match read_body(body, g.max_body).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                auth.deny(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                    path,
                    &ip,
                    Some(principal.subject.clone()),
                )
                .await;
                return jsonrpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    -32600,
                    "request body too large",
                );
            }
            Err(BodyError::Unreadable) => {
                return jsonrpc_error(StatusCode::BAD_REQUEST, -32700, "unreadable request body");
            }
        };
        let message: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                auth.deny(
                    StatusCode::BAD_REQUEST,
                    "malformed JSON-RPC body",
                    path,
                    &ip,
                    Some(principal.subject.clone()),
                )
                .await;
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    -32700,
                    "parse error: the body is not JSON",
                );
            }
        };
        if let Some((tool, scope)) = missing_scope(&message, &principal, &g.scopes) {
            auth.deny(
                StatusCode::FORBIDDEN,
                format!("insufficient scope: tool `{tool}` needs scope `{scope}`"),
                path,
                &ip,
                Some(principal.subject.clone()),
            )
            .await;
            let mut r = json_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks a scope this tool requires",
            );
            let mut needed: Vec<String> = principal.scopes.clone();
            if !needed.contains(&scope) {
                needed.push(scope.clone());
            }
            let v = format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\", error_description=\"tool {} requires scope {}\"",
                needed.join(" "),
                auth.resource_metadata_url(),
                tool.replace(['"', '\\'], ""),
                scope
            );
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return r;
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(principal);
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if let Some(d) = rate {
        d.apply(resp.headers_mut());
    }
    resp
}

/// The first `tools/call` in `message` (a request or a batch) naming a tool whose
/// required scope `principal` lacks: `(tool, scope)`.
pub fn missing_scope(
    message: &Value,
    principal: &Principal,
    scopes: &ScopeResolver,
) -> Option<(String, String)> {
    let one = |m: &Value| -> Option<(String, String)> {
        if m.get("method")?.as_str()? != "tools/call" {
            return None;
        }
        let tool = m.get("params")?.get("name")?.as_str()?;
        let needed = scopes(tool)?;
        (!principal.has_scope(&needed)).then(|| (tool.to_owned(), needed))
    };
    match message {
        Value::Array(batch) => batch.iter().find_map(one),
        m => one(m),
    }
}
