//! What a plugin operation leaves behind: its audit record and its MCP result.

use serde_json::Value;

use super::convert;
use super::era::Era;
use crate::audit::{ToolCallRecord, sha256_hex};
use crate::auth::Principal;
use crate::bindings::{guest_prompts, guest_resources, guest_tools};
use crate::plugins::Plugin;
use crate::runtime::{CallFailure, OpOutput};

/// What a plugin operation was asked for, for its audit record.
pub(super) enum Target<'a> {
    Tool(&'a str),
    Resource(&'a str),
    Prompt(&'a str),
}

/// The audit record of one plugin operation (tool call, resource read, prompt
/// rendering): who, what, with which arguments, and how it ended.
pub(super) fn call_record(
    era: &Era,
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
        protocol: Some(era.revision()),
        client: era.client_label(),
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
pub(super) fn tool_result(
    name: &str,
    plugin: &Plugin,
    outcome: &Result<OpOutput, CallFailure>,
) -> Value {
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
pub(super) fn metered_resource(plugin: &Plugin, uri: &str) -> String {
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
