//! `POST /token`: the `authorization_code` and `refresh_token` grants.
//!
//! - A code is spent on first presentation, whatever happens next; presenting it
//!   again revokes the family (every token) the first presentation produced.
//! - The code is bound to its client, redirect URI, PKCE challenge and resource;
//!   a mismatch revokes the family too (the code may be in the wrong hands).
//! - Refresh tokens are opaque, stored as hashes, rotated on every use; a spent
//!   refresh token presented again revokes its whole family.
//! - Responses carry `Cache-Control: no-store` and `Pragma: no-cache`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use super::keys::AccessClaims;
use super::store::{Family, Redeem, Rotate};
use super::{AuthState, Builtin, no_store, oauth_error, parse_form, rules};
use crate::audit::AuditEvent;

const MAX_FORM_BYTES: usize = 64 << 10;

/// A request's client authentication.
pub(crate) struct ClientAuth {
    /// The client id.
    pub client_id: String,
    /// The secret, when one was sent.
    pub secret: Option<String>,
    /// Whether HTTP Basic was used (errors then carry a `WWW-Authenticate`).
    pub basic: bool,
}

/// Reads `client_id` (+ secret) from HTTP Basic or the form.
pub(crate) fn client_auth(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<ClientAuth> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b64) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some(ClientAuth {
            client_id: dec(id)?,
            secret: dec(secret),
            basic: true,
        });
    }
    let client_id = form.get("client_id")?.clone();
    Some(ClientAuth {
        client_id,
        secret: form.get("client_secret").cloned(),
        basic: false,
    })
}

/// Checks a client's credentials: public clients need none, confidential ones
/// their secret. `Ok(())` or the reason.
pub(crate) async fn authenticate_client(b: &Builtin, auth: &ClientAuth) -> Result<(), String> {
    if super::cimd::is_metadata_url(&auth.client_id) {
        return match auth.secret {
            None => Ok(()),
            Some(_) => Err("metadata-document clients are public: no secret".into()),
        };
    }
    let client = match b.store.client(&auth.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err("unknown client".into()),
        Err(e) => return Err(format!("client lookup failed: {e}")),
    };
    match (&client.secret_hash, &auth.secret) {
        (None, _) => Ok(()),
        (Some(expected), Some(got)) if rules::hashes_equal(expected, &super::sha256_hex(got)) => {
            Ok(())
        }
        (Some(_), Some(_)) => Err("wrong client secret".into()),
        (Some(_), None) => Err("client secret missing".into()),
    }
}

/// `POST /token`
pub async fn token(State(s): State<Arc<AuthState>>, req: Request) -> Response {
    let b = s.builtin.as_ref().expect("route mounted in builtin mode");
    let ip = s.client_ip(req.headers(), req.extensions());
    let headers = req.headers().clone();
    let body = match s
        .read_oauth_body(
            req.into_body(),
            MAX_FORM_BYTES,
            "token: body too large",
            "/token",
            &ip,
        )
        .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let deny = |status: StatusCode, reason: String, subject: Option<String>| {
        let s = s.clone();
        let ip = ip.clone();
        async move {
            s.deny(status, format!("token: {reason}"), "/token", &ip, subject)
                .await
        }
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => {
            deny(StatusCode::BAD_REQUEST, e.clone(), None).await;
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e);
        }
    };
    let Some(client) = client_auth(&headers, &form) else {
        deny(StatusCode::UNAUTHORIZED, "no client_id".into(), None).await;
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is required",
        );
    };
    if let Some(fid) = form.get("client_id")
        && client.basic
        && fid != &client.client_id
    {
        deny(
            StatusCode::BAD_REQUEST,
            "client_id differs between Basic and form".into(),
            None,
        )
        .await;
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "conflicting client_id",
        );
    }
    if let Err(why) = authenticate_client(b, &client).await {
        deny(
            StatusCode::UNAUTHORIZED,
            format!("client authentication failed: {why}"),
            None,
        )
        .await;
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        if client.basic {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stockade\""),
            );
        }
        return r;
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            authorization_code(&s, b, &form, &client.client_id, &ip).await
        }
        Some("refresh_token") => refresh(&s, b, &form, &client.client_id, &ip).await,
        Some(other) => {
            deny(
                StatusCode::BAD_REQUEST,
                format!("unsupported grant_type `{other}`"),
                None,
            )
            .await;
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: authorization_code, refresh_token",
            )
        }
        None => {
            deny(StatusCode::BAD_REQUEST, "grant_type missing".into(), None).await;
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            )
        }
    }
}

async fn authorization_code(
    s: &AuthState,
    b: &Builtin,
    form: &HashMap<String, String>,
    client_id: &str,
    ip: &str,
) -> Response {
    let path = "/token";
    let (Some(code), Some(verifier)) = (form.get("code"), form.get("code_verifier")) else {
        s.deny(
            StatusCode::BAD_REQUEST,
            "token: code or code_verifier missing",
            path,
            ip,
            None,
        )
        .await;
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code and code_verifier are required (PKCE)",
        );
    };
    let family_id = super::random_token();
    let now = super::now_secs();
    let grant = match b
        .store
        .redeem_code(&super::sha256_hex(code), &family_id, now)
        .await
    {
        Ok(Redeem::Fresh(g)) => g,
        Ok(Redeem::Replayed {
            family,
            client_id: owner,
        }) => {
            s.audit
                .note(AuditEvent::ReuseDetected {
                    kind: "authorization_code".into(),
                    client_id: Some(owner.clone()),
                    family: family.clone(),
                    ip: ip.to_owned(),
                })
                .await;
            if family.is_some() {
                s.audit
                    .note(AuditEvent::TokenRevoked {
                        client_id: Some(owner),
                        family: family.clone(),
                        reason: "authorization code replayed".into(),
                    })
                    .await;
            }
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: authorization code replayed",
                path,
                ip,
                None,
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization code was already used",
            );
        }
        Ok(Redeem::Expired) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: authorization code expired",
                path,
                ip,
                None,
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization code expired",
            );
        }
        Ok(Redeem::Unknown) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: unknown authorization code",
                path,
                ip,
                None,
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown authorization code",
            );
        }
        Err(e) => return store_failure(e),
    };
    let mismatch = if grant.client_id != client_id {
        Some("code issued to another client")
    } else if form
        .get("redirect_uri")
        .is_some_and(|r| r != &grant.redirect_uri)
    {
        Some("redirect_uri differs from the one at /authorize")
    } else if !rules::pkce_s256_matches(verifier, &grant.code_challenge) {
        Some("PKCE code_verifier does not match the code_challenge")
    } else if form.get("resource").is_some_and(|r| {
        r.trim_end_matches('/') != grant.resource && r.trim_end_matches('/') != s.public_url
    }) {
        Some("resource differs from the one at /authorize")
    } else {
        None
    };
    if let Some(why) = mismatch {
        let _ = b.store.revoke_family(&family_id, why, now).await;
        s.deny(
            StatusCode::BAD_REQUEST,
            format!("token: {why}"),
            path,
            ip,
            Some(grant.subject.clone()),
        )
        .await;
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    }
    let family = Family {
        id: family_id,
        client_id: grant.client_id,
        subject: grant.subject,
        scope: grant.scope,
        resource: grant.resource,
    };
    let refresh = super::random_token();
    if let Err(e) = b
        .store
        .add_refresh(
            &family.id,
            &super::sha256_hex(&refresh),
            now + b.refresh_ttl,
        )
        .await
    {
        return store_failure(e);
    }
    s.audit
        .note(AuditEvent::TokenIssued {
            subject: family.subject.clone(),
            client_id: family.client_id.clone(),
            scope: family.scope.clone(),
            audience: family.resource.clone(),
            family: family.id.clone(),
        })
        .await;
    token_response(s, b, &family, &family.scope, &refresh)
}

async fn refresh(
    s: &AuthState,
    b: &Builtin,
    form: &HashMap<String, String>,
    client_id: &str,
    ip: &str,
) -> Response {
    let path = "/token";
    let Some(old) = form.get("refresh_token") else {
        s.deny(
            StatusCode::BAD_REQUEST,
            "token: refresh_token missing",
            path,
            ip,
            None,
        )
        .await;
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required",
        );
    };
    let new = super::random_token();
    let now = super::now_secs();
    let rotated = b
        .store
        .rotate_refresh(
            &super::sha256_hex(old),
            &super::sha256_hex(&new),
            client_id,
            now,
            now + b.refresh_ttl,
        )
        .await;
    let family = match rotated {
        Ok(Rotate::Rotated(f)) => f,
        Ok(Rotate::Reused(f)) => {
            s.audit
                .note(AuditEvent::ReuseDetected {
                    kind: "refresh_token".into(),
                    client_id: Some(f.client_id.clone()),
                    family: Some(f.id.clone()),
                    ip: ip.to_owned(),
                })
                .await;
            s.audit
                .note(AuditEvent::TokenRevoked {
                    client_id: Some(f.client_id.clone()),
                    family: Some(f.id.clone()),
                    reason: "refresh token reused".into(),
                })
                .await;
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: refresh token reused; family revoked",
                path,
                ip,
                Some(f.subject),
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token was already used",
            );
        }
        Ok(Rotate::Revoked(f)) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: refresh token of a revoked family",
                path,
                ip,
                Some(f.subject),
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token was revoked",
            );
        }
        Ok(Rotate::Expired(f)) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: refresh token expired",
                path,
                ip,
                Some(f.subject),
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token expired",
            );
        }
        Ok(Rotate::WrongClient(f)) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: refresh token of another client",
                path,
                ip,
                Some(f.subject),
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token belongs to another client",
            );
        }
        Ok(Rotate::Unknown) => {
            s.deny(
                StatusCode::BAD_REQUEST,
                "token: unknown refresh token",
                path,
                ip,
                None,
            )
            .await;
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown refresh token",
            );
        }
        Err(e) => return store_failure(e),
    };
    // A refresh may narrow the scope, never widen it (RFC 6749 §6).
    let scope = match form.get("scope") {
        Some(requested) => {
            let granted = rules::parse_scope(&family.scope);
            let req = rules::parse_scope(requested);
            if let Some(bad) = req.iter().find(|x| !granted.contains(x)) {
                s.deny(
                    StatusCode::BAD_REQUEST,
                    format!("token: refresh asked for scope `{bad}` not granted"),
                    path,
                    ip,
                    Some(family.subject.clone()),
                )
                .await;
                // The presented token is spent; its successor stays usable.
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a refresh cannot widen the scope",
                );
            }
            if req.is_empty() {
                family.scope.clone()
            } else {
                req.join(" ")
            }
        }
        None => family.scope.clone(),
    };
    s.audit
        .note(AuditEvent::TokenRefreshed {
            subject: family.subject.clone(),
            client_id: family.client_id.clone(),
            family: family.id.clone(),
        })
        .await;
    token_response(s, b, &family, &scope, &new)
}

fn token_response(
    s: &AuthState,
    b: &Builtin,
    family: &Family,
    scope: &str,
    refresh: &str,
) -> Response {
    let now = super::now_secs() as u64;
    let claims = AccessClaims {
        iss: s.public_url.clone(),
        sub: family.subject.clone(),
        aud: family.resource.clone(),
        exp: now + b.access_ttl,
        iat: now,
        jti: super::random_token(),
        client_id: family.client_id.clone(),
        scope: scope.to_owned(),
        fam: family.id.clone(),
    };
    let access = b.key.sign(&claims);
    let mut r = axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": b.access_ttl,
        "refresh_token": refresh,
        "scope": scope,
    }))
    .into_response();
    no_store(r.headers_mut());
    r
}

fn store_failure(e: super::store::StoreError) -> Response {
    tracing::error!("token endpoint: {e}");
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the server could not complete the request",
    )
}
