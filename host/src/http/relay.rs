//! Client replies to server-to-client requests (sampling, elicitation) across
//! hosts. A tool call running on host A asks its client something over A's
//! stream and records the request as pending in the shared store
//! (`SharedState::expect_reply`); the client's reply is a new POST, which a
//! load balancer may send to host B. B relays it through the store
//! (`SharedState::relay_reply`, `NOTIFY stockade_events`) to A alone, and A
//! hands it to its session, which resolves the call.
//!
//! The relay is no open write channel: only a reply to a request some other
//! host waits for is stored (once: the pending record is taken with it), at
//! most [`MAX_RELAYED_REPLY`] bytes; anything else is counted
//! (`stockade_shared_store_refusals_total`) and audited as a refusal, and
//! rmcp takes it as it would on a single host (it drops a reply to a request
//! it never sent). Replies are delivered once (taken from the store), and a
//! host that missed notifications collects what is addressed to it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::SessionManager as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::auth::store::{Relay, SharedState};
use crate::auth::{AuthState, Principal};

/// The most bytes of one reply relayed through the store.
pub const MAX_RELAYED_REPLY: usize = 1 << 20;

/// The id (as JSON text) of `body` if it is a JSON-RPC response (a reply, not
/// a request or a notification). The id is read as rmcp reads it and written
/// as the waiting host recorded it (`mcp/link.rs`), so `3.0`, `3e0` and `3`
/// name the same request, as they do to rmcp.
pub fn reply_id(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m))
            if !m.contains_key("method")
                && (m.contains_key("result") || m.contains_key("error")) =>
        {
            let id = m.get("id").filter(|id| id.is_string() || id.is_number())?;
            let id = serde_json::from_value::<rmcp::model::RequestId>(id.clone()).ok()?;
            serde_json::to_string(&id).ok()
        }
        _ => None,
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
    if let Some(id) = reply_id(&bytes) {
        let refused = if bytes.len() > MAX_RELAYED_REPLY {
            Some((
                "oversized_reply",
                format!(
                    "client reply of {} bytes is over the {MAX_RELAYED_REPLY}-byte relay limit",
                    bytes.len()
                ),
            ))
        } else {
            let text = String::from_utf8_lossy(&bytes);
            match relay_soon(shared.as_ref(), &auth.host_id, &session, &id, &text).await {
                Ok(Relay::Relayed | Relay::Local) => None,
                Ok(Relay::NotPending) => Some((
                    "unsolicited_reply",
                    "client reply to no pending server request".to_owned(),
                )),
                Err(e) => {
                    tracing::warn!(%session, "a client reply was not relayed to the other hosts: {e}");
                    None
                }
            }
        };
        if let Some((what, reason)) = refused {
            crate::metrics::prom::global().shared_refusal(what);
            let ip = auth.client_ip(&parts.headers, &parts.extensions);
            let subject = parts
                .extensions
                .get::<Principal>()
                .map(|p| p.subject.clone());
            auth.deny(
                axum::http::StatusCode::ACCEPTED,
                reason,
                "/mcp",
                &ip,
                subject,
            )
            .await;
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Relays a reply; a reply that finds no pending request is tried again
/// twice, 50 ms apart: the host that sent the request records it just after
/// sending, and a quick client may answer through another host first.
async fn relay_soon(
    shared: &dyn SharedState,
    me: &str,
    session: &str,
    id: &str,
    body: &str,
) -> Result<Relay, crate::auth::store::StoreError> {
    let mut tries = 0;
    loop {
        let r = shared.relay_reply(me, session, id, body).await?;
        tries += 1;
        if r != Relay::NotPending || tries == 3 {
            return Ok(r);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Hands `body`, a reply relayed to this host, to its copy of `session`.
async fn deliver(sessions: &LocalSessionManager, session: String, body: String, what: &str) {
    let session: rmcp::transport::common::server_side_http::SessionId = session.into();
    if !sessions.has_session(&session).await.unwrap_or(false) {
        return;
    }
    match serde_json::from_str::<ClientJsonRpcMessage>(&body) {
        Ok(message) => {
            if let Err(e) = sessions.accept_message(&session, message).await {
                tracing::debug!(%session, "a relayed reply was not taken: {e}");
            } else {
                tracing::debug!(%session, "relayed a client reply {what}");
            }
        }
        Err(e) => tracing::warn!("a relayed reply is not JSON-RPC: {e}"),
    }
}

/// Hands replies other hosts relayed to this host to its copy of their
/// session. After missed notifications it collects every reply addressed to
/// it.
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
                    tracing::warn!(
                        "{n} relayed events were missed; collecting replies from the store"
                    );
                    match shared.relayed_replies_for(&me).await {
                        Ok(replies) => {
                            for (_, session, body) in replies {
                                deliver(&sessions, session, body, "(collected)").await;
                            }
                        }
                        Err(e) => tracing::warn!("relayed replies could not be collected: {e}"),
                    }
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
            match shared.take_relayed_reply(id, &me).await {
                Ok(Some((session, body))) => {
                    deliver(&sessions, session, body, &format!("from {from}")).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("a relayed reply could not be read: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::reply_id;

    #[test]
    fn only_responses_are_replies() {
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).as_deref(),
            Some("3")
        );
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"no"}}"#)
                .as_deref(),
            Some("\"a\"")
        );
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call"}"#),
            None
        );
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        assert_eq!(reply_id(br#"[{"jsonrpc":"2.0","id":3,"result":{}}]"#), None);
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":null,"result":{}}"#),
            None
        );
        assert_eq!(reply_id(b"not json"), None);
        // Found by the property tests: rmcp reads these ids as 3 and 0.
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":3.0,"result":{}}"#).as_deref(),
            Some("3")
        );
        assert_eq!(
            reply_id(br#"{"jsonrpc":"2.0","id":-0,"result":{}}"#).as_deref(),
            Some("0")
        );
        assert_eq!(reply_id(br#"{"jsonrpc":"2.0","id":1.5,"result":{}}"#), None);
    }
}

#[cfg(test)]
#[path = "relay_props.rs"]
mod props;
