//! Client replies to server-to-client requests (sampling, elicitation) across
//! hosts. A tool call running on host A asks its client something over A's
//! stream; the client's reply is a new POST, which a load balancer may send to
//! host B. Every host that takes such a reply (a JSON-RPC response in a
//! session) relays it through the shared store (`SharedState::relay_reply`,
//! `NOTIFY stockade_events`); every other host hands it to its own copy of the
//! session, if it has one. The host whose call waits for it resolves the call;
//! on any other host rmcp drops a reply to a request it never sent.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::SessionManager as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::auth::AuthState;
use crate::auth::store::SharedState;

/// Whether `body` is a JSON-RPC response (a reply, not a request or a
/// notification).
fn is_reply(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => {
            !m.contains_key("method")
                && m.contains_key("id")
                && (m.contains_key("result") || m.contains_key("error"))
        }
        _ => false,
    }
}

/// The middleware on `/mcp` (after the bearer gate): relays replies, then lets
/// rmcp take the request as usual.
pub async fn relay_replies(
    State((auth, max_body)): State<(Arc<AuthState>, usize)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(shared) = &auth.shared else {
        return next.run(req).await;
    };
    let session = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(session) = session.filter(|_| req.method() == axum::http::Method::POST) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    // Bounded like every `/mcp` body (the gate has usually read it already).
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(_) => {
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large (max_body_kib)\n",
            )
                .into_response();
        }
    };
    if is_reply(&bytes)
        && let Ok(text) = std::str::from_utf8(&bytes)
        && let Err(e) = shared.relay_reply(&auth.host_id, &session, text).await
    {
        tracing::warn!(%session, "a client reply was not relayed to the other hosts: {e}");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Hands replies other hosts relayed to this host's copy of their session.
pub fn deliver_relayed(
    shared: Arc<dyn SharedState>,
    me: String,
    sessions: Arc<LocalSessionManager>,
) {
    let mut events = shared.events();
    tokio::spawn(async move {
        loop {
            let (from, what) = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} relayed events were missed");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(id) = what
                .strip_prefix("reply ")
                .and_then(|i| i.parse::<i64>().ok())
            else {
                continue;
            };
            if from == me {
                continue;
            }
            let (session, body) = match shared.relayed_reply(id).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("a relayed reply could not be read: {e}");
                    continue;
                }
            };
            let session: rmcp::transport::common::server_side_http::SessionId = session.into();
            if !sessions.has_session(&session).await.unwrap_or(false) {
                continue;
            }
            match serde_json::from_str::<ClientJsonRpcMessage>(&body) {
                Ok(message) => {
                    if let Err(e) = sessions.accept_message(&session, message).await {
                        tracing::debug!(%session, "a relayed reply was not taken: {e}");
                    } else {
                        tracing::debug!(%session, %from, "relayed a client reply from another host");
                    }
                }
                Err(e) => tracing::warn!("a relayed reply is not JSON-RPC: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_responses_are_replies() {
        assert!(super::is_reply(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#));
        assert!(super::is_reply(
            br#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"no"}}"#
        ));
        assert!(!super::is_reply(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call"}"#
        ));
        assert!(!super::is_reply(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        ));
        assert!(!super::is_reply(
            br#"[{"jsonrpc":"2.0","id":3,"result":{}}]"#
        ));
        assert!(!super::is_reply(b"not json"));
    }
}
