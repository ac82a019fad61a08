//! `GET /metrics` for Prometheus, on the main listener (with the scrape token)
//! and on its own listener (`prometheus.listen`).
//!
//! - A wrong or missing token is answered 401, audited (`request_denied`), and
//!   throttled per address: past [`FAILURES_PER_MINUTE`] failures a minute an
//!   address gets 429 without a look at its token.
//! - The separate listener on a loopback address answers only requests whose
//!   `Host` names that address (`127.0.0.1:PORT`, `localhost:PORT`,
//!   `[::1]:PORT`): a web page cannot read it through DNS rebinding. A
//!   separate listener reachable from other machines requires the token
//!   (checked at config load, `config::prometheus`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::AuthState;
use crate::auth::ratelimit::AddressLimiter;

/// Failed scrapes one address may make per minute before it is refused
/// without a look.
pub const FAILURES_PER_MINUTE: u32 = 10;

/// What `GET /metrics` checks.
#[derive(Clone)]
pub struct Scrape {
    metrics: crate::metrics::Metrics,
    token: Option<Arc<String>>,
    hosts: Option<Arc<Vec<String>>>,
    auth: Arc<AuthState>,
    failures: Arc<AddressLimiter>,
}

impl Scrape {
    /// On the main listener: the token is required.
    pub fn main(metrics: crate::metrics::Metrics, token: String, auth: Arc<AuthState>) -> Scrape {
        Scrape {
            metrics,
            token: Some(Arc::new(token)),
            hosts: None,
            auth,
            failures: Arc::new(AddressLimiter::per_minute(FAILURES_PER_MINUTE)),
        }
    }

    /// On the separate listener at `addr`: loopback answers its own names
    /// only; any other address requires `token` (config check).
    pub fn separate(
        metrics: crate::metrics::Metrics,
        addr: SocketAddr,
        token: Option<String>,
        auth: Arc<AuthState>,
    ) -> Scrape {
        let hosts = addr.ip().is_loopback().then(|| {
            let port = addr.port();
            Arc::new(vec![
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
                addr.to_string(),
            ])
        });
        // Loopback is checked by name; elsewhere the token decides.
        let token = if hosts.is_some() { None } else { token };
        Scrape {
            metrics,
            token: token.map(Arc::new),
            hosts,
            auth,
            failures: Arc::new(AddressLimiter::per_minute(FAILURES_PER_MINUTE)),
        }
    }

    /// The route, for a router of any state.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new().route("/metrics", get(serve).with_state(self))
    }
}

async fn serve(State(s): State<Scrape>, req: Request) -> Response {
    let ip = s.auth.client_ip(req.headers(), req.extensions());
    if let Some(hosts) = &s.hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !hosts.contains(&host) {
            let shown: String = host.chars().take(100).collect();
            s.auth
                .deny(
                    StatusCode::FORBIDDEN,
                    format!("metrics: Host `{shown}` is not this listener's address"),
                    "/metrics",
                    &ip,
                    None,
                )
                .await;
            return (
                StatusCode::FORBIDDEN,
                "this listener answers requests for its own address only\n",
            )
                .into_response();
        }
    }
    if let Some(token) = &s.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        use subtle::ConstantTimeEq as _;
        if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            if !s.failures.check(&ip).allowed {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "60")],
                    "too many failed scrapes from this address; retry later\n",
                )
                    .into_response();
            }
            s.auth
                .deny(
                    StatusCode::UNAUTHORIZED,
                    "metrics: wrong or missing scrape token",
                    "/metrics",
                    &ip,
                    None,
                )
                .await;
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                "the metrics token (prometheus.token_file) is required\n",
            )
                .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.prometheus(),
    )
        .into_response()
}
