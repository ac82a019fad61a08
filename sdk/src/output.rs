use serde::Serialize;

use crate::ToolError;
use crate::bindings::exports::stockade::plugin::tools::CallResult;
use crate::types::{BlobResource, Content, Media, ResourceContents, ResourceLink, TextResource};

/// What a tool returns: content for the model and the user, optional structured
/// content, and whether it reports a failure (MCP `CallToolResult`).
///
/// ```
/// # use stockade_sdk::Output;
/// let out = Output::text("Here is the chart:")
///     .with(Output::image(vec![0x89, b'P', b'N', b'G'], "image/png"));
/// # let _ = out;
/// ```
///
/// `String` and `&str` convert into a text output, so a handler may return
/// `Result<String, ToolError>`.
#[derive(Debug, Clone, Default)]
pub struct Output {
    content: Vec<Content>,
    structured: Option<String>,
    is_error: bool,
}

impl Output {
    /// An empty output, to build on with [`with`](Self::with).
    pub fn new() -> Self {
        Self::default()
    }

    /// Text (plain or Markdown).
    pub fn text(text: impl Into<String>) -> Self {
        Content::text(text).into()
    }

    /// A failure the model should see and may correct (`is-error` set), such as a
    /// command that exited non-zero or a file that does not exist.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            is_error: true,
            ..Self::text(message)
        }
    }

    /// An image: raw bytes (not base64) and a MIME type such as `image/png`.
    pub fn image(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Content::image(data, mime_type).into()
    }

    /// An audio clip: raw bytes (not base64) and a MIME type such as `audio/wav`.
    pub fn audio(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Content::audio(data, mime_type).into()
    }

    /// A link to a resource the client may read.
    pub fn resource_link(uri: impl Into<String>, name: impl Into<String>) -> Self {
        Content::resource_link(uri, name).into()
    }

    /// A text resource embedded in the result.
    pub fn embedded_text(
        uri: impl Into<String>,
        mime_type: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Content::embedded_text(uri, mime_type, text).into()
    }

    /// A binary resource embedded in the result (raw bytes, not base64).
    pub fn embedded_blob(
        uri: impl Into<String>,
        mime_type: impl Into<String>,
        blob: impl Into<Vec<u8>>,
    ) -> Self {
        Content::embedded_blob(uri, mime_type, blob).into()
    }

    /// Structured content: `value` as JSON in `structured-content`, plus a text
    /// copy of the JSON for clients that only read content. `value` should
    /// serialize to a JSON object. Tools made with [`Tool::structured`](crate::Tool::structured)
    /// do this for you and also declare the output schema.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, ToolError> {
        let json = serde_json::to_string(value)?;
        Ok(Self {
            content: vec![Content::Text(json.clone())],
            structured: Some(json),
            is_error: false,
        })
    }

    /// Appends content (a [`Content`] or all of another `Output`'s content).
    pub fn with(mut self, content: impl Into<Output>) -> Self {
        let other = content.into();
        self.content.extend(other.content);
        if self.structured.is_none() {
            self.structured = other.structured;
        }
        self.is_error |= other.is_error;
        self
    }

    /// Marks the output as reporting a failure (see [`error`](Self::error)).
    pub fn into_error(mut self) -> Self {
        self.is_error = true;
        self
    }

    /// The content so far.
    pub fn content(&self) -> &[Content] {
        &self.content
    }

    /// The structured content, as JSON text, if any.
    pub fn structured_content(&self) -> Option<&str> {
        self.structured.as_deref()
    }

    /// Whether the output reports a failure.
    pub fn is_error(&self) -> bool {
        self.is_error
    }

    pub(crate) fn into_call_result(self) -> CallResult {
        CallResult {
            content: self.content,
            structured_content: self.structured,
            is_error: self.is_error,
        }
    }
}

impl From<Content> for Output {
    fn from(content: Content) -> Self {
        Self {
            content: vec![content],
            ..Self::default()
        }
    }
}

impl From<Vec<Content>> for Output {
    fn from(content: Vec<Content>) -> Self {
        Self {
            content,
            ..Self::default()
        }
    }
}

impl From<String> for Output {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<&str> for Output {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl Content {
    /// Text content.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// Image content: raw bytes and a MIME type.
    pub fn image(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Self::Image(media(data, mime_type))
    }

    /// Audio content: raw bytes and a MIME type.
    pub fn audio(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Self::Audio(media(data, mime_type))
    }

    /// A link to a resource, with no title, description, MIME type or size.
    pub fn resource_link(uri: impl Into<String>, name: impl Into<String>) -> Self {
        Self::ResourceLink(ResourceLink {
            uri: uri.into(),
            name: name.into(),
            title: None,
            description: None,
            mime_type: None,
            size: None,
        })
    }

    /// An embedded text resource.
    pub fn embedded_text(
        uri: impl Into<String>,
        mime_type: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self::EmbeddedResource(ResourceContents::Text(TextResource {
            uri: uri.into(),
            mime_type: Some(mime_type.into()),
            text: text.into(),
        }))
    }

    /// An embedded binary resource.
    pub fn embedded_blob(
        uri: impl Into<String>,
        mime_type: impl Into<String>,
        blob: impl Into<Vec<u8>>,
    ) -> Self {
        Self::EmbeddedResource(ResourceContents::Blob(BlobResource {
            uri: uri.into(),
            mime_type: Some(mime_type.into()),
            blob: blob.into(),
        }))
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

fn media(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Media {
    Media {
        data: data.into(),
        mime_type: mime_type.into(),
        annotations: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let out = Output::from("hi");
        assert!(matches!(out.content(), [Content::Text(t)] if t == "hi"));
        assert!(!out.is_error());
        let out: Output = String::from("x").into();
        assert_eq!(out.content().len(), 1);

        let err = Output::error("nope");
        assert!(err.is_error());
        assert!(matches!(err.content(), [Content::Text(t)] if t == "nope"));

        let all = Output::text("a")
            .with(Output::image(vec![1, 2], "image/png"))
            .with(Content::audio(vec![3], "audio/wav"))
            .with(Output::embedded_text("x://e", "text/plain", "e"))
            .with(Output::resource_link("x://r", "r"));
        match all.content() {
            [
                Content::Text(_),
                Content::Image(i),
                Content::Audio(a),
                Content::EmbeddedResource(ResourceContents::Text(e)),
                Content::ResourceLink(l),
            ] => {
                assert_eq!(
                    (i.data.as_slice(), i.mime_type.as_str()),
                    (&[1, 2][..], "image/png")
                );
                assert_eq!(a.mime_type, "audio/wav");
                assert_eq!((e.uri.as_str(), e.text.as_str()), ("x://e", "e"));
                assert_eq!(e.mime_type.as_deref(), Some("text/plain"));
                assert_eq!((l.uri.as_str(), l.name.as_str()), ("x://r", "r"));
            }
            other => panic!("unexpected content {other:?}"),
        }
        assert!(all.structured_content().is_none());

        let r = Output::json(&serde_json::json!({"k": 1}))
            .unwrap()
            .into_call_result();
        assert_eq!(r.structured_content.as_deref(), Some(r#"{"k":1}"#));
        assert!(matches!(&r.content[..], [Content::Text(t)] if t == r#"{"k":1}"#));
        assert!(!r.is_error);
    }

    #[test]
    fn tool_error_conversions() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(ToolError::from(io), ToolError::Failed("gone".into()));
        let cap = crate::CapabilityError::Denied("no exec".into());
        assert_eq!(ToolError::from(cap).to_string(), "no exec");
        let wit: crate::bindings::exports::stockade::plugin::tools::ToolError =
            ToolError::invalid_arguments("bad").into();
        assert!(
            matches!(wit, crate::bindings::exports::stockade::plugin::tools::ToolError::InvalidArguments(m) if m == "bad")
        );
    }
}
