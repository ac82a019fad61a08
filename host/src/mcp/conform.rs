//! Holds every tool call to the schemas its tool declares: the arguments are
//! checked against `inputSchema` before the plugin runs (a plugin built without
//! the Rust SDK gets only what its schema allows), and a successful result's
//! `structuredContent` against `outputSchema` before the client sees it (MCP:
//! results must conform). The schemas were compiled when the plugin was loaded
//! (`plugins::schema`); here they are only applied.

use std::time::Duration;

use serde_json::Value;

use super::convert;
use crate::bindings::guest_tools::ToolError;
use crate::plugins::schema::ToolSchema;
use crate::runtime::{CallReport, OpOutput};

/// Why `arguments` may not reach the tool `tool`, in words the model can act
/// on, or `None` when they conform to its input schema.
pub(super) fn argument_refusal(
    schema: &ToolSchema,
    tool: &str,
    arguments: &Value,
) -> Option<String> {
    let violations = schema.check_arguments(arguments).err()?;
    Some(format!("invalid arguments for tool `{tool}`: {violations}"))
}

/// The report of a call the host answered itself because its arguments did not
/// conform: the plugin's own `invalid-arguments` answer, which the plugin never
/// gave (it was not instantiated: no fuel, no notifications), so the refusal
/// is audited (`invalid_arguments`) and answered (`isError`) as that one is.
pub(super) fn refused(message: String, duration: Duration) -> CallReport {
    CallReport {
        outcome: Ok(OpOutput::Tool(Err(ToolError::InvalidArguments(message)))),
        fuel_used: 0,
        duration,
        notify_dropped: 0,
        stderr: String::new(),
        denials: Vec::new(),
        denied: 0,
    }
}

/// Holds a tool's MCP result (`result`, as `convert` made it) to the tool's
/// output schema. A successful result whose structured content is missing or
/// does not conform is replaced by an error result saying so, the plugin's
/// structured content withheld; returns that message (for the audit record).
/// Error results and tools without an output schema pass unchanged.
pub(super) fn enforce_output(
    schema: &ToolSchema,
    tool: &str,
    plugin: &str,
    result: &mut Value,
) -> Option<String> {
    if !schema.declares_output() || result.get("isError") == Some(&Value::Bool(true)) {
        return None;
    }
    let why = match result.get("structuredContent") {
        None => "it returned no structured content".to_owned(),
        Some(structured) => schema.check_output(structured).err()?.to_string(),
    };
    let message = format!(
        "the result of tool `{tool}` (plugin `{plugin}`) did not match the tool's declared output schema: {why}"
    );
    tracing::warn!(plugin, tool, "{message}");
    *result = convert::error_result(&message);
    Some(message)
}

#[cfg(test)]
#[path = "conform_tests.rs"]
mod tests;
