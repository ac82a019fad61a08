//! The MCP server: an rmcp [`ServerHandler`] over the shared plugin [`Catalog`].
//!
//! One [`StockadeMcp`] is made per MCP session by the transport's factory; all of
//! them share the catalog and runtime. A failing tool returns a result with
//! `isError: true` (the model sees why); protocol errors are kept for unknown
//! tools, resources and prompts.

// MCP logging (`logging/setLevel`) is deprecated after revision 2025-11-25 but
// still used by the clients Stockade serves.
#![allow(deprecated)]

mod conform;
pub mod convert;
mod link;
mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference,
    ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::audit::{Audit, AuditEvent, ToolCallRecord, redact_object, sha256_hex};
use crate::auth::Principal;
use crate::bindings::{guest_prompts, guest_resources, guest_tools};
use crate::call::CallContext;
use crate::plugins::{Catalog, Plugin};
use crate::runtime::{CallFailure, Op, OpOutput, Runtime};

pub use link::{McpLink, ReplyRoute};

#[cfg(feature = "bench-native")]
mod native;
pub use sessions::Sessions;

/// State shared by every MCP session.
pub struct Shared {
    /// The plugins being served.
    pub catalog: Arc<Catalog>,
    /// The runtime that runs them.
    pub runtime: Arc<Runtime>,
    /// The audit log.
    pub audit: Audit,
    /// Connected sessions, told when the plugin set changes.
    pub sessions: Arc<Sessions>,
    /// Every operation is counted here (usage, latency, outcomes).
    pub metrics: crate::metrics::Metrics,
    /// The store shared with other hosts and this host's id, if several
    /// hosts serve (set once the store is open): requests to clients are
    /// recorded there.
    pub shared_store: std::sync::OnceLock<(Arc<dyn crate::auth::store::SharedState>, String)>,
}

/// Cancelled when the client of an HTTP request went away before its response
/// was delivered (set by the HTTP layer, found in the request parts).
#[derive(Clone, Default, Debug)]
pub struct ClientGone(pub tokio_util::sync::CancellationToken);

/// Cancelled when the host's shutdown grace period ends with the HTTP request
/// still in flight (set by the HTTP layer): its call stops and is answered and
/// audited as cut off by shutdown.
#[derive(Clone, Default, Debug)]
pub struct CutOff(pub tokio_util::sync::CancellationToken);

/// The [`CutOff`] token of the request, if the HTTP layer set one.
fn cut_off(cx: &RequestContext<RoleServer>) -> tokio_util::sync::CancellationToken {
    cx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<CutOff>())
        .map(|c| c.0.clone())
        .unwrap_or_default()
}

/// The [`ClientGone`] token of the request, if the HTTP layer set one.
fn client_gone(cx: &RequestContext<RoleServer>) -> tokio_util::sync::CancellationToken {
    cx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<ClientGone>())
        .map(|g| g.0.clone())
        .unwrap_or_default()
}

/// The MCP handler of one session.
#[derive(Clone)]
pub struct StockadeMcp {
    shared: Arc<Shared>,
    /// The session's minimum log level (`logging/setLevel`), as a `LogLevel` index.
    log_level: Arc<AtomicU8>,
    /// The resource URIs this session subscribed to.
    subscriptions: sessions::Subscriptions,
}

/// How long a call stopped because its client went away waits for the
/// client's cancellation of it, to audit which of the two it was.
const CANCEL_AFTER_DISCONNECT: std::time::Duration = std::time::Duration::from_millis(200);

impl StockadeMcp {
    /// A handler for a new session.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            log_level: Arc::new(AtomicU8::new(0)),
            subscriptions: Arc::default(),
        }
    }

    /// Runs `op` on `plugin` for the request `rq`, stopping it if the client
    /// cancels the request, and flushing its notifications before returning.
    async fn run(
        &self,
        plugin: &Arc<Plugin>,
        tool: Option<&str>,
        op: Op<'_>,
        rq: &RequestContext<RoleServer>,
    ) -> crate::runtime::CallReport {
        let started = std::time::Instant::now();
        let route = self.shared.shared_store.get().and_then(|(store, host)| {
            let session = rq
                .extensions
                .get::<axum::http::request::Parts>()?
                .headers
                .get("mcp-session-id")?
                .to_str()
                .ok()?;
            Some(ReplyRoute {
                store: store.clone(),
                host: host.clone(),
                session: session.to_owned(),
            })
        });
        let link = Arc::new(
            McpLink::new(
                rq.peer.clone(),
                rq.meta.get_progress_token(),
                self.log_level.clone(),
                plugin.clone(),
                self.shared.sessions.clone(),
            )
            .with_route(route),
        );
        let cx = CallContext {
            plugin: plugin.name.clone(),
            tool: tool.map(str::to_owned),
            link: Some(link.clone()),
            notify_budget: (plugin.policy.limits.max_log_kib as usize) << 10,
            notify_dropped: 0,
            grants: plugin.policy.grants.clone(),
            sql: plugin.policy.sql.clone(),
            audit: Some(self.shared.audit.clone()),
            max_result_kib: plugin.policy.limits.max_result_kib,
            metrics: Some(self.shared.metrics.clone()),
            denial_count: Default::default(),
        };
        let gone = client_gone(rq);
        let cut = cut_off(rq);
        let stopped = |failure| crate::runtime::CallReport::stopped(failure, started.elapsed());
        // Dropping the invocation stops the guest (or gives up its queue place).
        // A cancelled request also loses its stream: look at the cancellation first
        // so the audit says `cancelled` when the client asked for it.
        let report = tokio::select! {
            biased;
            () = rq.ct.cancelled() => return stopped(CallFailure::Cancelled),
            () = cut.cancelled() => return stopped(CallFailure::Shutdown),
            r = self.shared.runtime.invoke(&plugin.code, &plugin.policy, op, cx) => r,
            () = gone.cancelled() => {
                // The guest is stopped (its invocation dropped). A client that
                // cancels also drops the request's stream, and the two may
                // arrive in either order: a cancellation that follows within
                // moments is what the client asked for.
                let asked = tokio::time::timeout(CANCEL_AFTER_DISCONNECT, rq.ct.cancelled()).await;
                if asked.is_ok() {
                    return stopped(CallFailure::Cancelled);
                }
                tracing::info!("client went away; call stopped");
                return stopped(CallFailure::Disconnected);
            }
        };
        link.flush().await;
        if !report.stderr.is_empty() {
            tracing::debug!(stderr = %report.stderr, "plugin stderr");
        }
        // Every call is in the audit log; the operator's log gets the failures
        // (at the default level) and the rest at debug.
        match &report.outcome {
            Ok(_) => tracing::debug!(
                fuel = report.fuel_used,
                duration_us = report.duration.as_micros() as u64,
                dropped_notifications = report.notify_dropped,
                "plugin call finished"
            ),
            Err(f) => tracing::info!(
                fuel = report.fuel_used,
                duration_us = report.duration.as_micros() as u64,
                dropped_notifications = report.notify_dropped,
                outcome = %f,
                "plugin call failed"
            ),
        }
        report
    }
}

impl StockadeMcp {
    /// Writes the audit record of a plugin operation. The record is on disk
    /// before the client sees the answer; without it, the plugin's output is
    /// withheld (the audit log fails closed).
    ///
    /// The figures count the operation under `metered` when given (a resource
    /// read under its plugin's template, not the client's URI: a caller must
    /// not grow `metrics.db` one URI at a time), else under its target.
    async fn record(
        &self,
        record: ToolCallRecord,
        denials: u32,
        metered: Option<&str>,
        what: impl FnOnce() -> String,
    ) -> Result<(), ErrorData> {
        self.shared.metrics.observe(&crate::metrics::Observation {
            kind: record.kind,
            plugin: &record.plugin,
            target: metered.unwrap_or(&record.target),
            subject: record.subject.as_deref(),
            outcome: record.outcome,
            limit: record.limit,
            denials,
            duration: std::time::Duration::from_micros(record.duration_us),
        });
        if let Err(e) = self.shared.audit.record(AuditEvent::ToolCall(record)).await {
            tracing::error!("audit: {e}; the result of {} is withheld", what());
            return Err(ErrorData::internal_error(
                format!("{e}; the call's result is withheld"),
                None,
            ));
        }
        Ok(())
    }
}

/// Runs an MCP operation's handler, timing it for Prometheus
/// (`mcp_server_operation_duration`): `error_type` is the JSON-RPC error code,
/// or `tool_error` for a result `is_error` says is one.
async fn timed<T>(
    method: &'static str,
    tool: Option<&str>,
    body: impl std::future::Future<Output = Result<T, ErrorData>>,
    is_error: impl FnOnce(&T) -> bool,
) -> Result<T, ErrorData> {
    let started = crate::metrics::prom::global().operation(method, tool);
    let result = body.await;
    // A name that failed (an unknown tool) is the client's string: not a label.
    let op = if result.is_err() && tool.is_some() {
        started.without_tool()
    } else {
        started
    };
    match &result {
        Ok(v) if is_error(v) => op.finish(Some("tool_error")),
        Ok(_) => op.finish(None),
        Err(e) => op.finish(Some(&e.code.0.to_string())),
    }
    result
}

/// The authenticated caller of a request, put there by the bearer gate. `None`
/// only when authentication is disabled (`auth.mode = "none"`).
fn principal(cx: &RequestContext<RoleServer>) -> Option<Principal> {
    cx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Principal>())
        .cloned()
}

/// Whether `who` may use `plugin`: its required scope, if any, must be in the
/// token. Without authentication there is no principal and nothing to check.
fn permitted(who: Option<&Principal>, plugin: &Plugin) -> bool {
    match (&plugin.policy.scope, who) {
        (Some(scope), Some(p)) => p.has_scope(scope),
        _ => true,
    }
}

/// What a plugin operation was asked for, for its audit record.
enum Target<'a> {
    Tool(&'a str),
    Resource(&'a str),
    Prompt(&'a str),
}

/// The audit record of one plugin operation (tool call, resource read, prompt
/// rendering): who, what, with which arguments, and how it ended.
fn call_record(
    target: Target<'_>,
    plugin: &Plugin,
    who: Option<&Principal>,
    arguments: &str,
    redacted: Option<Value>,
    report: &crate::runtime::CallReport,
) -> ToolCallRecord {
    let (kind, target) = match target {
        Target::Tool(t) => ("tool", t),
        Target::Resource(u) => ("resource", u),
        Target::Prompt(p) => ("prompt", p),
    };
    let mut record = ToolCallRecord {
        subject: who.map(|p| p.subject.clone()),
        client_id: who.and_then(|p| p.client_id.clone()),
        kind,
        target: target.chars().take(2048).collect(),
        plugin: plugin.name.clone(),
        version: plugin.code.info.version.clone(),
        digest: plugin.digest.clone(),
        arguments_sha256: sha256_hex(arguments.as_bytes()),
        arguments: redacted.unwrap_or(Value::Null),
        outcome: "ok",
        duration_us: report.duration.as_micros() as u64,
        fuel: report.fuel_used,
        dropped_notifications: report.notify_dropped,
        ..Default::default()
    };
    let short = |m: &str| Some(m.chars().take(300).collect::<String>());
    match &report.outcome {
        Ok(OpOutput::Tool(Ok(r))) if r.is_error => record.outcome = "tool_error",
        Ok(OpOutput::Tool(Ok(_)) | OpOutput::Resource(Ok(_)) | OpOutput::Prompt(Ok(_))) => {}
        Ok(OpOutput::Tool(Err(guest_tools::ToolError::InvalidArguments(m))))
        | Ok(OpOutput::Prompt(Err(guest_prompts::PromptError::InvalidArguments(m)))) => {
            record.outcome = "invalid_arguments";
            record.error = short(m);
        }
        Ok(OpOutput::Resource(Err(guest_resources::ResourceError::NotFound(m)))) => {
            record.outcome = "not_found";
            record.error = short(m);
        }
        Ok(OpOutput::Tool(Err(e))) => {
            record.outcome = "failed";
            record.error = short(&format!("{e:?}"));
        }
        Ok(OpOutput::Resource(Err(e))) => {
            record.outcome = "failed";
            record.error = short(&format!("{e:?}"));
        }
        Ok(OpOutput::Prompt(Err(e))) => {
            record.outcome = "failed";
            record.error = short(&format!("{e:?}"));
        }
        Err(CallFailure::Cancelled) => record.outcome = "cancelled",
        Err(CallFailure::Disconnected) => record.outcome = "disconnected",
        Err(f @ CallFailure::Shutdown) => {
            record.outcome = "shutdown";
            record.error = short(&f.to_string());
        }
        Err(f) => {
            record.outcome = "failed";
            record.limit = f.limit_name();
            record.error = short(&f.to_string());
        }
    }
    record
}

/// The MCP result of a tool call's outcome: the plugin's result, or an error
/// result saying why there is none.
fn tool_result(name: &str, plugin: &Plugin, outcome: &Result<OpOutput, CallFailure>) -> Value {
    match outcome {
        Ok(OpOutput::Tool(Ok(result))) => convert::call_result(result),
        Ok(OpOutput::Tool(Err(e))) => convert::error_result(&match e {
            guest_tools::ToolError::InvalidArguments(m) if m.contains("invalid arguments") => {
                m.clone()
            }
            guest_tools::ToolError::InvalidArguments(m) => {
                format!("invalid arguments for tool `{name}`: {m}")
            }
            guest_tools::ToolError::Failed(m) => m.clone(),
            guest_tools::ToolError::UnknownTool(m) => {
                format!("plugin `{}` does not know tool `{name}`: {m}", plugin.name)
            }
        }),
        Ok(_) => convert::error_result("internal error: unexpected plugin answer"),
        Err(f) => convert::error_result(&format!(
            "tool `{name}` (plugin `{}`) failed: {f}",
            plugin.name
        )),
    }
}

/// What a read of `uri` is counted under in the figures: the plugin's static
/// resource of that URI, or the template that matched it (both bounded by
/// what the plugin declares).
fn metered_resource(plugin: &Plugin, uri: &str) -> String {
    let code = &plugin.code;
    code.resources
        .iter()
        .find(|r| r.uri == uri)
        .map(|r| r.uri.clone())
        .or_else(|| {
            code.resource_templates
                .iter()
                .find(|t| convert::uri_matches(&t.uri_template, uri))
                .map(|t| t.uri_template.clone())
        })
        .unwrap_or_default()
}

fn invalid_params(message: String) -> ErrorData {
    ErrorData::invalid_params(message, None)
}

impl ServerHandler for StockadeMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_prompts()
            .enable_completions()
            .enable_logging()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("stockade", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools served by Stockade: each runs in a sandboxed WebAssembly plugin.",
            )
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        self.shared
            .sessions
            .add(context.peer, self.subscriptions.clone());
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let level = serde_json::to_value(request.level)
            .ok()
            .and_then(|v| v.as_str().map(link::level_index))
            .unwrap_or(0);
        self.log_level.store(level, Ordering::Relaxed);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        timed(
            "tools/list",
            None,
            async {
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let tools: Vec<Value> = snapshot
                    .all_tools()
                    .filter(|(p, _)| permitted(who.as_ref(), p))
                    .map(|(_, t)| convert::tool(t))
                    .collect();
                convert::to_rmcp(json!({ "tools": tools }))
            },
            |_| false,
        )
        .await
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.to_string();
        timed(
            "tools/call",
            Some(tool.as_str()),
            async {
                #[cfg(feature = "bench-native")]
                if request.name == native::TOOL {
                    return native::greet(&self.shared, &request, &context).await;
                }
                let snapshot = self.shared.catalog.snapshot();
                let name = request.name.as_ref();
                let Some((plugin, index)) = snapshot.tools.get(name).map(|(p, i)| (p.clone(), *i))
                else {
                    return Err(invalid_params(format!(
                        "unknown tool `{name}`: call tools/list for the tools this server has"
                    )));
                };
                let who = principal(&context);
                if !permitted(who.as_ref(), &plugin) {
                    // The gate answers 403 before this for HTTP; this is defence in depth.
                    return Err(ErrorData::invalid_request(
                        format!(
                            "insufficient_scope: tool `{name}` requires the scope `{}`",
                            plugin.policy.scope.as_deref().unwrap_or_default()
                        ),
                        None,
                    ));
                }
                let Some(schema) = plugin.schemas.get(index) else {
                    return Err(ErrorData::internal_error(
                        format!("tool `{name}` has no compiled schemas"),
                        None,
                    ));
                };
                let span = tracing::info_span!(
                    "tool_call",
                    tool = %name,
                    plugin = %plugin.name,
                    version = %plugin.code.info.version,
                    request_id = ?context.id,
                );
                let started = std::time::Instant::now();
                // Absent arguments are checked as `{}` (and audited as absent);
                // the map is moved, not copied.
                let sent = request.arguments.is_some();
                let args = Value::Object(request.arguments.take().unwrap_or_default());
                let arguments = serde_json::to_string(&args).unwrap_or_else(|_| "{}".into());
                // Checked before any plugin code runs; a refusal is audited and
                // answered like the plugin's own `invalid-arguments`.
                let report = match conform::argument_refusal(schema, name, &args) {
                    Some(refusal) => {
                        span.in_scope(|| tracing::info!("arguments refused: {refusal}"));
                        conform::refused(refusal, started.elapsed())
                    }
                    None => {
                        let caller = guest_tools::Caller {
                            subject: who.as_ref().map(|p| p.subject.clone()),
                            client_id: who.as_ref().and_then(|p| p.client_id.clone()),
                        };
                        let op = Op::CallTool {
                            tool: name,
                            arguments: &arguments,
                            caller: &caller,
                        };
                        self.run(&plugin, Some(name), op, &context)
                            .instrument(span)
                            .await
                    }
                };
                let mut json = tool_result(name, &plugin, &report.outcome);
                let mismatch = conform::enforce_output(schema, name, &plugin.name, &mut json);
                let mut record = call_record(
                    Target::Tool(name),
                    &plugin,
                    who.as_ref(),
                    &arguments,
                    args.as_object()
                        .filter(|_| sent)
                        .map(|a| redact_object(a, 2048)),
                    &report,
                );
                if let Some(why) = mismatch {
                    record.outcome = "invalid_result";
                    record.error = Some(why.chars().take(300).collect());
                }
                self.record(record, report.denied, None, || format!("tool `{name}`"))
                    .await?;
                convert::add_host_refusals(&mut json, &report.denials);
                let result: CallToolResult = convert::to_rmcp(json)?;
                Ok(CallToolResponse::Complete(result))
            },
            |r| matches!(r, CallToolResponse::Complete(c) if c.is_error == Some(true)),
        )
        .await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        timed(
            "resources/subscribe",
            None,
            async {
                let uri = request.uri.as_str();
                let who = principal(&context);
                let snapshot = self.shared.catalog.snapshot();
                if uri.len() > stockade_sdk::uri_template::MAX_URI_LEN
                    || snapshot
                        .resource_owner_by(uri, |p| permitted(who.as_ref(), p))
                        .is_none()
                {
                    return Err(ErrorData::resource_not_found(
                        format!(
                            "no resource `{}` to subscribe to",
                            uri.chars().take(200).collect::<String>()
                        ),
                        None,
                    ));
                }
                use sessions::{
                    MAX_SESSION_SUBSCRIPTION_BYTES, MAX_SESSION_SUBSCRIPTIONS,
                    MAX_SUBJECT_SUBSCRIPTION_BYTES, MAX_SUBJECT_SUBSCRIPTIONS,
                };
                let subject = who.as_ref().map_or("", |p| p.subject.as_str());
                // Bounded per session and per subject, in number and in bytes: one
                // user cannot fill the host's memory through many sessions.
                let (subject_n, subject_bytes) = self.shared.sessions.subject_load(subject);
                let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
                if subs.contains(uri) {
                    return Ok(());
                }
                let (n, bytes) = subs.load();
                let over = if n >= MAX_SESSION_SUBSCRIPTIONS {
                    Some(format!(
                        "this session already has {MAX_SESSION_SUBSCRIPTIONS} subscriptions"
                    ))
                } else if bytes + uri.len() > MAX_SESSION_SUBSCRIPTION_BYTES {
                    Some(format!(
                        "this session's subscribed URIs would pass {} KiB",
                        MAX_SESSION_SUBSCRIPTION_BYTES >> 10
                    ))
                } else if subject_n >= MAX_SUBJECT_SUBSCRIPTIONS {
                    Some(format!(
                        "your sessions already have {MAX_SUBJECT_SUBSCRIPTIONS} subscriptions"
                    ))
                } else if subject_bytes + uri.len() > MAX_SUBJECT_SUBSCRIPTION_BYTES {
                    Some(format!(
                        "your sessions' subscribed URIs would pass {} KiB",
                        MAX_SUBJECT_SUBSCRIPTION_BYTES >> 10
                    ))
                } else {
                    None
                };
                if let Some(why) = over {
                    return Err(ErrorData::invalid_request(
                        format!("{why}; unsubscribe first"),
                        None,
                    ));
                }
                subs.insert(uri, subject);
                Ok(())
            },
            |_| false,
        )
        .await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        timed(
            "resources/unsubscribe",
            None,
            async {
                self.subscriptions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(request.uri.as_str());
                Ok(())
            },
            |_| false,
        )
        .await
    }

    /// Completions: the host knows every prompt and template but plugins
    /// cannot offer values yet, so a known reference gets an empty list.
    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        timed(
            "completion/complete",
            None,
            async {
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let visible = || {
                    snapshot
                        .plugins
                        .values()
                        .filter(|p| permitted(who.as_ref(), p))
                };
                let known = match &request.r#ref {
                    Reference::Prompt(p) => {
                        visible().any(|pl| pl.code.prompts.iter().any(|q| q.name == p.name))
                    }
                    Reference::Resource(r) => visible().any(|pl| {
                        pl.code
                            .resource_templates
                            .iter()
                            .any(|t| t.uri_template == r.uri)
                    }),
                    _ => false,
                };
                if !known {
                    return Err(invalid_params(
                        "completion/complete: no such prompt or resource template".into(),
                    ));
                }
                Ok(CompleteResult::default())
            },
            |_| false,
        )
        .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        timed(
            "resources/list",
            None,
            async {
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let resources: Vec<Value> = snapshot
                    .plugins
                    .values()
                    .filter(|p| permitted(who.as_ref(), p))
                    .flat_map(|p| p.code.resources.iter().map(convert::resource))
                    .collect();
                convert::to_rmcp(json!({ "resources": resources }))
            },
            |_| false,
        )
        .await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        timed(
            "resources/templates/list",
            None,
            async {
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let templates: Vec<Value> = snapshot
                    .plugins
                    .values()
                    .filter(|p| permitted(who.as_ref(), p))
                    .flat_map(|p| {
                        p.code
                            .resource_templates
                            .iter()
                            .map(convert::resource_template)
                    })
                    .collect();
                convert::to_rmcp(json!({ "resourceTemplates": templates }))
            },
            |_| false,
        )
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        timed(
            "resources/read",
            None,
            async {
                let uri = request.uri.as_str();
                if uri.len() > stockade_sdk::uri_template::MAX_URI_LEN {
                    return Err(invalid_params(format!(
                        "resource URI of {} bytes is too long (at most {} bytes)",
                        uri.len(),
                        stockade_sdk::uri_template::MAX_URI_LEN
                    )));
                }
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let owner = snapshot
                    .resource_owner_by(uri, |p| permitted(who.as_ref(), p))
                    .cloned();
                let not_found = || {
                    ErrorData::resource_not_found(
                        format!("no resource `{uri}`"),
                        Some(json!({ "uri": uri })),
                    )
                };
                let Some(plugin) = owner else {
                    return Err(not_found());
                };
                let span = tracing::info_span!("resource_read", %uri, plugin = %plugin.name);
                let report = self
                    .run(&plugin, None, Op::ReadResource { uri }, &context)
                    .instrument(span)
                    .await;
                let record = call_record(
                    Target::Resource(uri),
                    &plugin,
                    who.as_ref(),
                    uri,
                    None,
                    &report,
                );
                let metered = metered_resource(&plugin, uri);
                self.record(record, report.denied, Some(&metered), || {
                    format!("resource `{uri}`")
                })
                .await?;
                match report.outcome {
                    Ok(OpOutput::Resource(Ok(contents))) => {
                        let contents: Vec<Value> =
                            contents.iter().map(convert::resource_contents).collect();
                        let result: ReadResourceResult =
                            convert::to_rmcp(json!({ "contents": contents }))?;
                        Ok(ReadResourceResponse::Complete(result))
                    }
                    Ok(OpOutput::Resource(Err(guest_resources::ResourceError::NotFound(_)))) => {
                        Err(not_found())
                    }
                    Ok(OpOutput::Resource(Err(guest_resources::ResourceError::Failed(m)))) => Err(
                        ErrorData::internal_error(format!("reading `{uri}` failed: {m}"), None),
                    ),
                    Ok(_) => Err(ErrorData::internal_error("unexpected plugin answer", None)),
                    Err(f) => Err(ErrorData::internal_error(
                        format!("plugin `{}` failed reading `{uri}`: {f}", plugin.name),
                        None,
                    )),
                }
            },
            |_| false,
        )
        .await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        timed(
            "prompts/list",
            None,
            async {
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let prompts: Vec<Value> = snapshot
                    .plugins
                    .values()
                    .filter(|p| permitted(who.as_ref(), p))
                    .flat_map(|p| p.code.prompts.iter().map(convert::prompt))
                    .collect();
                convert::to_rmcp(json!({ "prompts": prompts }))
            },
            |_| false,
        )
        .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        timed(
            "prompts/get",
            None,
            async {
                let name = request.name.as_str();
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(&context);
                let Some(plugin) = snapshot
                    .plugins
                    .values()
                    .filter(|p| permitted(who.as_ref(), p))
                    .find(|p| p.code.prompts.iter().any(|pr| pr.name == name))
                    .cloned()
                else {
                    return Err(invalid_params(format!("unknown prompt `{name}`")));
                };
                let arguments: Vec<(String, String)> = request
                    .arguments
                    .iter()
                    .flatten()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                let span = tracing::info_span!("prompt_get", prompt = %name, plugin = %plugin.name);
                let report = self
                    .run(
                        &plugin,
                        None,
                        Op::GetPrompt {
                            name,
                            arguments: &arguments,
                        },
                        &context,
                    )
                    .instrument(span)
                    .await;
                let args_json = request
                    .arguments
                    .as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default())
                    .unwrap_or_else(|| "{}".into());
                let record = call_record(
                    Target::Prompt(name),
                    &plugin,
                    who.as_ref(),
                    &args_json,
                    request.arguments.as_ref().map(|a| redact_object(a, 2048)),
                    &report,
                );
                self.record(record, report.denied, None, || format!("prompt `{name}`"))
                    .await?;
                match report.outcome {
                    Ok(OpOutput::Prompt(Ok(p))) => {
                        let result: GetPromptResult = convert::to_rmcp(convert::prompt_result(&p))?;
                        Ok(GetPromptResponse::Complete(result))
                    }
                    Ok(OpOutput::Prompt(Err(guest_prompts::PromptError::InvalidArguments(m)))) => {
                        Err(invalid_params(format!(
                            "invalid arguments for prompt `{name}`: {m}"
                        )))
                    }
                    Ok(OpOutput::Prompt(Err(guest_prompts::PromptError::UnknownPrompt(m)))) => {
                        Err(invalid_params(format!("unknown prompt `{name}`: {m}")))
                    }
                    Ok(OpOutput::Prompt(Err(guest_prompts::PromptError::Failed(m)))) => Err(
                        ErrorData::internal_error(format!("prompt `{name}` failed: {m}"), None),
                    ),
                    Ok(_) => Err(ErrorData::internal_error("unexpected plugin answer", None)),
                    Err(f) => Err(ErrorData::internal_error(
                        format!("plugin `{}` failed rendering `{name}`: {f}", plugin.name),
                        None,
                    )),
                }
            },
            |_| false,
        )
        .await
    }
}

#[cfg(test)]
mod tests;
