//! `resources/list`, `resources/templates/list`, `resources/read`, and the
//! legacy (2025-11-25) `resources/subscribe` and `resources/unsubscribe`.

use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};
use tracing::Instrument;

use super::era::{Cache, Era};
use super::mrtr;
use super::results::{Target, call_record, metered_resource};
use super::{StockadeMcp, convert, invalid_params, permitted, principal, sessions, timed};
use crate::bindings::guest_resources;
use crate::runtime::{Op, OpOutput};

impl StockadeMcp {
    pub(super) async fn resources_list(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.list("resources/list", "resources", &context, |p| {
            p.code.resources.iter().map(convert::resource).collect()
        })
        .await
    }

    pub(super) async fn resource_templates_list(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.list(
            "resources/templates/list",
            "resourceTemplates",
            &context,
            |p| {
                p.code
                    .resource_templates
                    .iter()
                    .map(convert::resource_template)
                    .collect()
            },
        )
        .await
    }

    pub(super) async fn resources_read(
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
                let era = Era::of(&context);
                let log = self.log_level_for(&era, &context)?;
                let exchange = mrtr::Exchange::begin(
                    &self.shared.request_state,
                    era.modern,
                    &context,
                    "resources/read",
                    uri,
                    "",
                    request.input_responses.as_ref(),
                    request.request_state.as_deref(),
                )?;
                let round = exchange.as_ref().map(mrtr::Exchange::round);
                let span = tracing::info_span!("resource_read", %uri, plugin = %plugin.name);
                let report = self
                    .run(
                        &plugin,
                        None,
                        Op::ReadResource { uri },
                        &context,
                        log,
                        round,
                    )
                    .instrument(span)
                    .await;
                let mut record = call_record(
                    &era,
                    Target::Resource(uri),
                    &plugin,
                    who.as_ref(),
                    uri,
                    None,
                    &report,
                );
                let settled = mrtr::Exchange::settle(
                    exchange.as_ref(),
                    &self.shared.request_state,
                    report.outcome.is_err()
                        || matches!(report.outcome, Ok(OpOutput::Resource(Err(_)))),
                    &mut record,
                );
                let metered = metered_resource(&plugin, uri);
                self.record(record, report.denied, Some(&metered), || {
                    format!("resource `{uri}`")
                })
                .await?;
                match settled {
                    mrtr::Settled::Asked(asked) => {
                        return Ok(ReadResourceResponse::InputRequired(asked));
                    }
                    mrtr::Settled::Missing(caps) => {
                        return Err(ErrorData::missing_required_client_capability(caps));
                    }
                    mrtr::Settled::CannotAsk(why) => {
                        return Err(ErrorData::internal_error(
                            format!("reading `{uri}`: {why}"),
                            None,
                        ));
                    }
                    mrtr::Settled::Done => {}
                }
                match report.outcome {
                    Ok(OpOutput::Resource(Ok(contents))) => {
                        let contents: Vec<Value> =
                            contents.iter().map(convert::resource_contents).collect();
                        let mut read = json!({ "contents": contents });
                        era.stamp(&mut read, Some(Cache::private()));
                        let result: ReadResourceResult = convert::to_rmcp(read)?;
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

    pub(super) async fn resources_subscribe(
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

    pub(super) async fn resources_unsubscribe(
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
}
