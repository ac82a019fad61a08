//! The HTTP surface: one axum [`Router`] built by [`router`] (no I/O here).
//!
//! - `POST/GET/DELETE /mcp`: MCP over Streamable HTTP (rmcp), behind the bearer
//!   gate ([`crate::auth::bearer::gate`]).
//! - The OAuth endpoints and discovery documents of [`crate::auth::routes`].
//! - `GET /health`: liveness and plugin counts, without authentication.
//! - `GET /`: a small page saying what this is and the URL to give a client.
//!
//! Layers, outermost first (written once, here): sensitive headers marked
//! (`Authorization`, `Cookie`: never logged) → tracing → the guard → routes.
//! Every handler that reads a body bounds it again (chunked bodies declare no
//! length).
//!
//! The guard: 503 while the audit log cannot be written (nothing runs that could
//! not be recorded); Host allow-list against DNS rebinding (403); declared bodies
//! over the limit (413); a body that cannot be read (broken connection, bad
//! chunked encoding), whichever handler read it, is audited with the status its
//! handler answered. Every refusal is audited, and a request during which any
//! audit write failed is answered 503 instead of its handler's answer (the audit
//! log fails closed; see [`crate::audit::track_failures`]).

mod coalesce;
mod disconnect;
pub mod drain;
mod home;
pub mod listen;
mod relay;
#[doc(hidden)]
pub use relay::reply_id as fuzz_reply_id;
pub mod scrape;
mod session_store;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::audit::Audit;
use crate::auth::bearer::{BearerGate, gate};
use crate::auth::{AuthState, ScopeResolver};
use crate::mcp::{Shared, StockadeMcp};

/// What the router needs.
pub struct HttpConfig {
    /// Host names (without port) accepted in the `Host` header: the public URL's
    /// host and the loopback names.
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Cancelled once in-flight requests are done at shutdown: closes every
    /// MCP session.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown begins (`/ready` answers 503 from then on).
    pub draining: CancellationToken,
    /// The `/mcp` POST requests being answered.
    pub in_flight: drain::InFlight,
    /// Serve `/metrics` here to requests bearing this token (`None`: not here).
    pub metrics_token: Option<String>,
}

impl HttpConfig {
    /// The host names to accept for `public_url`: its host plus loopback.
    pub fn hosts_for(public_url: &str) -> Vec<String> {
        let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Some(h) = url::Url::parse(public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            let h = h.trim_matches(['[', ']']).to_ascii_lowercase();
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        hosts
    }
}

#[derive(Clone)]
struct Guard {
    audit: Audit,
    auth: Arc<AuthState>,
    hosts: Arc<Vec<String>>,
    max_body: usize,
}

/// How long a session keeps a finished answer for a client resuming its stream.
const COMPLETED_ANSWER_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds the router.
pub fn router(
    shared: Arc<Shared>,
    auth: Arc<AuthState>,
    scopes: ScopeResolver,
    config: HttpConfig,
) -> Router {
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts.clone())
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_cancellation_token(config.shutdown.clone());
    if !auth.allowed_origins.is_empty() {
        mcp_config = mcp_config.with_allowed_origins(auth.allowed_origins.clone());
    }
    if let Some(shared) = &auth.shared {
        mcp_config.session_store = Some(Arc::new(session_store::SharedSessions(shared.clone())));
    }
    let factory_shared = shared.clone();
    let mut sessions = LocalSessionManager::default();
    // rmcp keeps every finished answer of a session for a late resume
    // (`Last-Event-ID`), 60 s by default: at thousands of calls per second that
    // is hundreds of thousands of answers held in memory, and an idle session
    // keeps its own until it expires. Answers that went out in one piece
    // (`coalesce`) are never resumed; a client whose longer stream broke
    // reconnects within seconds.
    sessions.session_config.completed_cache_ttl = COMPLETED_ANSWER_TTL;
    let sessions = Arc::new(sessions);
    if let Some(shared) = &auth.shared {
        relay::deliver_relayed(shared.clone(), auth.host_id.clone(), sessions.clone());
    }
    let mcp = StreamableHttpService::new(
        move || Ok(StockadeMcp::new(factory_shared.clone())),
        sessions,
        mcp_config,
    );
    let gate_state = BearerGate {
        auth: auth.clone(),
        scopes,
        max_body: config.max_body_bytes,
    };
    let mcp_routes = Router::new()
        .nest_service("/mcp", mcp)
        .route_layer(from_fn_with_state(
            (auth.clone(), config.max_body_bytes),
            relay::relay_replies,
        ))
        .route_layer(axum::middleware::from_fn(coalesce::one_piece))
        .route_layer(from_fn_with_state(gate_state, gate))
        .route_layer(from_fn_with_state(
            config.in_flight.clone(),
            disconnect::cancel_on_disconnect,
        ))
        .route_layer(axum::middleware::from_fn(disconnect::delete_answers_ok));
    let guard = Guard {
        audit: shared.audit.clone(),
        auth: auth.clone(),
        hosts: Arc::new(config.allowed_hosts),
        max_body: config.max_body_bytes,
    };
    let public_url = auth.public_url.clone();
    let scrape = config
        .metrics_token
        .map(|token| scrape::Scrape::main(shared.metrics.clone(), token, auth.clone()).router());
    let readiness = Readiness {
        shared: shared.clone(),
        store: watch_store(auth.clone(), config.shutdown.clone()),
        draining: config.draining.clone(),
    };
    let mut routes = Router::new();
    if let Some(scrape) = scrape {
        routes = routes.merge(scrape);
    }
    routes
        .route("/", get(move || async move { home::page(&public_url) }))
        .route("/ready", get(move || ready(readiness.clone())))
        .route("/health", get(health))
        .with_state(shared)
        .merge(crate::auth::routes(auth))
        .merge(mcp_routes)
        .layer(from_fn_with_state(guard, guard_layer))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static("x-api-key"),
        ]))
}

/// The host name of an authority (`host[:port]`, `[v6]:port`), lowercased.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        a.rsplit_once(':').map_or(a, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

async fn guard_layer(State(g): State<Guard>, req: Request, next: Next) -> Response {
    // The probes say what the host can do, and decide nothing to audit:
    // `/health` stays 200 while the process lives, and `/ready` answers 503
    // naming the audit log itself.
    let probe = matches!(req.uri().path(), "/health" | "/ready");
    if !probe && !g.audit.is_available() {
        return audit_unavailable();
    }
    let (response, audit_failed) = crate::audit::track_failures(guard(&g, req, next)).await;
    if audit_failed {
        tracing::error!(
            "answering 503 instead of {}: a decision of this request could not be audited",
            response.status()
        );
        return audit_unavailable();
    }
    response
}

/// 503 while the audit log cannot be written.
fn audit_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({
            "error": "temporarily_unavailable",
            "error_description": "the audit log cannot be written; requests are refused until it can"
        })),
    )
        .into_response()
}

/// A body that notes its first read error in `failed`.
fn watch_body(body: Body, failed: Arc<OnceLock<String>>) -> Body {
    use http_body_util::BodyExt;
    Body::new(body.map_err(move |e| {
        let _ = failed.set(e.to_string());
        e
    }))
}

async fn guard(g: &Guard, req: Request, next: Next) -> Response {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let host_ok = authority
        .as_deref()
        .map(host_name)
        .is_some_and(|h| g.hosts.contains(&h));
    if !host_ok {
        let ip = g.auth.client_ip(req.headers(), req.extensions());
        let shown: String = authority.unwrap_or_default().chars().take(100).collect();
        g.auth
            .deny(
                StatusCode::FORBIDDEN,
                format!("Host `{shown}` not allowed (DNS rebinding protection)"),
                req.uri().path(),
                &ip,
                None,
            )
            .await;
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "forbidden", "error_description": "unknown Host"})),
        )
            .into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > g.max_body as u64) {
        let ip = g.auth.client_ip(req.headers(), req.extensions());
        g.auth
            .deny(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body of {} bytes over the {} byte limit",
                    declared.unwrap_or(0),
                    g.max_body
                ),
                req.uri().path(),
                &ip,
                None,
            )
            .await;
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(
                json!({"error": "invalid_request", "error_description": "request body too large"}),
            ),
        )
            .into_response();
    }
    let ip = g.auth.client_ip(req.headers(), req.extensions());
    let path = req.uri().path().to_owned();
    let failed = Arc::new(OnceLock::new());
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, watch_body(body, failed.clone()));
    let response = next.run(req).await;
    if let Some(e) = failed.get() {
        let shown: String = e.chars().take(200).collect();
        g.auth
            .deny(
                response.status(),
                format!("unreadable request body: {shown}"),
                &path,
                &ip,
                None,
            )
            .await;
    }
    response
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let snapshot = shared.catalog.snapshot();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": snapshot.plugins.len(),
        "tools": snapshot.tools.len(),
        "refused": snapshot.refused.len(),
    }))
}

/// The router of the separate Prometheus listener (`prometheus.listen`) at
/// `addr`: `GET /metrics` (see [`scrape`]).
pub fn metrics_router(
    metrics: crate::metrics::Metrics,
    addr: std::net::SocketAddr,
    token: Option<String>,
    auth: Arc<AuthState>,
) -> Router {
    scrape::Scrape::separate(metrics, addr, token, auth).router()
}

/// What `/ready` looks at.
#[derive(Clone)]
struct Readiness {
    shared: Arc<Shared>,
    /// The store's last known health: `None` while it answers.
    store: tokio::sync::watch::Receiver<Option<String>>,
    draining: CancellationToken,
}

/// How often the store is asked whether it answers, for `/ready`.
const STORE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the store may take to answer before it counts as down.
const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The store's health as last checked: a task asks the store (the auth store,
/// else the shared one) every [`STORE_CHECK_EVERY`] until `stop`, giving up on
/// an answer after [`STORE_CHECK_TIMEOUT`]. A probe reads the last result, so
/// it neither waits on a database that hangs nor adds a query per probe.
fn watch_store(
    auth: Arc<AuthState>,
    stop: CancellationToken,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let which = if auth.builtin.is_some() {
        "the auth store"
    } else if auth.shared.is_some() {
        "the shared store"
    } else {
        return rx;
    };
    tokio::spawn(async move {
        loop {
            let asked = async {
                if let Some(b) = &auth.builtin {
                    b.store
                        .family_active("readiness-probe", "", "")
                        .await
                        .map(drop)
                } else if let Some(s) = &auth.shared {
                    s.session_owner("readiness-probe").await.map(drop)
                } else {
                    Ok(())
                }
            };
            let problem = match tokio::time::timeout(STORE_CHECK_TIMEOUT, asked).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{which} does not answer: {e}")),
                Err(_) => Some(format!(
                    "{which} does not answer: no answer within {} s",
                    STORE_CHECK_TIMEOUT.as_secs()
                )),
            };
            tx.send_if_modified(|last| {
                let changed = *last != problem;
                if changed {
                    match &problem {
                        Some(p) => tracing::warn!("not ready: {p}"),
                        None => tracing::info!("ready again: {which} answers"),
                    }
                    *last = problem;
                }
                changed
            });
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(STORE_CHECK_EVERY) => {}
            }
        }
    });
    rx
}

/// `GET /ready`, for load balancers: 200 while this host can serve (the audit
/// log takes writes, the store answered its last check, not shutting down),
/// else 503 with the reasons. `/health` stays 200 while the process lives.
async fn ready(r: Readiness) -> Response {
    let mut problems: Vec<String> = Vec::new();
    if r.draining.is_cancelled() {
        problems.push("shutting down".into());
    }
    if !r.shared.audit.is_available() {
        problems.push("the audit log cannot be written".into());
    }
    if let Some(p) = r.store.borrow().clone() {
        problems.push(p);
    }
    let snapshot = r.shared.catalog.snapshot();
    let body = json!({
        "status": if problems.is_empty() { "ready" } else { "unavailable" },
        "problems": problems,
        "plugins": snapshot.plugins.len(),
    });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests;
