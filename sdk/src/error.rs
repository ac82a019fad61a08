use std::fmt;

use crate::bindings::exports::stockade::plugin::tools::ToolError as WitToolError;
use crate::bindings::stockade::plugin::types::CapabilityError as WitCapabilityError;

/// Why a tool call produced no result (WIT `tool-error`).
///
/// The message is shown to the model as an error result. For a failure the model
/// should see *as a result* (a command that exited non-zero, a missing file),
/// return [`Output::error`](crate::Output::error) instead.
///
/// `?` converts [`CapabilityError`], [`std::io::Error`], [`serde_json::Error`],
/// [`http::Error`](crate::http::Error), `String` and `&str` into
/// [`ToolError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// No tool of this name in this plugin. The SDK returns it on its own.
    UnknownTool(String),
    /// The arguments do not match the tool's input schema. The SDK returns it on
    /// its own when the arguments do not decode; the message says which field is
    /// wrong and what was expected.
    InvalidArguments(String),
    /// The tool failed.
    Failed(String),
}

impl ToolError {
    /// The arguments are invalid (for checks serde cannot express).
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::InvalidArguments(message.into())
    }

    /// The tool failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::UnknownTool(m) | Self::InvalidArguments(m) | Self::Failed(m) => m,
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ToolError {}

impl From<CapabilityError> for ToolError {
    fn from(e: CapabilityError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<std::io::Error> for ToolError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<serde_json::Error> for ToolError {
    fn from(e: serde_json::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<crate::http::Error> for ToolError {
    fn from(e: crate::http::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_owned())
    }
}

impl From<ToolError> for WitToolError {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::UnknownTool(m) => Self::UnknownTool(m),
            ToolError::InvalidArguments(m) => Self::InvalidArguments(m),
            ToolError::Failed(m) => Self::Failed(m),
        }
    }
}

/// Why a request to a host capability did not succeed (WIT `capability-error`).
///
/// Every message is written by the host for a human: it names the plugin, the
/// capability and, for [`Denied`](Self::Denied), the operator's config key that
/// would grant it. Passing it on to the model (`?` into [`ToolError`], or
/// [`Output::error`](crate::Output::error)) is usually right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityError {
    /// The operator has not granted this capability, or this use of it.
    Denied(String),
    /// A limit of the grant was reached: a timeout, an output cap, a quota.
    LimitExceeded(String),
    /// The client of the current call does not support the request.
    Unsupported(String),
    /// The request was allowed but failed.
    Failed(String),
}

impl CapabilityError {
    /// The host's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Denied(m) | Self::LimitExceeded(m) | Self::Unsupported(m) | Self::Failed(m) => m,
        }
    }

    /// Whether the operator has not granted the capability.
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Denied(_))
    }
}

impl fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CapabilityError {}

impl From<WitCapabilityError> for CapabilityError {
    fn from(e: WitCapabilityError) -> Self {
        match e {
            WitCapabilityError::Denied(m) => Self::Denied(m),
            WitCapabilityError::LimitExceeded(m) => Self::LimitExceeded(m),
            WitCapabilityError::Unsupported(m) => Self::Unsupported(m),
            WitCapabilityError::Failed(m) => Self::Failed(m),
        }
    }
}
