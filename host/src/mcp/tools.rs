//! `tools/list` and `tools/call`.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult,
    PaginatedRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::Value;
use tracing::Instrument;

use super::era::Era;
use super::mrtr;
use super::results::{Target, call_record, tool_result};
use super::{StockadeMcp, conform, convert, invalid_params, permitted, principal, timed};
use crate::audit::redact_object;
use crate::bindings::guest_tools;
use crate::runtime::Op;

impl StockadeMcp {
    pub(super) async fn tools_list(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.list("tools/list", "tools", &context, |p| {
            p.code.tools.iter().map(convert::tool).collect()
        })
        .await
    }

    pub(super) async fn tools_call(
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
                if request.name == super::native::TOOL {
                    return super::native::greet(&self.shared, &request, &context).await;
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
                let era = Era::of(&context);
                let log = self.log_level_for(&era, &context)?;
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
                // A 2026-07-28 call's questions end it with `input_required`;
                // its retry brings the answers (mcp/mrtr.rs).
                let exchange = mrtr::Exchange::begin(
                    &self.shared.request_state,
                    era.modern,
                    &context,
                    "tools/call",
                    name,
                    &arguments,
                    request.input_responses.as_ref(),
                    request.request_state.as_deref(),
                )?;
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
                        let round = exchange.as_ref().map(mrtr::Exchange::round);
                        self.run(&plugin, Some(name), op, &context, log, round)
                            .instrument(span)
                            .await
                    }
                };
                let mut json = tool_result(name, &plugin, &report.outcome);
                let mismatch = conform::enforce_output(schema, name, &plugin.name, &mut json);
                let mut record = call_record(
                    &era,
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
                // A question asked (MRTR), or one the request could not take
                // (it did not declare the capability) in a call that then
                // failed: the client is told what it lacks (-32021).
                let settled = mrtr::Exchange::settle(
                    exchange.as_ref(),
                    &self.shared.request_state,
                    json["isError"] == true,
                    &mut record,
                );
                self.record(record, report.denied, None, || format!("tool `{name}`"))
                    .await?;
                match settled {
                    mrtr::Settled::Asked(asked) => {
                        return Ok(CallToolResponse::InputRequired(asked));
                    }
                    mrtr::Settled::Missing(caps) => {
                        return Err(ErrorData::missing_required_client_capability(caps));
                    }
                    mrtr::Settled::CannotAsk(why) => {
                        json = convert::error_result(&format!("tool `{name}`: {why}"));
                    }
                    mrtr::Settled::Done => {}
                }
                convert::add_host_refusals(&mut json, &report.denials);
                era.stamp(&mut json, None);
                let result: CallToolResult = convert::to_rmcp(json)?;
                Ok(CallToolResponse::Complete(result))
            },
            |r| matches!(r, CallToolResponse::Complete(c) if c.is_error == Some(true)),
        )
        .await
    }
}
