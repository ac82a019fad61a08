//! Stops the work of a request whose client went away.
//!
//! Every `/mcp` request gets a [`ClientGone`] token in its extensions (the MCP
//! handler finds it in the request parts). The response body is wrapped: if it is
//! dropped before its end — the client closed the connection, or the stream was
//! torn down — the token is cancelled, and a plugin call still waiting for a
//! slot or running stops at once (and is audited as `disconnected`).
//!
//! The same body wrapper holds a POST's in-flight ticket ([`super::drain`])
//! until the response is delivered or dropped, for graceful shutdown; the
//! request also gets the [`CutOff`] token that stops its call when shutdown's
//! grace period ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use tokio_util::sync::DropGuard;

use super::drain::{InFlight, Ticket};
use crate::mcp::{ClientGone, CutOff};

/// The middleware: see the module docs.
pub async fn cancel_on_disconnect(
    State(in_flight): State<InFlight>,
    mut req: Request,
    next: Next,
) -> Response {
    let ticket = (req.method() == axum::http::Method::POST).then(|| in_flight.enter());
    let gone = ClientGone::default();
    req.extensions_mut().insert(gone.clone());
    req.extensions_mut()
        .insert(CutOff(in_flight.cut_off_token()));
    // Armed before the answer starts: a client that leaves while the answer is
    // still being prepared (or collected, `super::coalesce`) drops this future.
    let guard = gone.0.clone().drop_guard();
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let body = Body::new(Guarded {
        inner: body,
        guard: Some(guard),
        _ticket: ticket,
    });
    Response::from_parts(parts, body)
}

/// A response body that cancels its request's token if dropped unfinished, and
/// holds its in-flight ticket (POSTs) until it is dropped.
struct Guarded {
    inner: Body,
    guard: Option<DropGuard>,
    _ticket: Option<Ticket>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Delivered to the end: nothing to cancel.
            if let Some(guard) = self.guard.take() {
                guard.disarm();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `DELETE /mcp` ends a session: rmcp answers `202 Accepted`, which the
/// official Python client reports as a failed termination. The session is gone
/// when the answer is sent, so say `200 OK`.
pub async fn delete_answers_ok(req: Request, next: Next) -> Response {
    let delete = req.method() == axum::http::Method::DELETE;
    let mut response = next.run(req).await;
    if delete && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::OK;
    }
    response
}
