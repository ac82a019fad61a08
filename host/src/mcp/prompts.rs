//! `prompts/list`, `prompts/get` and `completion/complete`.

use rmcp::model::{
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, ListPromptsResult, PaginatedRequestParams, Reference,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::Value;
use tracing::Instrument;

use super::era::Era;
use super::mrtr;
use super::results::{Target, call_record};
use super::{StockadeMcp, convert, invalid_params, permitted, principal, timed};
use crate::audit::redact_object;
use crate::bindings::guest_prompts;
use crate::runtime::{Op, OpOutput};

impl StockadeMcp {
    pub(super) async fn prompts_list(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.list("prompts/list", "prompts", &context, |p| {
            p.code.prompts.iter().map(convert::prompt).collect()
        })
        .await
    }

    pub(super) async fn prompts_get(
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
                let era = Era::of(&context);
                let log = self.log_level_for(&era, &context)?;
                let args_json = request
                    .arguments
                    .as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default())
                    .unwrap_or_else(|| "{}".into());
                let exchange = mrtr::Exchange::begin(
                    &self.shared.request_state,
                    era.modern,
                    &context,
                    "prompts/get",
                    name,
                    &args_json,
                    request.input_responses.as_ref(),
                    request.request_state.as_deref(),
                )?;
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
                        log,
                        exchange.as_ref().map(mrtr::Exchange::round),
                    )
                    .instrument(span)
                    .await;
                let mut record = call_record(
                    &era,
                    Target::Prompt(name),
                    &plugin,
                    who.as_ref(),
                    &args_json,
                    request.arguments.as_ref().map(|a| redact_object(a, 2048)),
                    &report,
                );
                let settled = mrtr::Exchange::settle(
                    exchange.as_ref(),
                    &self.shared.request_state,
                    report.outcome.is_err()
                        || matches!(report.outcome, Ok(OpOutput::Prompt(Err(_)))),
                    &mut record,
                );
                self.record(record, report.denied, None, || format!("prompt `{name}`"))
                    .await?;
                match settled {
                    mrtr::Settled::Asked(asked) => {
                        return Ok(GetPromptResponse::InputRequired(asked));
                    }
                    mrtr::Settled::Missing(caps) => {
                        return Err(ErrorData::missing_required_client_capability(caps));
                    }
                    mrtr::Settled::CannotAsk(why) => {
                        return Err(ErrorData::internal_error(
                            format!("prompt `{name}`: {why}"),
                            None,
                        ));
                    }
                    mrtr::Settled::Done => {}
                }
                match report.outcome {
                    Ok(OpOutput::Prompt(Ok(p))) => {
                        let mut rendered = convert::prompt_result(&p);
                        era.stamp(&mut rendered, None);
                        let result: GetPromptResult = convert::to_rmcp(rendered)?;
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

    /// Completions: the host knows every prompt and template but plugins
    /// cannot offer values yet, so a known reference gets an empty list.
    pub(super) async fn completion_complete(
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
                let mut none = serde_json::to_value(CompleteResult::default())
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                Era::of(&context).stamp(&mut none, None);
                convert::to_rmcp(none)
            },
            |_| false,
        )
        .await
    }
}
