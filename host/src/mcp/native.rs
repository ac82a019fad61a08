//! Benchmarks only (feature `bench-native`): `native_greet`, the template's
//! `greet` answered by the host itself. It takes the same path as a plugin's
//! tool (HTTP, bearer token, MCP session, audit line written and synced, the
//! call counted) except the WebAssembly instance, so `bench/run` can show
//! what the sandbox costs on top of everything else.

use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::json;

use super::{Shared, convert, principal};
use crate::audit::{AuditEvent, ToolCallRecord, sha256_hex};

/// The tool's name.
pub const TOOL: &str = "native_greet";

pub(super) async fn greet(
    shared: &Shared,
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let started = std::time::Instant::now();
    let who = principal(context);
    let name = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("world");
    let text = format!("Hello, {name}.");
    let arguments = request
        .arguments
        .as_ref()
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .unwrap_or_default();
    let record = ToolCallRecord {
        subject: who.as_ref().map(|p| p.subject.clone()),
        client_id: who.as_ref().and_then(|p| p.client_id.clone()),
        kind: "tool",
        target: TOOL.into(),
        plugin: "native".into(),
        arguments_sha256: sha256_hex(arguments.as_bytes()),
        outcome: "ok",
        duration_us: started.elapsed().as_micros() as u64,
        ..Default::default()
    };
    shared.metrics.observe(&crate::metrics::Observation {
        kind: "tool",
        plugin: "native",
        target: TOOL,
        subject: record.subject.as_deref(),
        outcome: "ok",
        limit: None,
        denials: 0,
        duration: started.elapsed(),
    });
    shared
        .audit
        .record(AuditEvent::ToolCall(Box::new(record)))
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let result: CallToolResult =
        convert::to_rmcp(json!({"content": [{"type": "text", "text": text}]}))?;
    Ok(CallToolResponse::Complete(result))
}
