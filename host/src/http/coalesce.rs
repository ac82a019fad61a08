//! A `/mcp` POST answer that is complete within [`WINDOW`] goes out in one
//! piece, as JSON when it is a single message.
//!
//! rmcp answers every POST of a session with an SSE stream: a priming event at
//! once, then the messages, then the end of the stream, each its own body frame
//! and so its own write (and, across a kept-alive connection, its own chance to
//! meet a delayed ACK). Most tool calls end in a millisecond, long before the
//! window: their frames are collected and sent as one body with a
//! `Content-Length`, which hyper writes together with the headers. When the
//! only message is the JSON-RPC answer and the client accepts
//! `application/json` (every MCP client must), it is sent as JSON, as the
//! Streamable HTTP transport allows. An answer that takes longer (progress,
//! logging, a sampling request to the client) streams as before, the frames
//! collected so far first, so nothing is lost or reordered; the first of them
//! waits at most the window.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use http_body_util::BodyExt;

/// How long an answer may take and still go out in one piece.
pub const WINDOW: Duration = Duration::from_millis(50);

/// The middleware: see the module docs.
pub async fn one_piece(req: Request, next: Next) -> Response {
    let post = req.method() == Method::POST;
    let accepts_json = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") || v.contains("*/*"));
    let response = next.run(req).await;
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !post || !sse || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, mut body) = response.into_parts();
    let mut collected: Vec<Bytes> = Vec::new();
    let window = tokio::time::sleep(WINDOW);
    tokio::pin!(window);
    loop {
        tokio::select! {
            biased;
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        collected.push(data);
                    }
                }
                Some(Err(e)) => {
                    // Let the stream report it as it would have.
                    let rest = futures_util::stream::once(async move { Err::<Bytes, _>(e) });
                    return Response::from_parts(parts, streamed(collected, rest));
                }
                None => break,
            },
            () = &mut window => {
                let rest = body.into_data_stream();
                return Response::from_parts(parts, streamed(collected, rest));
            }
        }
    }
    let whole: Bytes = collected.concat().into();
    let (content_type, bytes) = match single_message(&whole) {
        Some(message) if accepts_json => ("application/json", message),
        _ => ("text/event-stream", whole),
    };
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, Body::from(bytes))
}

/// The frames collected so far, then the rest of the stream.
fn streamed<S, E>(collected: Vec<Bytes>, rest: S) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<axum::BoxError> + 'static,
{
    let first = futures_util::stream::iter(collected.into_iter().map(Ok::<Bytes, E>));
    Body::from_stream(first.chain(rest))
}

/// The data of the one event with data in an SSE body, if there is exactly one
/// and it is a JSON object (priming events carry no data).
fn single_message(sse: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(sse).ok()?;
    let mut found: Option<String> = None;
    for event in text.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let data = data.join("\n");
        if data.trim().is_empty() {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(data);
    }
    let data = found?;
    let value: serde_json::Value = serde_json::from_str(&data).ok()?;
    value.is_object().then(|| Bytes::from(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_is_found_past_priming_events() {
        let sse = b"id: 0\nretry: 3000\ndata:\n\nevent: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n";
        assert_eq!(
            single_message(sse).as_deref(),
            Some(&b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}"[..])
        );
        let two = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n";
        assert_eq!(single_message(two), None, "a notification keeps it SSE");
        assert_eq!(single_message(b"data: [1]\n\n"), None);
        assert_eq!(single_message(b"id: 0\ndata:\n\n"), None);
    }
}
