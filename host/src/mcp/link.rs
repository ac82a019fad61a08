//! [`McpLink`]: the [`ClientLink`] of a call, over the session's rmcp peer.
//!
//! MCP logging is deprecated for protocol revisions after 2025-11-25 (SEP-2577);
//! Stockade serves 2025-11-25 clients, so it keeps sending it.
#![allow(deprecated)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::model::{LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};

use super::sessions::Sessions;
use crate::call::{ClientLink, LinkError, LinkFuture, LogLevel};
use crate::plugins::Plugin;
use rmcp::model::{
    ClientResult, CreateMessageRequest, CreateMessageRequestParams, ElicitRequest,
    ElicitRequestParams, ServerRequest,
};
use rmcp::service::{PeerRequestOptions, ServiceError};

use crate::auth::store::SharedState;

/// Where a call records the requests it sends its client, so that a reply a
/// balancer sends to another host is relayed to this one (`http::relay`).
#[derive(Clone)]
pub struct ReplyRoute {
    /// The shared store.
    pub store: Arc<dyn SharedState>,
    /// This host's id.
    pub host: String,
    /// The MCP session of the call.
    pub session: String,
}

/// Forgets a pending request when the call stops waiting for it (answered,
/// failed, or dropped).
struct Settle(Option<(ReplyRoute, String)>);

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some((route, id)) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = route.store.reply_settled(&route.session, &id).await {
                    tracing::debug!("a pending client request was not forgotten: {e}");
                }
            });
        }
    }
}

/// Sends `request` to the client of `peer` and waits for its answer, recorded
/// as pending on `route` (if the store is shared) while it waits.
async fn ask(
    peer: &Peer<RoleServer>,
    route: Option<&ReplyRoute>,
    request: ServerRequest,
) -> Result<ClientResult, ServiceError> {
    let handle = peer
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await?;
    let mut settle = Settle(None);
    if let Some(route) = route {
        let id = serde_json::to_string(&handle.id).unwrap_or_default();
        match route
            .store
            .expect_reply(&route.session, &id, &route.host, crate::auth::now_secs())
            .await
        {
            Ok(()) => settle.0 = Some((route.clone(), id)),
            Err(e) => tracing::warn!(
                "a client request is not recorded in the shared store (a reply through \
                 another host will not reach this one): {e}"
            ),
        }
    }
    let result = handle.await_response().await;
    drop(settle);
    result
}

/// Index of an MCP level name (`"debug"` = 0 ... `"emergency"` = 7).
pub(crate) fn level_index(name: &str) -> u8 {
    match name {
        "debug" => 0,
        "info" => 1,
        "notice" => 2,
        "warning" => 3,
        "error" => 4,
        "critical" => 5,
        "alert" => 6,
        "emergency" => 7,
        _ => 0,
    }
}

fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Notice => "notice",
        LogLevel::Warning => "warning",
        LogLevel::Error => "error",
        LogLevel::Critical => "critical",
        LogLevel::Alert => "alert",
        LogLevel::Emergency => "emergency",
    }
}

enum Note {
    Log(LoggingMessageNotificationParam),
    Progress(ProgressNotificationParam),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Sends a call's log and progress messages to its MCP client, in order, from a
/// forwarding task so a plugin never waits on the network.
pub struct McpLink {
    peer: Peer<RoleServer>,
    tx: tokio::sync::mpsc::UnboundedSender<Note>,
    has_progress: Option<ProgressToken>,
    min_level: Arc<AtomicU8>,
    plugin: Arc<Plugin>,
    sessions: Arc<Sessions>,
    last_progress: std::sync::Mutex<Option<f64>>,
    /// `resource_updated` announcements this call may still make.
    updates_left: std::sync::atomic::AtomicU32,
    /// Where requests to the client are recorded (several hosts only).
    route: Option<ReplyRoute>,
    /// A 2026-07-28 call's questions and answers: questions end the call
    /// (`input_required`) instead of being sent ([`super::mrtr`]).
    round: Option<Arc<super::mrtr::Round>>,
}

/// How many resources one call may say changed.
const MAX_UPDATES_PER_CALL: u32 = 64;

impl McpLink {
    /// A link for one call; starts its forwarding task.
    pub fn new(
        peer: Peer<RoleServer>,
        progress_token: Option<ProgressToken>,
        min_level: Arc<AtomicU8>,
        plugin: Arc<Plugin>,
        sessions: Arc<Sessions>,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Note>();
        let forward = peer.clone();
        tokio::spawn(async move {
            let peer = forward;
            while let Some(note) = rx.recv().await {
                match note {
                    Note::Log(p) => {
                        let _ = peer.notify_logging_message(p).await;
                    }
                    Note::Progress(p) => {
                        let _ = peer.notify_progress(p).await;
                    }
                    Note::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self {
            peer,
            tx,
            has_progress: progress_token,
            min_level,
            plugin,
            sessions,
            last_progress: std::sync::Mutex::new(None),
            updates_left: MAX_UPDATES_PER_CALL.into(),
            route: None,
            round: None,
        }
    }

    /// Answers this call's questions from `round` (a 2026-07-28 request).
    pub fn with_round(mut self, round: Option<Arc<super::mrtr::Round>>) -> Self {
        self.round = round;
        self
    }

    /// A question of a 2026-07-28 call: answered from the client's answers so
    /// far, or the call ends asking it.
    fn ask_round(
        round: &Arc<super::mrtr::Round>,
        kind: super::mrtr::Kind,
        params: serde_json::Value,
    ) -> LinkFuture {
        use super::mrtr::{Asked, Kind};
        let what = match kind {
            Kind::Sampling => "sampling",
            Kind::Elicitation => "elicitation",
        };
        // The question must be one a client can take, as in a session.
        let valid = match kind {
            Kind::Sampling => serde_json::from_value::<CreateMessageRequestParams>(params.clone())
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate().map_err(|e| e.to_string())),
            Kind::Elicitation => {
                let mut p = params.clone();
                p["mode"] = "form".into();
                serde_json::from_value::<ElicitRequestParams>(p)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = valid {
            return Box::pin(async move {
                Err(LinkError::Failed(format!("invalid {what} request: {e}")))
            });
        }
        let answer = round.ask(kind, params);
        Box::pin(async move {
            let res = match answer {
                Asked::Answer(res) => res,
                Asked::Unsupported => return Err(LinkError::Unsupported(what)),
                Asked::TooMany(why) => return Err(LinkError::Failed(why)),
                // The call is stopped where it waits (the run sees the round
                // suspended and answers `input_required`).
                Asked::Suspend => std::future::pending().await,
            };
            let checked = match kind {
                Kind::Sampling => {
                    serde_json::from_value::<rmcp::model::CreateMessageResult>(res.clone())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                Kind::Elicitation => {
                    serde_json::from_value::<rmcp::model::ElicitResult>(res.clone())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            };
            checked.map_err(|e| {
                LinkError::Failed(format!("the client's {what} answer is not valid: {e}"))
            })?;
            Ok(res)
        })
    }

    /// Records the requests this call sends its client on `route`.
    pub fn with_route(mut self, route: Option<ReplyRoute>) -> Self {
        self.route = route;
        self
    }

    /// Waits until every message sent so far has been handed to the transport, so
    /// progress arrives before the call's response.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Note::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl ClientLink for McpLink {
    fn resource_updated(&self, uri: String) -> bool {
        let code = &self.plugin.code;
        let mine = code.resources.iter().any(|r| r.uri == uri)
            || code
                .resource_templates
                .iter()
                .any(|t| stockade_sdk::uri_template::matches(&t.uri_template, &uri));
        let budget = self
            .updates_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !mine || !budget {
            return false;
        }
        let sessions = self.sessions.clone();
        tokio::spawn(async move { sessions.resource_changed(&uri).await });
        true
    }

    fn log(&self, level: LogLevel, logger: Option<String>, message: String) {
        let name = level_name(level);
        if level_index(name) < self.min_level.load(Ordering::Relaxed) {
            return;
        }
        let Ok(level) = serde_json::from_value(name.into()) else {
            return;
        };
        let mut param = LoggingMessageNotificationParam::new(level, message.into());
        param.logger = Some(logger.unwrap_or_else(|| self.plugin.name.clone()));
        let _ = self.tx.send(Note::Log(param));
    }

    fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let Some(token) = self.has_progress.clone() else {
            return;
        };
        {
            let mut last = self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|l| progress <= l) {
                return;
            }
            *last = Some(progress);
        }
        let mut param = ProgressNotificationParam::new(token, progress);
        param.total = total;
        param.message = message;
        let _ = self.tx.send(Note::Progress(param));
    }

    fn create_message(&self, params: serde_json::Value) -> LinkFuture {
        if let Some(round) = &self.round {
            return Self::ask_round(round, super::mrtr::Kind::Sampling, params);
        }
        let peer = self.peer.clone();
        let route = self.route.clone();
        Box::pin(async move {
            let supported = peer
                .peer_info()
                .is_some_and(|i| i.capabilities.sampling.is_some());
            if !supported {
                return Err(LinkError::Unsupported("sampling"));
            }
            let params: CreateMessageRequestParams = serde_json::from_value(params)
                .map_err(|e| LinkError::Failed(format!("invalid sampling request: {e}")))?;
            params
                .validate()
                .map_err(|e| LinkError::Failed(format!("invalid sampling request: {e}")))?;
            let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
            let result = match ask(&peer, route.as_ref(), request).await {
                Ok(ClientResult::CreateMessageResult(r)) => serde_json::to_value(r),
                Ok(_) => {
                    return Err(LinkError::Failed(
                        "the client answered something else".into(),
                    ));
                }
                Err(e) => return Err(LinkError::Failed(format!("the client did not sample: {e}"))),
            };
            result.map_err(|e| LinkError::Failed(e.to_string()))
        })
    }

    fn elicit(&self, mut params: serde_json::Value) -> LinkFuture {
        if let Some(round) = &self.round {
            return Self::ask_round(round, super::mrtr::Kind::Elicitation, params);
        }
        let peer = self.peer.clone();
        let route = self.route.clone();
        Box::pin(async move {
            let supported = peer
                .peer_info()
                .is_some_and(|i| i.capabilities.elicitation.is_some());
            if !supported {
                return Err(LinkError::Unsupported("elicitation"));
            }
            params["mode"] = "form".into();
            let params: ElicitRequestParams = serde_json::from_value(params)
                .map_err(|e| LinkError::Failed(format!("invalid elicitation request: {e}")))?;
            let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
            let result = match ask(&peer, route.as_ref(), request).await {
                Ok(ClientResult::ElicitResult(r)) => serde_json::to_value(r),
                Ok(_) => {
                    return Err(LinkError::Failed(
                        "the client answered something else".into(),
                    ));
                }
                Err(e) => return Err(LinkError::Failed(format!("the client did not answer: {e}"))),
            };
            result.map_err(|e| LinkError::Failed(e.to_string()))
        })
    }
}
