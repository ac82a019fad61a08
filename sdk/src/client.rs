//! Requests from the plugin back to the MCP client of the current call:
//! sampling (ask the client's model) and elicitation (ask the user).
//!
//! Needs a grant (`[plugins.NAME.grants] client = ["sampling", "elicitation"]`);
//! without it every function returns [`CapabilityError::Denied`]. A client that
//! does not support the request returns [`CapabilityError::Unsupported`].
//!
//! ```
//! use stockade_sdk::client::Sampling;
//!
//! # fn f() -> Result<(), stockade_sdk::CapabilityError> {
//! let answer = Sampling::new(200)
//!     .system_prompt("You are terse.")
//!     .user("Name one prime number.")
//!     .send()?;
//! println!("{}", answer.text().unwrap_or_default());
//! # Ok(()) }
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::bindings::stockade::plugin::client as wit;
use crate::types::{Content, Role};
use crate::{CapabilityError, ToolError};

pub use wit::{SamplingMessage, SamplingRequest, SamplingResponse};

/// Asks the client's model to generate a message (MCP `sampling/createMessage`).
/// [`Sampling`] builds the request.
pub fn create_message(request: &SamplingRequest) -> Result<SamplingResponse, CapabilityError> {
    Ok(wit::create_message(request)?)
}

/// A sampling request under construction.
#[derive(Debug, Clone)]
pub struct Sampling {
    request: SamplingRequest,
}

impl Sampling {
    /// A request generating at most `max_tokens` tokens.
    pub fn new(max_tokens: u32) -> Self {
        Self {
            request: SamplingRequest {
                messages: Vec::new(),
                system_prompt: None,
                max_tokens,
                temperature: None,
                stop_sequences: Vec::new(),
                model_hints: Vec::new(),
            },
        }
    }

    /// Appends a user message (text or other [`Content`]).
    pub fn user(self, content: impl Into<Content>) -> Self {
        self.message(Role::User, content)
    }

    /// Appends an assistant message.
    pub fn assistant(self, content: impl Into<Content>) -> Self {
        self.message(Role::Assistant, content)
    }

    fn message(mut self, role: Role, content: impl Into<Content>) -> Self {
        self.request.messages.push(SamplingMessage {
            role,
            content: content.into(),
        });
        self
    }

    /// A system prompt the client may use.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.request.system_prompt = Some(prompt.into());
        self
    }

    /// The sampling temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.request.temperature = Some(temperature);
        self
    }

    /// Adds a sequence that stops generation.
    pub fn stop_sequence(mut self, stop: impl Into<String>) -> Self {
        self.request.stop_sequences.push(stop.into());
        self
    }

    /// Adds a model the plugin would prefer (a hint; best first).
    pub fn model_hint(mut self, model: impl Into<String>) -> Self {
        self.request.model_hints.push(model.into());
        self
    }

    /// The request as built.
    pub fn request(&self) -> &SamplingRequest {
        &self.request
    }

    /// Sends the request and waits for the client's answer.
    pub fn send(&self) -> Result<SamplingResponse, CapabilityError> {
        create_message(&self.request)
    }
}

impl SamplingResponse {
    /// The generated text, when the content is text.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// The user's answer to an elicitation.
#[derive(Debug, Clone, PartialEq)]
pub enum Elicitation {
    /// The user submitted the form: the answer, a JSON object.
    Accept(serde_json::Value),
    /// The user explicitly declined.
    Decline,
    /// The user dismissed the request without choosing.
    Cancel,
}

/// Asks the user for information (MCP `elicitation/create`, form mode).
/// `requested_schema` is a flat JSON Schema object of the fields to ask for.
pub fn elicit(
    message: &str,
    requested_schema: &serde_json::Value,
) -> Result<Elicitation, CapabilityError> {
    let request = wit::ElicitationRequest {
        message: message.to_owned(),
        requested_schema: requested_schema.to_string(),
    };
    Ok(match wit::elicit(&request)? {
        wit::ElicitationResponse::Accept(json) => {
            Elicitation::Accept(serde_json::from_str(&json).map_err(|e| {
                CapabilityError::Failed(format!("the client's elicitation answer is not JSON: {e}"))
            })?)
        }
        wit::ElicitationResponse::Decline => Elicitation::Decline,
        wit::ElicitationResponse::Cancel => Elicitation::Cancel,
    })
}

/// Asks the user to fill in a `T` (a flat struct of strings, numbers, booleans
/// and enums; its schema is derived). `Ok(None)` when the user declines or cancels.
pub fn elicit_as<T: DeserializeOwned + JsonSchema>(message: &str) -> Result<Option<T>, ToolError> {
    let mut schema = schemars::schema_for!(T);
    schema.remove("$schema");
    match elicit(message, schema.as_value())? {
        Elicitation::Accept(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ToolError::failed(format!("the user's answer does not fit: {e}"))),
        Elicitation::Decline | Elicitation::Cancel => Ok(None),
    }
}
