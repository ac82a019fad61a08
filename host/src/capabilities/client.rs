//! `stockade:plugin/client`: sampling and elicitation requests to the MCP client
//! of the current call.
//!
//! Granted per plugin (`grants.client = ["sampling", "elicitation"]`). Requests
//! travel to the client as MCP JSON through [`super::ClientLink`]; a client that
//! did not declare the capability yields `unsupported`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::LinkError;
use crate::bindings::client::{
    ElicitationRequest, ElicitationResponse, Host, SamplingRequest, SamplingResponse,
};
use crate::bindings::types::{CapabilityError, Content, Media, Role};
use crate::call::CallContext;
use crate::config::ClientGrant;

fn role_json(r: Role) -> &'static str {
    match r {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn content_json(c: &Content) -> Result<Value, String> {
    Ok(match c {
        Content::Text(t) => json!({"type": "text", "text": t}),
        Content::Image(m) => {
            json!({"type": "image", "data": B64.encode(&m.data), "mimeType": m.mime_type})
        }
        Content::Audio(m) => {
            json!({"type": "audio", "data": B64.encode(&m.data), "mimeType": m.mime_type})
        }
        _ => return Err("sampling messages carry text, image or audio content only".into()),
    })
}

fn content_from(v: &Value) -> Result<Content, String> {
    let media = |v: &Value| -> Result<Media, String> {
        Ok(Media {
            data: B64
                .decode(v["data"].as_str().unwrap_or_default())
                .map_err(|e| format!("bad base64 from the client: {e}"))?,
            mime_type: v["mimeType"].as_str().unwrap_or_default().to_owned(),
            annotations: None,
        })
    };
    match v["type"].as_str() {
        Some("text") => Ok(Content::Text(
            v["text"].as_str().unwrap_or_default().to_owned(),
        )),
        Some("image") => Ok(Content::Image(media(v)?)),
        Some("audio") => Ok(Content::Audio(media(v)?)),
        other => Err(format!("unexpected content type {other:?} from the client")),
    }
}

fn link_error(e: LinkError) -> CapabilityError {
    match e {
        LinkError::Unsupported(_) => CapabilityError::Unsupported(e.to_string()),
        LinkError::Failed(m) => CapabilityError::Failed(m),
    }
}

impl super::CallContext {
    async fn client_allowed(
        &self,
        what: ClientGrant,
        name: &str,
    ) -> Result<std::sync::Arc<dyn super::ClientLink>, CapabilityError> {
        let cx = self;
        if !cx.grants.client.contains(&what) {
            let msg = cx.denied(
                &format!("client {name}"),
                &format!("grants.client = [\"{name}\"]"),
            );
            return Err(cx.deny("client", msg).await);
        }
        cx.link.clone().ok_or_else(|| {
            CapabilityError::Unsupported(format!(
                "no client is connected to this call, so {name} is unavailable"
            ))
        })
    }
}

impl Host for CallContext {
    async fn create_message(
        &mut self,
        request: SamplingRequest,
    ) -> Result<SamplingResponse, CapabilityError> {
        let link = self
            .client_allowed(ClientGrant::Sampling, "sampling")
            .await?;
        let mut messages = Vec::new();
        for m in &request.messages {
            let content = content_json(&m.content).map_err(CapabilityError::Failed)?;
            messages.push(json!({"role": role_json(m.role), "content": content}));
        }
        let mut params = json!({"messages": messages, "maxTokens": request.max_tokens});
        if let Some(s) = &request.system_prompt {
            params["systemPrompt"] = s.clone().into();
        }
        if let Some(t) = request.temperature {
            params["temperature"] = t.into();
        }
        if !request.stop_sequences.is_empty() {
            params["stopSequences"] = request.stop_sequences.clone().into();
        }
        if !request.model_hints.is_empty() {
            let hints: Vec<Value> = request
                .model_hints
                .iter()
                .map(|h| json!({"name": h}))
                .collect();
            params["modelPreferences"] = json!({"hints": hints});
        }
        let result = link.create_message(params).await.map_err(link_error)?;
        let role = match result["role"].as_str() {
            Some("user") => Role::User,
            _ => Role::Assistant,
        };
        let content = result
            .get("content")
            .map(|c| {
                if c.is_array() {
                    c[0].clone()
                } else {
                    c.clone()
                }
            })
            .unwrap_or(Value::Null);
        Ok(SamplingResponse {
            role,
            content: content_from(&content).map_err(CapabilityError::Failed)?,
            model: result["model"].as_str().unwrap_or_default().to_owned(),
            stop_reason: result["stopReason"].as_str().map(str::to_owned),
        })
    }

    async fn elicit(
        &mut self,
        request: ElicitationRequest,
    ) -> Result<ElicitationResponse, CapabilityError> {
        let link = self
            .client_allowed(ClientGrant::Elicitation, "elicitation")
            .await?;
        let schema: Value = serde_json::from_str(&request.requested_schema).map_err(|e| {
            CapabilityError::Failed(format!("the requested schema is not JSON: {e}"))
        })?;
        let params = json!({"message": request.message, "requestedSchema": schema});
        let result = link.elicit(params).await.map_err(link_error)?;
        Ok(match result["action"].as_str() {
            Some("accept") => ElicitationResponse::Accept(
                result
                    .get("content")
                    .cloned()
                    .unwrap_or(json!({}))
                    .to_string(),
            ),
            Some("decline") => ElicitationResponse::Decline,
            _ => ElicitationResponse::Cancel,
        })
    }
}
