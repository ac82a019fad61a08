//! JSON-RPC error envelopes for everything `/mcp` refuses, and which requests
//! stand alone (MCP 2026-07-28).
//!
//! Every error `/mcp` answers is a JSON-RPC error object carrying the id of
//! the request it answers (when the body could be read), whatever layer
//! refused it: the bearer gate's own refusals (404 session, 429, 413, 400)
//! and rmcp's plain-text ones (406, 415, …), rewritten by
//! [`plain_errors_as_jsonrpc`].
//!
//! Stockade's own codes lie outside JSON-RPC's reserved range
//! (`-32768..=-32000`), as MCP 2026-07-28 asks of codes it does not define:
//! [`RATE_LIMITED`] (`-31429`) and [`UNAVAILABLE`] (`-31503`), named after the
//! HTTP status they come with.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// JSON-RPC "Parse error": the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC "Invalid Request".
pub const INVALID_REQUEST: i64 = -32600;
/// The caller is over its request rate (HTTP 429, with `Retry-After`).
pub const RATE_LIMITED: i64 = -31429;
/// The host cannot serve the request right now; retry (HTTP 503).
pub const UNAVAILABLE: i64 = -31503;

/// The largest plain-text error body rewritten (rmcp's are one line).
const MAX_PLAIN_BODY: usize = 4096;

/// A JSON-RPC error response with `status`.
pub fn jsonrpc_error(status: StatusCode, id: &Value, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": code, "message": message }
        })),
    )
        .into_response()
}

/// Whether `message` is a request that stands alone (MCP 2026-07-28): a
/// request (not a notification, response or batch), not `initialize`, whose
/// `_meta` names its revision and the client's capabilities. rmcp serves such
/// a request without a session whatever `Mcp-Session-Id` it carries.
pub fn is_stateless_request(message: &Value) -> bool {
    let Some(m) = message.as_object() else {
        return false;
    };
    if m.get("id").is_none() || m.get("method").and_then(Value::as_str) == Some("initialize") {
        return false;
    }
    let meta = m.get("params").and_then(|p| p.get("_meta"));
    let version = meta.and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"));
    let caps = meta.and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"));
    version.is_some_and(Value::is_string) && caps.is_some_and(Value::is_object)
}

/// Rewrites a plain-text 4xx/5xx answer (rmcp's "Unsupported Media Type",
/// "Not Acceptable", …) as a JSON-RPC error envelope with the request's id,
/// keeping the status and the text. Other answers pass unchanged.
pub async fn plain_errors_as_jsonrpc(resp: Response, id: &Value) -> Response {
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let code = if status.is_server_error() {
        -32603
    } else {
        INVALID_REQUEST
    };
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message }
    });
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_self_described_requests_stand_alone() {
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        });
        let req = |method: &str, meta: &Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"_meta": meta}});
        assert!(is_stateless_request(&req("tools/list", &meta)));
        assert!(!is_stateless_request(&req("initialize", &meta)));
        assert!(!is_stateless_request(&req("tools/list", &json!({}))));
        let no_caps = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        assert!(!is_stateless_request(&req("tools/list", &no_caps)));
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/x",
            "params": {"_meta": meta}});
        assert!(!is_stateless_request(&notification));
        assert!(!is_stateless_request(&json!([req("tools/list", &meta)])));
    }

    #[tokio::test]
    async fn plain_text_refusals_become_envelopes() {
        let plain = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: x",
        )
            .into_response();
        let r = plain_errors_as_jsonrpc(plain, &json!(7)).await;
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 4096).await.unwrap())
                .unwrap();
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], INVALID_REQUEST);
        assert_eq!(body["error"]["message"], "Unsupported Media Type: x");

        let json = jsonrpc_error(StatusCode::NOT_FOUND, &json!(1), -32601, "nope");
        let r = plain_errors_as_jsonrpc(json, &json!(2)).await;
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 4096).await.unwrap())
                .unwrap();
        assert_eq!(body["id"], 1, "a JSON answer is left alone");
    }
}
