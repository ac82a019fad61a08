//! `POST /token`: the `authorization_code` and `refresh_token` grants.
//!
//! - A code is spent on first presentation, whatever happens next; presenting it
//!   again revokes the family (every token) the first presentation produced.
//! - The code is bound to its client, redirect URI, PKCE challenge and resource;
//!   a mismatch revokes the family too (the code may be in the wrong hands). A
//!   redirect URI named at `/authorize` must be named again here.
//! - Refresh tokens are opaque, stored as hashes, rotated on every use; a spent
//!   refresh token presented again revokes its whole family.
//! - Before a refresh token is spent, its user is looked up again: a user who no
//!   longer exists, or holds none of the scopes asked for, gets `invalid_grant`
//!   and the family is revoked; scopes taken from the user are left out of the
//!   new token. A refresh asking for a scope the family was never granted gets
//!   `invalid_scope` and leaves the presented token usable.
//! - No refresh token outlives its family's absolute lifetime
//!   (`auth.refresh_max_lifetime_days`, counted from the code exchange).
//! - Responses carry `Cache-Control: no-store` and `Pragma: no-cache`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use super::keys::AccessClaims;
use super::store::{CodeGrant, Family, Redeem, Rotate, Rotation};
use super::users::Credentials;
use super::{AuthState, Builtin, no_store, oauth_error, parse_form, rules};
use crate::audit::AuditEvent;

const MAX_FORM_BYTES: usize = 64 << 10;
const PATH: &str = "/token";

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

/// A refused token request: what the audit line says, and the OAuth error the
/// client gets.
struct Denial {
    status: StatusCode,
    error: &'static str,
    reason: String,
    description: String,
    subject: Option<String>,
}

impl Denial {
    fn new(
        status: StatusCode,
        error: &'static str,
        reason: impl Into<String>,
        description: &str,
    ) -> Self {
        Denial {
            status,
            error,
            reason: reason.into(),
            description: description.to_owned(),
            subject: None,
        }
    }

    /// 400 `invalid_request`.
    fn request(reason: impl Into<String>, description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            reason,
            description,
        )
    }

    /// 400 `invalid_grant`.
    fn grant(reason: impl Into<String>, description: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            reason,
            description,
        )
    }

    /// Names the user the refused grant belongs to.
    fn of(mut self, subject: &str) -> Self {
        self.subject = Some(subject.to_owned());
        self
    }
}

/// One `/token` request.
struct Ctx<'a> {
    s: &'a AuthState,
    b: &'a Builtin,
    ip: &'a str,
}

impl Ctx<'_> {
    /// Audits `d`, then answers it.
    async fn refuse(&self, d: Denial) -> Response {
        self.s
            .deny(
                d.status,
                format!("token: {}", d.reason),
                PATH,
                self.ip,
                d.subject,
            )
            .await;
        oauth_error(d.status, d.error, &d.description)
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
            PATH,
            &ip,
        )
        .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let cx = Ctx { s: &s, b, ip: &ip };
    let (form, client) = match form_and_client(&cx, &headers, &body).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let outcome = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => authorization_code(&cx, &form, &client.client_id).await,
        Some("refresh_token") => refresh(&cx, &form, &client.client_id).await,
        Some(other) => Err(cx
            .refuse(Denial::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("unsupported grant_type `{other}`"),
                "supported: authorization_code, refresh_token",
            ))
            .await),
        None => Err(cx
            .refuse(Denial::request(
                "grant_type missing",
                "grant_type is missing",
            ))
            .await),
    };
    outcome.unwrap_or_else(|refused| refused)
}

/// Parses the form and authenticates the client.
async fn form_and_client(
    cx: &Ctx<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HashMap<String, String>, ClientAuth), Response> {
    let form = match parse_form(body) {
        Ok(f) => f,
        Err(e) => return Err(cx.refuse(Denial::request(e.clone(), &e)).await),
    };
    let Some(client) = client_auth(headers, &form) else {
        return Err(cx
            .refuse(Denial::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client_id",
                "client_id is required",
            ))
            .await);
    };
    if client.basic
        && form
            .get("client_id")
            .is_some_and(|fid| fid != &client.client_id)
    {
        return Err(cx
            .refuse(Denial::request(
                "client_id differs between Basic and form",
                "conflicting client_id",
            ))
            .await);
    }
    if let Err(why) = authenticate_client(cx.b, &client).await {
        let mut r = cx
            .refuse(Denial::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!("client authentication failed: {why}"),
                "client authentication failed",
            ))
            .await;
        if client.basic {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stockade\""),
            );
        }
        return Err(r);
    }
    Ok((form, client))
}

/// The `authorization_code` grant: redeem, check the binding, issue.
async fn authorization_code(
    cx: &Ctx<'_>,
    form: &HashMap<String, String>,
    client_id: &str,
) -> Result<Response, Response> {
    let (Some(code), Some(verifier)) = (form.get("code"), form.get("code_verifier")) else {
        return Err(cx
            .refuse(Denial::request(
                "code or code_verifier missing",
                "code and code_verifier are required (PKCE)",
            ))
            .await);
    };
    let family_id = super::random_token();
    let now = super::now_secs();
    let grant = redeem(cx, code, &family_id, now).await?;
    if let Some(why) = code_mismatch(cx.s, form, verifier, &grant, client_id) {
        let _ = cx.b.store.revoke_family(&family_id, why, now).await;
        return Err(cx.refuse(Denial::grant(why, why).of(&grant.subject)).await);
    }
    let family = Family {
        id: family_id,
        client_id: grant.client_id,
        subject: grant.subject,
        scope: grant.scope,
        resource: grant.resource,
        created_at: now,
    };
    let refresh = super::random_token();
    let expires_at = now + cx.b.refresh_ttl.min(cx.b.family_max_lifetime);
    cx.b.store
        .add_refresh(&family.id, &super::sha256_hex(&refresh), expires_at)
        .await
        .map_err(store_failure)?;
    cx.s.audit
        .note(AuditEvent::TokenIssued {
            subject: family.subject.clone(),
            client_id: family.client_id.clone(),
            scope: family.scope.clone(),
            audience: family.resource.clone(),
            family: family.id.clone(),
        })
        .await;
    Ok(token_response(cx.s, cx.b, &family, &family.scope, &refresh))
}

/// Spends the code; a replay is audited (the store revoked its family).
async fn redeem(
    cx: &Ctx<'_>,
    code: &str,
    family_id: &str,
    now: i64,
) -> Result<CodeGrant, Response> {
    let redeemed =
        cx.b.store
            .redeem_code(&super::sha256_hex(code), family_id, now)
            .await
            .map_err(store_failure)?;
    let denial = match redeemed {
        Redeem::Fresh(grant) => return Ok(grant),
        Redeem::Replayed { family, client_id } => {
            audit_replay(
                cx,
                "authorization_code",
                &client_id,
                family,
                "authorization code replayed",
            )
            .await;
            Denial::grant(
                "authorization code replayed",
                "the authorization code was already used",
            )
        }
        Redeem::Expired => Denial::grant(
            "authorization code expired",
            "the authorization code expired",
        ),
        Redeem::Unknown => {
            Denial::grant("unknown authorization code", "unknown authorization code")
        }
    };
    Err(cx.refuse(denial).await)
}

/// Records a detected reuse and the revocation it caused.
async fn audit_replay(
    cx: &Ctx<'_>,
    kind: &str,
    client_id: &str,
    family: Option<String>,
    reason: &str,
) {
    cx.s.audit
        .note(AuditEvent::ReuseDetected {
            kind: kind.into(),
            client_id: Some(client_id.to_owned()),
            family: family.clone(),
            ip: cx.ip.to_owned(),
        })
        .await;
    if family.is_some() {
        cx.s.audit
            .note(AuditEvent::TokenRevoked {
                client_id: Some(client_id.to_owned()),
                family,
                reason: reason.into(),
            })
            .await;
    }
}

/// Why a redeemed code may not be exchanged by this request, if it may not.
fn code_mismatch(
    s: &AuthState,
    form: &HashMap<String, String>,
    verifier: &str,
    grant: &CodeGrant,
    client_id: &str,
) -> Option<&'static str> {
    let redirect_uri = form.get("redirect_uri");
    let resource = form.get("resource").map(|r| r.trim_end_matches('/'));
    if grant.client_id != client_id {
        Some("code issued to another client")
    } else if redirect_uri.is_some_and(|r| r != &grant.redirect_uri) {
        Some("redirect_uri differs from the one at /authorize")
    } else if redirect_uri.is_none() && grant.redirect_uri_given {
        Some("redirect_uri missing (it was given at /authorize)")
    } else if !rules::pkce_s256_matches(verifier, &grant.code_challenge) {
        Some("PKCE code_verifier does not match the code_challenge")
    } else if resource.is_some_and(|r| r != grant.resource && r != s.public_url) {
        Some("resource differs from the one at /authorize")
    } else {
        None
    }
}

/// Why a valid refresh token may not be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefreshBlocked {
    /// The user no longer exists.
    SubjectGone,
    /// The user holds none of the scopes asked for any more.
    ScopesWithdrawn,
    /// The request asked for this scope, which the family was never granted.
    Wider(String),
}

/// The scope a refresh of `family` issues: the one asked for (default: the
/// family's), which must lie within the family's grant, minus the scopes its
/// user no longer holds.
pub(crate) fn refresh_scope(
    family: &Family,
    requested: Option<&str>,
    credentials: &Credentials,
) -> Result<String, RefreshBlocked> {
    let granted = rules::parse_scope(&family.scope);
    let asked = requested
        .map(rules::parse_scope)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| granted.clone());
    let Some(allowed) = credentials.current_scopes(&family.subject) else {
        return Err(RefreshBlocked::SubjectGone);
    };
    if let Some(bad) = asked.iter().find(|x| !granted.contains(x)) {
        return Err(RefreshBlocked::Wider(bad.clone()));
    }
    let scope: Vec<String> = asked.into_iter().filter(|x| allowed.contains(x)).collect();
    if scope.is_empty() {
        return Err(RefreshBlocked::ScopesWithdrawn);
    }
    Ok(scope.join(" "))
}

/// The `refresh_token` grant: check, rotate, issue.
async fn refresh(
    cx: &Ctx<'_>,
    form: &HashMap<String, String>,
    client_id: &str,
) -> Result<Response, Response> {
    let Some(old) = form.get("refresh_token") else {
        return Err(cx
            .refuse(Denial::request(
                "refresh_token missing",
                "refresh_token is required",
            ))
            .await);
    };
    let requested = form.get("scope").map(String::as_str);
    let credentials = &cx.b.credentials;
    let accept = |f: &Family| refresh_scope(f, requested, credentials).is_ok();
    let new = super::random_token();
    let (old_hash, new_hash) = (super::sha256_hex(old), super::sha256_hex(&new));
    let rotation = Rotation {
        old_hash: &old_hash,
        new_hash: &new_hash,
        client_id,
        now: super::now_secs(),
        ttl: cx.b.refresh_ttl,
        max_lifetime: cx.b.family_max_lifetime,
        accept: &accept,
    };
    let rotated =
        cx.b.store
            .rotate_refresh(&rotation)
            .await
            .map_err(store_failure)?;
    let family = match rotated {
        Rotate::Rotated(f) | Rotate::Declined(f) => f,
        refused => return Err(rotation_refused(cx, refused).await),
    };
    let scope = match refresh_scope(&family, requested, credentials) {
        Ok(scope) => scope,
        Err(why) => return Err(refresh_blocked(cx, &family, why).await),
    };
    cx.s.audit
        .note(AuditEvent::TokenRefreshed {
            subject: family.subject.clone(),
            client_id: family.client_id.clone(),
            family: family.id.clone(),
        })
        .await;
    Ok(token_response(cx.s, cx.b, &family, &scope, &new))
}

/// Answers a refresh token the store would not rotate (reuse is audited).
async fn rotation_refused(cx: &Ctx<'_>, outcome: Rotate) -> Response {
    let denial = match outcome {
        Rotate::Reused(f) => {
            audit_replay(
                cx,
                "refresh_token",
                &f.client_id,
                Some(f.id.clone()),
                "refresh token reused",
            )
            .await;
            Denial::grant(
                "refresh token reused; family revoked",
                "the refresh token was already used",
            )
            .of(&f.subject)
        }
        Rotate::Revoked(f) => Denial::grant(
            "refresh token of a revoked family",
            "the refresh token was revoked",
        )
        .of(&f.subject),
        Rotate::Expired(f) => {
            Denial::grant("refresh token expired", "the refresh token expired").of(&f.subject)
        }
        Rotate::WrongClient(f) => Denial::grant(
            "refresh token of another client",
            "the refresh token belongs to another client",
        )
        .of(&f.subject),
        Rotate::Unknown | Rotate::Rotated(_) | Rotate::Declined(_) => {
            Denial::grant("unknown refresh token", "unknown refresh token")
        }
    };
    cx.refuse(denial).await
}

/// Answers a refresh the user's current state forbids. A wider scope leaves the
/// token usable; a removed user, or one without any of the scopes, loses the
/// whole family.
async fn refresh_blocked(cx: &Ctx<'_>, family: &Family, why: RefreshBlocked) -> Response {
    let revoke_because = match &why {
        RefreshBlocked::Wider(bad) => {
            return cx
                .refuse(
                    Denial::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        format!("refresh asked for scope `{bad}` not granted"),
                        "a refresh cannot widen the scope",
                    )
                    .of(&family.subject),
                )
                .await;
        }
        RefreshBlocked::SubjectGone => "the user no longer exists",
        RefreshBlocked::ScopesWithdrawn => "the user no longer holds the granted scopes",
    };
    match cx
        .b
        .store
        .revoke_family(&family.id, revoke_because, super::now_secs())
        .await
    {
        Ok(true) => {
            cx.s.audit
                .note(AuditEvent::TokenRevoked {
                    client_id: Some(family.client_id.clone()),
                    family: Some(family.id.clone()),
                    reason: revoke_because.into(),
                })
                .await
        }
        Ok(false) => {}
        Err(e) => return store_failure(e),
    }
    cx.refuse(
        Denial::grant(
            format!("refresh refused: {revoke_because}; family revoked"),
            "the refresh token was revoked",
        )
        .of(&family.subject),
    )
    .await
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
    let access = b.keys.sign(&claims);
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

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
