//! The gate in front of `/mcp`: Origin check, bearer token → [`Principal`],
//! the MCP session's owner, per-subject rate limit, and the scope challenge for
//! `tools/call`.
//!
//! Answers, each audited before it is sent:
//! - 403 for a browser `Origin` that is not allowed (DNS rebinding, CSRF);
//! - 401 `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` without a
//!   token, with `error="invalid_token"` for a bad one (expired, not yet valid,
//!   forged, another audience, `alg: none`, revoked, its user removed or left
//!   without any of its scopes) and for a token in the query string;
//! - 404 for an `Mcp-Session-Id` this caller did not create (see [`super::sessions`]);
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
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::envelope;
use super::keys::TokenRejection;
use super::ratelimit::Decision;
use super::sessions::SessionCheck;
use super::{AuthState, BodyError, Principal, read_body};
use crate::config::AuthMode;

/// Which scope a tool needs (by tool name), if any. Supplied by the wiring in
/// `cli.rs` from the plugin catalog, read at call time.
pub type ScopeResolver = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The header naming an MCP session.
pub const SESSION_HEADER: &str = "mcp-session-id";

const PATH: &str = "/mcp";

/// What the bearer gate needs (the state of [`gate`]).
#[derive(Clone)]
pub struct BearerGate {
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
    let key = super::token_cache::TokenCache::key(token);
    if let Some(cache) = &b.tokens
        && let Some(principal) = cache.get(&key, super::now_secs().max(0) as u64)
    {
        return Ok(principal);
    }
    // Read before the family check: a revocation committed after it makes
    // the entry stale (see `token_cache`).
    let stamp = b.tokens.as_ref().and_then(|c| c.stamp());
    let claims = b
        .keys
        .verify(token, &auth.public_url, &auth.resource)
        .await?;
    // This server never issues a token that lives longer than its access
    // token lifetime: one that does was not minted here (a stolen key).
    if claims.exp.saturating_sub(claims.iat) > b.access_ttl + 60 {
        return Err(TokenRejection::Malformed);
    }
    // The family must be the token's own: same user, same client. A token
    // minted with a stolen key for another `sub` around a family id seen on
    // the wire is refused here.
    match b
        .store
        .family_active(&claims.fam, &claims.sub, &claims.client_id)
        .await
    {
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
    let principal = Principal {
        subject: claims.sub,
        client_id: Some(claims.client_id),
        scopes,
        audience: Some(claims.aud),
    };
    if let (Some(cache), Some(stamp)) = (&b.tokens, stamp) {
        cache.put(key, &principal, claims.exp, stamp);
    }
    Ok(principal)
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

fn jsonrpc_error(status: StatusCode, id: &Value, code: i64, message: &str) -> Response {
    envelope::jsonrpc_error(status, id, code, message)
}

/// A 401 with the challenge (and `error`, when a token was wrong).
fn unauthorized(auth: &AuthState, error: Option<(&str, &str)>) -> Response {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        error.map(|e| e.0).unwrap_or("unauthorized"),
        error.map(|e| e.1).unwrap_or("a bearer token is required"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        challenge(auth, error, auth.default_scope()),
    );
    r
}

/// Whether `origin` (an `Origin` header value) may call `/mcp`.
pub fn origin_allowed(auth: &AuthState, origin: &str) -> bool {
    super::rules::normalize_origin(origin).is_some_and(|o| auth.allowed_origins.contains(&o))
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn gate(State(g): State<BearerGate>, req: Request, next: Next) -> Response {
    let auth = &g.auth;
    let (mut parts, body) = req.into_parts();
    let ip = auth.client_ip(&parts.headers, &parts.extensions);
    if let Err(refused) = check_origin(auth, &parts, &ip).await {
        return refused;
    }
    if auth.mode == AuthMode::None {
        let resp = next.run(Request::from_parts(parts, body)).await;
        return envelope::plain_errors_as_jsonrpc(resp, &Value::Null).await;
    }
    let principal = match bearer_principal(auth, &parts, &ip).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    // The body first (bounded): what it is decides the session check, and
    // every refusal after this names the request it refuses.
    let (body, message) = if parts.method == Method::POST {
        match read_message(&g, body, &principal, &ip).await {
            Ok((b, m)) => (b, Some(m)),
            Err(refused) => return refused,
        }
    } else {
        (body, None)
    };
    let id = message
        .as_ref()
        .and_then(|m| m.get("id"))
        .filter(|id| id.is_string() || id.is_number())
        .cloned()
        .unwrap_or(Value::Null);
    // A 2026-07-28 request stands alone: a session id it carries means
    // nothing (the spec says to ignore it) and is dropped here, so no session
    // is ever reached without its owner's check.
    if message.as_ref().is_some_and(envelope::is_stateless_request) {
        parts.headers.remove(SESSION_HEADER);
    }
    let session = session_id(&parts);
    if let Some(sid) = &session
        && let Err(refused) = check_session(auth, sid, &principal, &ip, &id).await
    {
        return refused;
    }
    let rate = match rate_limit(auth, &parts, &principal, &ip, &id).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    if let Some(m) = &message
        && let Some((tool, scope)) = missing_scope(m, &principal, &g.scopes)
    {
        auth.deny(
            StatusCode::FORBIDDEN,
            format!("insufficient scope: tool `{tool}` needs scope `{scope}`"),
            PATH,
            &ip,
            Some(principal.subject.clone()),
        )
        .await;
        return insufficient_scope(auth, &principal, &tool, &scope);
    }
    let method = parts.method.clone();
    parts.extensions.insert(principal.clone());
    let resp = next.run(Request::from_parts(parts, body)).await;
    let mut resp = envelope::plain_errors_as_jsonrpc(resp, &id).await;
    // Owned values only across the await (a `Response` is not `Sync`).
    let created = resp
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    track_session(
        auth,
        &method,
        session.as_deref(),
        resp.status(),
        created,
        &principal,
    )
    .await;
    if let Some(d) = rate {
        d.apply(resp.headers_mut());
    }
    resp
}

/// Refuses a browser `Origin` that may not call `/mcp`.
async fn check_origin(auth: &AuthState, req: &Parts, ip: &str) -> Result<(), Response> {
    let Some(origin) = req.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let o = origin.to_str().unwrap_or("");
    if origin_allowed(auth, o) {
        return Ok(());
    }
    let shown: String = o.chars().take(200).collect();
    auth.deny(
        StatusCode::FORBIDDEN,
        format!("origin `{shown}` not allowed"),
        PATH,
        ip,
        None,
    )
    .await;
    Err(json_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this Origin may not call the MCP endpoint",
    ))
}

/// The caller, from the `Authorization: Bearer` header (never the query string).
async fn bearer_principal(auth: &AuthState, req: &Parts, ip: &str) -> Result<Principal, Response> {
    let query_token = req.uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token" || k == "token")
    });
    if query_token {
        auth.deny(
            StatusCode::UNAUTHORIZED,
            "token in the query string (only the Authorization header is accepted)",
            PATH,
            ip,
            None,
        )
        .await;
        return Err(unauthorized(
            auth,
            Some((
                "invalid_request",
                "tokens are accepted only in the Authorization header",
            )),
        ));
    }
    let Some(value) = req.headers.get(header::AUTHORIZATION) else {
        auth.deny(StatusCode::UNAUTHORIZED, "no bearer token", PATH, ip, None)
            .await;
        return Err(unauthorized(auth, None));
    };
    let token = match value.to_str().unwrap_or("").split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => {
            auth.deny(
                StatusCode::UNAUTHORIZED,
                "Authorization header is not a bearer token",
                PATH,
                ip,
                None,
            )
            .await;
            return Err(unauthorized(
                auth,
                Some(("invalid_token", "expected a bearer token")),
            ));
        }
    };
    match authenticate(auth, token).await {
        Ok(p) => Ok(p),
        Err(why) => {
            auth.deny(
                StatusCode::UNAUTHORIZED,
                format!("invalid token: {why}"),
                PATH,
                ip,
                None,
            )
            .await;
            Err(unauthorized(
                auth,
                Some((
                    "invalid_token",
                    "the access token is invalid, expired or revoked",
                )),
            ))
        }
    }
}

/// The `Mcp-Session-Id` a request carries (a value that is not text counts as
/// an id nobody owns).
fn session_id(req: &Parts) -> Option<String> {
    req.headers
        .get(SESSION_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
}

/// Lets only the session's creator use it: anyone else gets rmcp's own 404.
async fn check_session(
    auth: &AuthState,
    id: &str,
    principal: &Principal,
    ip: &str,
    request_id: &Value,
) -> Result<(), Response> {
    let reason = match auth.sessions.check(id, principal).await {
        SessionCheck::Owner => return Ok(()),
        SessionCheck::Foreign => "MCP session belongs to another user or client",
        SessionCheck::Unknown => "unknown MCP session",
    };
    auth.deny(
        StatusCode::NOT_FOUND,
        reason,
        PATH,
        ip,
        Some(principal.subject.clone()),
    )
    .await;
    Err(jsonrpc_error(
        StatusCode::NOT_FOUND,
        request_id,
        envelope::INVALID_REQUEST,
        "Session not found: start a new one with initialize",
    ))
}

/// Binds a session `initialize` just created to its caller; forgets one that
/// was deleted or that rmcp no longer knows.
async fn track_session(
    auth: &AuthState,
    method: &Method,
    sent: Option<&str>,
    status: StatusCode,
    created: Option<String>,
    principal: &Principal,
) {
    match sent {
        None => {
            if let Some(id) = created
                && status.is_success()
            {
                auth.sessions.bind(&id, principal).await;
            }
        }
        Some(id) => {
            let deleted = method == Method::DELETE && status.is_success();
            if deleted || status == StatusCode::NOT_FOUND {
                auth.sessions.unbind(id, deleted).await;
            }
        }
    }
}

/// Counts a POST against the subject's quota.
async fn rate_limit(
    auth: &AuthState,
    req: &Parts,
    principal: &Principal,
    ip: &str,
    id: &Value,
) -> Result<Option<Decision>, Response> {
    let Some(limiter) = &auth.mcp_limit else {
        return Ok(None);
    };
    if req.method != Method::POST {
        return Ok(None);
    }
    let d = match limiter.check(&principal.subject).await {
        Ok(d) => d,
        Err(e) => {
            // Fail closed: without the shared count the limit cannot hold.
            tracing::error!("rate limit: the shared count failed: {e}");
            return Err(jsonrpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                envelope::UNAVAILABLE,
                "the rate limit cannot be checked right now; retry shortly",
            ));
        }
    };
    if d.allowed {
        return Ok(Some(d));
    }
    auth.deny(
        StatusCode::TOO_MANY_REQUESTS,
        "rate limit exceeded",
        PATH,
        ip,
        Some(principal.subject.clone()),
    )
    .await;
    let mut r = jsonrpc_error(
        StatusCode::TOO_MANY_REQUESTS,
        id,
        envelope::RATE_LIMITED,
        "rate limit exceeded; retry later",
    );
    d.apply(r.headers_mut());
    Err(r)
}

/// Reads a POST body (bounded) and checks it is JSON: the body to pass on
/// and the message it holds.
async fn read_message(
    g: &BearerGate,
    body: Body,
    principal: &Principal,
    ip: &str,
) -> Result<(Body, Value), Response> {
    let auth = &g.auth;
    let subject = Some(principal.subject.clone());
    let bytes = match read_body(body, g.max_body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            auth.deny(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                PATH,
                ip,
                subject,
            )
            .await;
            return Err(jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Value::Null,
                envelope::INVALID_REQUEST,
                &format!(
                    "request body too large: at most {} KiB (max_body_kib)",
                    g.max_body >> 10
                ),
            ));
        }
        Err(BodyError::Unreadable) => {
            return Err(jsonrpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                envelope::PARSE_ERROR,
                "unreadable request body",
            ));
        }
    };
    let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
        auth.deny(
            StatusCode::BAD_REQUEST,
            "malformed JSON-RPC body",
            PATH,
            ip,
            subject,
        )
        .await;
        return Err(jsonrpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            envelope::PARSE_ERROR,
            "parse error: the body is not JSON",
        ));
    };
    Ok((Body::from(bytes), message))
}

/// The 403 `insufficient_scope` challenge naming the scopes to ask for.
fn insufficient_scope(
    auth: &AuthState,
    principal: &Principal,
    tool: &str,
    scope: &str,
) -> Response {
    let mut r = json_error(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "the token lacks a scope this tool requires",
    );
    let mut needed: Vec<String> = principal.scopes.clone();
    if !needed.iter().any(|s| s == scope) {
        needed.push(scope.to_owned());
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
    r
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

#[cfg(test)]
#[path = "bearer_props.rs"]
mod props;
