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
mod era;
mod invoke;
mod link;
mod listen;
pub mod mrtr;
mod prompts;
mod resources;
mod results;
mod sessions;
mod tools;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    DiscoverResult, GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SetLevelRequestMethod, SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::audit::Audit;
use crate::auth::Principal;
use crate::plugins::{Catalog, Plugin};
use crate::runtime::Runtime;

pub use link::{McpLink, ReplyRoute};

#[cfg(feature = "bench-native")]
mod native;
pub use sessions::{RESOURCE_EVENT, Sessions};

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
    /// Seals the `requestState` of calls that ask their 2026-07-28 client
    /// something ([`mrtr`]).
    pub request_state: mrtr::StateKey,
    /// The open `subscriptions/listen` streams.
    pub listeners: listen::Listeners,
    /// Cancelled when the host starts shutting down: listen streams end.
    pub draining: tokio_util::sync::CancellationToken,
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

impl StockadeMcp {
    /// A handler for a new session.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            log_level: Arc::new(AtomicU8::new(0)),
            subscriptions: Arc::default(),
        }
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

impl StockadeMcp {
    /// A list result (`tools/list`, `prompts/list`, …) of `method`: under
    /// `key`, what `items` gives for each plugin the caller may use, in the
    /// catalog's order; caching hints and `serverInfo` for a modern request.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        key: &str,
        context: &RequestContext<RoleServer>,
        items: impl Fn(&Plugin) -> Vec<serde_json::Value>,
    ) -> Result<T, ErrorData> {
        timed(
            method,
            None,
            async {
                let snapshot = self.shared.catalog.snapshot();
                let who = principal(context);
                let all: Vec<serde_json::Value> = snapshot
                    .plugins
                    .values()
                    .filter(|p| permitted(who.as_ref(), p))
                    .flat_map(|p| items(p))
                    .collect();
                let mut list = serde_json::json!({ key: all });
                era::Era::of(context).stamp(&mut list, Some(list_cache(&snapshot)));
                convert::to_rmcp(list)
            },
            |_| false,
        )
        .await
    }
}

/// The caching hints of a list from `snapshot`: public when every caller sees
/// the same list (no plugin being served needs a scope), else private.
fn list_cache(snapshot: &crate::plugins::Snapshot) -> era::Cache {
    era::Cache::list(snapshot.plugins.values().all(|p| p.policy.scope.is_none()))
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
            .enable_resources_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_completions()
            .enable_logging()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("stockade", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools served by Stockade: each runs in a sandboxed WebAssembly plugin.",
            )
    }

    /// A tool's declared input schema, for rmcp's check of a 2026-07-28
    /// request's `Mcp-Param-*` headers against its `x-mcp-header` properties
    /// (the schema is shared, not copied: this is on every call's path).
    fn get_tool(&self, name: &str) -> Option<Tool> {
        let snapshot = self.shared.catalog.snapshot();
        let (plugin, index) = snapshot.tools.get(name)?;
        let schema = plugin.schemas.get(*index)?;
        Some(Tool::new(name.to_owned(), "", schema.declared_input()))
    }

    /// `subscriptions/listen` (2026-07-28): the part of the filter honoured.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(listen::accepted(requested))
    }

    /// One `subscriptions/listen` stream, until the client closes it.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.listen_stream(context).await
    }

    /// `server/discover`: the same for every caller, so cacheable by anyone.
    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        )
        .with_ttl_ms(era::DISCOVER_TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        self.shared
            .sessions
            .add(context.peer, self.subscriptions.clone());
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Gone in 2026-07-28: a modern request names its level in its `_meta`.
        if era::Era::of(&context).modern {
            return Err(ErrorData::method_not_found::<SetLevelRequestMethod>());
        }
        let level = serde_json::to_value(request.level)
            .ok()
            .and_then(|v| v.as_str().map(link::level_index))
            .unwrap_or(0);
        self.log_level.store(level, Ordering::Relaxed);
        Ok(())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.tools_list(request, context).await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.tools_call(request, context).await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.resources_subscribe(request, context).await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.resources_unsubscribe(request, context).await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.completion_complete(request, context).await
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.resources_list(request, context).await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.resource_templates_list(request, context).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.resources_read(request, context).await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.prompts_list(request, context).await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.prompts_get(request, context).await
    }
}

#[cfg(test)]
mod tests;
