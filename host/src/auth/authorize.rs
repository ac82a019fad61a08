//! `/authorize`: the authorization-code flow with PKCE, and its login page.
//!
//! `GET` validates the request and shows a server-rendered page naming the client
//! and where it will send you; `POST` takes the password. Rules:
//! - An unknown `client_id` or a `redirect_uri` that is not exactly one of the
//!   client's is shown on the page and never redirected (no open redirect).
//! - Everything else wrong (`response_type`, missing or `plain` PKCE, unknown
//!   scope, foreign `resource`) is redirected back with an OAuth error and `state`.
//! - The form carries a CSRF token that names a server-side pending authorization;
//!   it is single use and expires after ten minutes. Each client address holds
//!   a bounded share of the pending forms ([`super::pending`]).
//! - `GET /authorize` is rate limited per client address
//!   ([`super::AUTHORIZE_PER_MINUTE`]; 429 with `Retry-After`), before anything
//!   is looked up or fetched.
//! - Failed logins are throttled per client address ([`super::ratelimit::LoginThrottle`]).
//! - Every page is sent with anti-framing headers and a strict CSP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::rules::{self, html_escape};
use super::store::CodeGrant;
use super::users::LoggedIn;
use super::{AuthState, BodyError, Builtin, parse_form, read_body};
use crate::audit::AuditEvent;

pub use super::pending::FORM_TTL;

/// How long an authorization code stays valid.
pub const CODE_TTL_SECS: i64 = 60;
const MAX_FORM_BYTES: usize = 16 << 10;

/// A validated authorization request waiting for the login form (kept in
/// memory, or as JSON in the shared store).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    client_id: String,
    client_name: Option<String>,
    redirect_uri: String,
    redirect_uri_given: bool,
    state: Option<String>,
    code_challenge: String,
    scopes: Vec<String>,
    resource: String,
}

/// A client as `/authorize` sees it (registered, or from a metadata document).
struct KnownClient {
    client_id: String,
    client_name: Option<String>,
    redirect_uris: Vec<String>,
}

/// How an authorization request is refused: on the page, or back to the client.
enum AuthorizeError {
    /// Shown on the page, never redirected.
    Page(StatusCode, String),
    /// Redirected to the (validated) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// `GET /authorize`
pub async fn show(State(s): State<Arc<AuthState>>, req: Request) -> Response {
    let b = s.builtin.as_ref().expect("route mounted in builtin mode");
    let ip = s.client_ip(req.headers(), req.extensions());
    if let Err(refused) = page_quota(&s, b, &ip).await {
        return refused;
    }
    let params = match parse_form(req.uri().query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return refuse(&s, AuthorizeError::Page(StatusCode::BAD_REQUEST, e), &ip).await,
    };
    let pending = match validate(&s, b, &params).await {
        Ok(p) => p,
        Err(r) => return refuse(&s, r, &ip).await,
    };
    if b.auto_approve && is_loopback_redirect(&pending.redirect_uri) {
        let login = b.credentials.operator_login();
        tracing::info!(client_id = %pending.client_id, "auto-approving a loopback client");
        return approve(&s, b, pending, login, &ip, StatusCode::FOUND).await;
    }
    if !b.credentials.has_operator() && !b.credentials.has_users() {
        return refuse(
            &s,
            AuthorizeError::Page(
                StatusCode::FORBIDDEN,
                "auto-approve only serves clients that redirect to this machine (loopback); \
                 configure a password to log in other clients"
                    .into(),
            ),
            &ip,
        )
        .await;
    }
    let csrf = match new_form(b, &ip, &pending).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    login_page(StatusCode::OK, b, &pending, &csrf, None)
}

/// Stores a login form for `pending`; its CSRF token, or a 503 page when the
/// shared store failed.
async fn new_form(b: &Builtin, ip: &str, pending: &Pending) -> Result<String, Response> {
    b.pending.insert(ip, pending.clone()).await.map_err(|e| {
        tracing::error!("login form not stored: {e}");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The login service is temporarily unavailable. Try again in a moment.",
        )
    })
}

/// Counts a login page against the address's quota; past it, an audited 429
/// page with `Retry-After`.
async fn page_quota(s: &AuthState, b: &Builtin, ip: &str) -> Result<(), Response> {
    let d = b.authorize_pages.check(ip);
    if d.allowed {
        return Ok(());
    }
    let secs = d.reset_secs.max(1);
    s.deny(
        StatusCode::TOO_MANY_REQUESTS,
        format!("authorize: too many login pages from this address (retry in {secs}s)"),
        "/authorize",
        ip,
        None,
    )
    .await;
    let mut r = error_page(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many login requests from your address. Try again in {secs} seconds."),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Err(r)
}

/// `POST /authorize` (the login form)
pub async fn submit(State(s): State<Arc<AuthState>>, req: Request) -> Response {
    let b = s.builtin.as_ref().expect("route mounted in builtin mode");
    let ip = s.client_ip(req.headers(), req.extensions());
    let body = match read_body(req.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return refuse(
                &s,
                AuthorizeError::Page(StatusCode::PAYLOAD_TOO_LARGE, "login form too large".into()),
                &ip,
            )
            .await;
        }
        Err(BodyError::Unreadable) => {
            return error_page(StatusCode::BAD_REQUEST, "Unreadable form.");
        }
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return refuse(&s, AuthorizeError::Page(StatusCode::BAD_REQUEST, e), &ip).await,
    };
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    let Some(pending) = b.pending.take(csrf).await else {
        return refuse(
            &s,
            AuthorizeError::Page(
                StatusCode::BAD_REQUEST,
                "this login form expired or was already used (CSRF token unknown); start the login again from your app"
                    .into(),
            ),
            &ip,
        )
        .await;
    };
    if form.get("action").map(String::as_str) == Some("deny") {
        return refuse(
            &s,
            AuthorizeError::Redirect {
                redirect_uri: pending.redirect_uri.clone(),
                state: pending.state.clone(),
                error: "access_denied",
                description: "the user denied the request".into(),
            },
            &ip,
        )
        .await;
    }
    let user = form.get("username").map(String::as_str).unwrap_or("");
    let subject = (!user.is_empty()).then(|| user.chars().take(64).collect::<String>());
    if let Some(wait) = b.logins.locked(&ip).await {
        s.audit
            .note(AuditEvent::LoginFailed {
                subject: subject.clone(),
                client_id: Some(pending.client_id.clone()),
                ip: ip.clone(),
                reason: format!(
                    "locked out after repeated failures ({}s left)",
                    wait.as_secs().max(1)
                ),
            })
            .await;
        let secs = wait.as_secs().max(1);
        let csrf = match new_form(b, &ip, &pending).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let mut r = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            b,
            &pending,
            &csrf,
            Some(&format!(
                "Too many failed logins from your address. Try again in {secs} seconds."
            )),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let password = form.get("password").map(String::as_str).unwrap_or("");
    match b.credentials.verify(user, password).await {
        Some(login) => {
            b.logins.succeeded(&ip).await;
            approve(&s, b, pending, login, &ip, StatusCode::SEE_OTHER).await
        }
        None => {
            let lock = b.logins.failed(&ip).await;
            s.audit
                .note(AuditEvent::LoginFailed {
                    subject,
                    client_id: Some(pending.client_id.clone()),
                    ip: ip.clone(),
                    reason: match lock {
                        Some(l) => {
                            format!("wrong credentials; address locked out for {}s", l.as_secs())
                        }
                        None => "wrong credentials".into(),
                    },
                })
                .await;
            let csrf = match new_form(b, &ip, &pending).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            login_page(
                StatusCode::UNAUTHORIZED,
                b,
                &pending,
                &csrf,
                Some("Wrong password."),
            )
        }
    }
}

async fn validate(
    s: &AuthState,
    b: &Builtin,
    p: &HashMap<String, String>,
) -> Result<Pending, AuthorizeError> {
    let page = |why: &str| AuthorizeError::Page(StatusCode::BAD_REQUEST, why.to_owned());
    let client_id = p
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| page("client_id is missing"))?;
    let client = known_client(b, client_id).await.map_err(|e| page(&e))?;
    let redirect_uri_given = p.contains_key("redirect_uri");
    let redirect_uri = match p.get("redirect_uri") {
        Some(r) => {
            if !rules::redirect_uri_matches(r, &client.redirect_uris) {
                return Err(page(
                    "redirect_uri is not one of the URIs this client registered",
                ));
            }
            r.clone()
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return Err(page("redirect_uri is missing")),
    };
    let state = p.get("state").cloned();
    let redirect = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description: description.to_owned(),
    };
    if state.as_ref().is_some_and(|st| st.len() > 2048) {
        return Err(redirect(
            "invalid_request",
            "state is longer than 2048 characters",
        ));
    }
    match p.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        None => return Err(redirect("invalid_request", "response_type is missing")),
    }
    let challenge = match p.get("code_challenge") {
        Some(c) => c.clone(),
        None => {
            return Err(redirect(
                "invalid_request",
                "PKCE is required: code_challenge is missing",
            ));
        }
    };
    if p.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err(redirect(
            "invalid_request",
            "PKCE code_challenge_method must be S256 (plain is not accepted)",
        ));
    }
    if !rules::is_s256_challenge(&challenge) {
        return Err(redirect(
            "invalid_request",
            "code_challenge is not a base64url SHA-256 value",
        ));
    }
    let scopes = rules::parse_scope(p.get("scope").map(String::as_str).unwrap_or(""));
    if let Some(bad) = scopes.iter().find(|x| !s.scopes_supported.contains(x)) {
        return Err(redirect("invalid_scope", &format!("unknown scope `{bad}`")));
    }
    let resource = match p.get("resource") {
        Some(r)
            if r.trim_end_matches('/') == s.resource || r.trim_end_matches('/') == s.public_url =>
        {
            s.resource.clone()
        }
        Some(_) => {
            return Err(redirect(
                "invalid_target",
                &format!("this server only issues tokens for {}", s.resource),
            ));
        }
        None => s.resource.clone(),
    };
    Ok(Pending {
        client_id: client.client_id,
        client_name: client.client_name,
        redirect_uri,
        redirect_uri_given,
        state,
        code_challenge: challenge,
        scopes,
        resource,
    })
}

async fn known_client(b: &Builtin, client_id: &str) -> Result<KnownClient, String> {
    if super::cimd::is_metadata_url(client_id) {
        let c = b
            .cimd
            .get(client_id)
            .await
            .map_err(|e| format!("client metadata document refused: {e}"))?;
        return Ok(KnownClient {
            client_id: c.client_id,
            client_name: c.client_name,
            redirect_uris: c.redirect_uris,
        });
    }
    match b.store.client(client_id).await {
        Ok(Some(c)) => Ok(KnownClient {
            client_id: c.client_id,
            client_name: c.client_name,
            redirect_uris: c.redirect_uris,
        }),
        Ok(None) => Err("unknown client_id: this client is not registered here".into()),
        Err(e) => {
            tracing::error!("client lookup failed: {e}");
            Err("the server could not look up the client".into())
        }
    }
}

fn is_loopback_redirect(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| {
        u.scheme() == "http"
            && u.host()
                .is_some_and(|h| crate::config::is_loopback_host(&h))
    })
}

/// Issues a code for `p` to `login` and redirects back to the client.
async fn approve(
    s: &AuthState,
    b: &Builtin,
    p: Pending,
    login: LoggedIn,
    ip: &str,
    status: StatusCode,
) -> Response {
    let mut granted: Vec<String> = if p.scopes.is_empty() {
        vec![s.default_scope().to_owned()]
    } else {
        p.scopes.clone()
    };
    granted.retain(|x| login.allowed_scopes.contains(x));
    if granted.is_empty() {
        return refuse(
            s,
            AuthorizeError::Redirect {
                redirect_uri: p.redirect_uri,
                state: p.state,
                error: "access_denied",
                description: "the user holds none of the requested scopes".into(),
            },
            ip,
        )
        .await;
    }
    let code = super::random_token();
    let grant = CodeGrant {
        client_id: p.client_id.clone(),
        redirect_uri: p.redirect_uri.clone(),
        redirect_uri_given: p.redirect_uri_given,
        code_challenge: p.code_challenge.clone(),
        resource: p.resource.clone(),
        scope: granted.join(" "),
        subject: login.subject.clone(),
        expires_at: super::now_secs() + CODE_TTL_SECS,
    };
    if let Err(e) = b.store.insert_code(&super::sha256_hex(&code), &grant).await {
        tracing::error!("storing an authorization code failed: {e}");
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server could not complete the login.",
        );
    }
    s.audit
        .note(AuditEvent::LoginSucceeded {
            subject: login.subject,
            client_id: p.client_id,
            ip: ip.to_owned(),
        })
        .await;
    let mut params: Vec<(&str, &str)> = vec![("code", &code)];
    if let Some(st) = &p.state {
        params.push(("state", st));
    }
    params.push(("iss", &s.public_url));
    redirect(status, &rules::with_query(&p.redirect_uri, &params))
}

async fn refuse(s: &AuthState, r: AuthorizeError, ip: &str) -> Response {
    match r {
        AuthorizeError::Page(status, why) => {
            s.deny(status, format!("authorize: {why}"), "/authorize", ip, None)
                .await;
            error_page(status, &why)
        }
        AuthorizeError::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            s.deny(
                StatusCode::FOUND,
                format!("authorize: {error}: {description}"),
                "/authorize",
                ip,
                None,
            )
            .await;
            let mut params: Vec<(&str, &str)> =
                vec![("error", error), ("error_description", &description)];
            if let Some(st) = &state {
                params.push(("state", st));
            }
            params.push(("iss", &s.public_url));
            redirect(
                StatusCode::FOUND,
                &rules::with_query(&redirect_uri, &params),
            )
        }
    }
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    page_headers(&mut r);
    r
}

/// The pages' Content-Security-Policy: nothing from elsewhere, no framing, and
/// forms posted only here.
const CSP: &str =
    "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";

fn page_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    super::no_store(h);
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    page_headers(&mut r);
    r
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.3rem}.box{border:1px solid #ccc;border-radius:8px;padding:1.2rem}\
label{display:block;margin:.8rem 0 .2rem}input[type=password],input[type=text]{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1.2rem}.err{color:#a00}.muted{color:#666;font-size:.9rem}code{word-break:break-all}";

fn error_page(status: StatusCode, message: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Stockade: authorization error</title>\
             <style>{STYLE}</style></head><body><div class=box><h1>Authorization failed</h1><p class=err>{}</p>\
             <p class=muted>You can close this page.</p></div></body></html>",
            html_escape(message)
        ),
    )
}

fn login_page(
    status: StatusCode,
    b: &Builtin,
    p: &Pending,
    csrf: &str,
    error: Option<&str>,
) -> Response {
    let name = p.client_name.as_deref().unwrap_or("An unnamed application");
    let scopes = if p.scopes.is_empty() {
        "default access".to_owned()
    } else {
        p.scopes.join(", ")
    };
    let username = if b.credentials.has_users() {
        "<label for=u>User name</label><input id=u type=text name=username autocomplete=username required>"
    } else {
        ""
    };
    let error = error
        .map(|e| format!("<p class=err>{}</p>", html_escape(e)))
        .unwrap_or_default();
    let mut r = html(
        status,
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Stockade: log in</title>\
             <meta name=viewport content=\"width=device-width\"><style>{STYLE}</style></head><body><div class=box>\
             <h1>Log in to Stockade</h1>\
             <p><strong>{name}</strong> wants to use this server's tools ({scopes}).</p>\
             <p class=muted>Client: <code>{client_id}</code><br>After you log in you will be sent to \
             <strong>{host}</strong>.</p>{error}\
             <form method=post action=\"/authorize\">\
             <input type=hidden name=csrf value=\"{csrf}\">{username}\
             <label for=p>Password</label><input id=p type=password name=password autocomplete=current-password required autofocus>\
             <button type=submit name=action value=approve>Log in and allow</button> \
             <button type=submit name=action value=deny formnovalidate>Deny</button>\
             </form></div></body></html>",
            name = html_escape(name),
            scopes = html_escape(&scopes),
            client_id = html_escape(&p.client_id),
            host = html_escape(&rules::redirect_host(&p.redirect_uri)),
            csrf = html_escape(csrf),
        ),
    );
    allow_form_redirect(&mut r, &p.redirect_uri);
    r
}

/// Chromium applies `form-action` to the redirect that answers a form post, so
/// the login page's policy must also name where "Log in and allow" and "Deny"
/// send the browser: the client's validated redirect URI's origin (or, for an
/// app's private-use scheme, the scheme).
fn allow_form_redirect(r: &mut Response, redirect_uri: &str) {
    let Some(source) = rules::csp_source(redirect_uri) else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{CSP} {source}")) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
}
