//! The HTTP surface: one axum [`Router`] built by [`router`] (no I/O here).
//!
//! - `POST/GET/DELETE /mcp`: MCP over Streamable HTTP (rmcp).
//! - `GET /health`: liveness and plugin counts, without authentication.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::mcp::{Shared, StockadeMcp};

/// What the router needs.
pub struct HttpConfig {
    /// Host names (with or without port) accepted in the `Host` header.
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Cancelled on shutdown: closes every MCP session.
    pub shutdown: CancellationToken,
}

/// Builds the router.
pub fn router(shared: Arc<Shared>, config: HttpConfig) -> Router {
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts)
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_cancellation_token(config.shutdown);
    let factory_shared = shared.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(StockadeMcp::new(factory_shared.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    Router::new()
        .route("/health", get(health))
        .nest_service("/mcp", mcp)
        .with_state(shared)
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
