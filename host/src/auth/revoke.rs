//! `POST /revoke` (RFC 7009). Revoking either token of an authorization revokes
//! its whole family: the refresh token and every access token issued from it
//! (the gate checks the family of each access token). Unknown or malformed
//! tokens still get 200, so the endpoint tells nothing about which tokens exist.
//! A confidential client's token is revoked only by that client authenticated
//! with its secret (RFC 7009 §2.1); a request naming no client gets 401
//! `invalid_client` for it. Failed HTTP Basic authentication is answered with
//! a `WWW-Authenticate` challenge (RFC 6749 §5.2).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::token::{authenticate_client, client_auth};
use super::{AuthState, no_store, oauth_error, parse_form};
use crate::audit::AuditEvent;

const MAX_FORM_BYTES: usize = 16 << 10;

/// `POST /revoke`
pub async fn revoke(State(s): State<Arc<AuthState>>, req: Request) -> Response {
    let b = s.builtin.as_ref().expect("route mounted in builtin mode");
    let ip = s.client_ip(req.headers(), req.extensions());
    let path = "/revoke";
    let headers = req.headers().clone();
    let body = match s
        .read_oauth_body(
            req.into_body(),
            MAX_FORM_BYTES,
            "revoke: body too large",
            path,
            &ip,
        )
        .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                format!("revoke: {e}"),
                path,
                &ip,
                None,
            )
            .await;
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e);
        }
    };
    let Some(token) = form.get("token") else {
        s.deny(
            StatusCode::BAD_REQUEST,
            "revoke: token missing",
            path,
            &ip,
            None,
        )
        .await;
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    // Client authentication: required for confidential clients; a public client
    // identifies itself with client_id.
    let client = client_auth(&headers, &form);
    if let Some(c) = &client
        && let Err(why) = authenticate_client(b, c).await
    {
        return client_refused(&s, &why, c.basic, &ip).await;
    }
    let client_id = client.map(|c| c.client_id);
    let now = super::now_secs();
    // A refresh token?
    let family = match b.store.family_of_refresh(&super::sha256_hex(token)).await {
        Ok(Some(f)) => Some(f),
        Ok(None) => None,
        Err(e) => {
            return store_unavailable(e);
        }
    };
    let target = match family {
        Some(f) => Some((f.id, f.client_id)),
        // An access token we issued (expired ones too: their family can
        // still be revoked)?
        None => expired_claims(b, token, &s.public_url, &s.resource)
            .await
            .map(|c| (c.fam, c.client_id)),
    };
    if let Some((_, owner)) = &target
        && client_id.is_none()
    {
        // A confidential client's token: only that client, authenticated.
        match b.store.client(owner).await {
            Ok(Some(c)) if c.secret_hash.is_some() => {
                return client_refused(&s, "client secret missing", false, &ip).await;
            }
            Ok(_) => {}
            Err(e) => {
                return store_unavailable(e);
            }
        }
    }
    if let Some((fam, owner)) = target {
        // RFC 7009 §2.1: a client may only revoke its own tokens.
        if client_id.as_deref().is_some_and(|c| c != owner) {
            s.deny(
                StatusCode::OK,
                "revoke: token belongs to another client (ignored)",
                path,
                &ip,
                None,
            )
            .await;
        } else {
            match b
                .store
                .revoke_family(&fam, "revoked by the client", now)
                .await
            {
                Ok(true) => {
                    s.audit
                        .note(AuditEvent::TokenRevoked {
                            client_id: Some(owner),
                            family: Some(fam),
                            reason: "revoked at /revoke".into(),
                        })
                        .await
                }
                Ok(false) => {}
                Err(e) => tracing::error!("revoke: {e}"),
            }
        }
    } else {
        s.audit
            .note(AuditEvent::TokenRevoked {
                client_id,
                family: None,
                reason: "unknown token presented at /revoke (no effect)".into(),
            })
            .await;
    }
    let mut r = StatusCode::OK.into_response();
    no_store(r.headers_mut());
    r
}

/// Audits a failed client authentication and answers 401 `invalid_client`,
/// with a Basic challenge when the client tried HTTP Basic.
/// The answer when the store cannot be read: try again.
fn store_unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!("revoke: {e}");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again",
    )
}

async fn client_refused(s: &AuthState, why: &str, basic: bool, ip: &str) -> Response {
    s.deny(
        StatusCode::UNAUTHORIZED,
        format!("revoke: client authentication failed: {why}"),
        "/revoke",
        ip,
        None,
    )
    .await;
    let mut r = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"stockade\""),
        );
    }
    r
}

async fn expired_claims(
    b: &super::Builtin,
    token: &str,
    iss: &str,
    aud: &str,
) -> Option<super::keys::AccessClaims> {
    b.keys.verify_ignoring_expiry(token, iss, aud).await.ok()
}
