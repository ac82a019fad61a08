//! WIT ↔ MCP conversion.
//!
//! Plugin values are turned into MCP's JSON wire format (revision 2025-11-25) and
//! then into rmcp's types through serde. Going through the wire format keeps this
//! file independent of rmcp's constructors, which change between releases, and
//! makes what reaches the client exactly what the spec says.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::bindings::guest_prompts::{Prompt, PromptResult};
use crate::bindings::guest_resources::{Resource, ResourceTemplate};
use crate::bindings::guest_tools::{CallResult, Tool};
use crate::bindings::types::{Content, ContentAnnotations, ResourceContents, Role};

fn put<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.into());
    }
}

/// A tool as MCP JSON. Schemas that do not parse were refused at load time.
pub fn tool(t: &Tool) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), t.name.clone().into());
    put(&mut m, "title", t.title.clone());
    m.insert("description".into(), t.description.clone().into());
    m.insert(
        "inputSchema".into(),
        serde_json::from_str(&t.input_schema).unwrap_or_else(|_| json!({"type": "object"})),
    );
    if let Some(out) = t
        .output_schema
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        m.insert("outputSchema".into(), out);
    }
    let a = &t.annotations;
    // The title lives on the tool itself (MCP 2025-11-25); it is not repeated
    // in the annotations.
    let mut ann = Map::new();
    put(&mut ann, "readOnlyHint", a.read_only);
    put(&mut ann, "destructiveHint", a.destructive);
    put(&mut ann, "idempotentHint", a.idempotent);
    put(&mut ann, "openWorldHint", a.open_world);
    if !ann.is_empty() {
        m.insert("annotations".into(), ann.into());
    }
    m.into()
}

fn role(r: Role) -> &'static str {
    match r {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn annotations(a: &Option<ContentAnnotations>) -> Option<Value> {
    let a = a.as_ref()?;
    let mut m = Map::new();
    if !a.audience.is_empty() {
        m.insert(
            "audience".into(),
            a.audience.iter().map(|r| Value::from(role(*r))).collect(),
        );
    }
    put(&mut m, "priority", a.priority);
    put(&mut m, "lastModified", a.last_modified.clone());
    Some(m.into())
}

/// Resource contents as MCP JSON.
pub fn resource_contents(r: &ResourceContents) -> Value {
    let mut m = Map::new();
    match r {
        ResourceContents::Text(t) => {
            m.insert("uri".into(), t.uri.clone().into());
            put(&mut m, "mimeType", t.mime_type.clone());
            m.insert("text".into(), t.text.clone().into());
        }
        ResourceContents::Blob(b) => {
            m.insert("uri".into(), b.uri.clone().into());
            put(&mut m, "mimeType", b.mime_type.clone());
            m.insert("blob".into(), B64.encode(&b.blob).into());
        }
    }
    m.into()
}

/// One content block as MCP JSON.
pub fn content(c: &Content) -> Value {
    let mut m = Map::new();
    match c {
        Content::Text(t) => {
            m.insert("type".into(), "text".into());
            m.insert("text".into(), t.clone().into());
        }
        Content::Image(media) | Content::Audio(media) => {
            let kind = if matches!(c, Content::Image(_)) {
                "image"
            } else {
                "audio"
            };
            m.insert("type".into(), kind.into());
            m.insert("data".into(), B64.encode(&media.data).into());
            m.insert("mimeType".into(), media.mime_type.clone().into());
            put(&mut m, "annotations", annotations(&media.annotations));
        }
        Content::EmbeddedResource(r) => {
            m.insert("type".into(), "resource".into());
            m.insert("resource".into(), resource_contents(r));
        }
        Content::ResourceLink(l) => {
            m.insert("type".into(), "resource_link".into());
            m.insert("uri".into(), l.uri.clone().into());
            m.insert("name".into(), l.name.clone().into());
            put(&mut m, "title", l.title.clone());
            put(&mut m, "description", l.description.clone());
            put(&mut m, "mimeType", l.mime_type.clone());
            put(&mut m, "size", l.size);
        }
    }
    m.into()
}

/// A successful call's result as MCP JSON. Structured content that is not valid
/// JSON is reported as an error result rather than passed on.
pub fn call_result(r: &CallResult) -> Value {
    let mut m = Map::new();
    let mut content: Vec<Value> = r.content.iter().map(content).collect();
    let mut is_error = r.is_error;
    if let Some(s) = &r.structured_content {
        match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                if content.is_empty() {
                    // Clients that ignore structured content still see the value.
                    content.push(json!({"type": "text", "text": s}));
                }
                m.insert("structuredContent".into(), v);
            }
            Err(e) => {
                is_error = true;
                content.push(json!({"type": "text", "text": format!("the plugin returned structured content that is not JSON: {e}")}));
            }
        }
    }
    m.insert("content".into(), content.into());
    m.insert("isError".into(), is_error.into());
    m.into()
}

/// An error result (`isError: true`) carrying `message` for the model.
pub fn error_result(message: &str) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

/// Adds the host's sentences for what it refused during the call to an error
/// result, so the model (and whoever reads the transcript) sees what was refused
/// and which grant would allow it, whatever the plugin made of the bare WASI
/// error code. Successful results are left alone.
pub fn add_host_refusals(result: &mut Value, refusals: &[String]) {
    if refusals.is_empty() || result["isError"] != true {
        return;
    }
    if let Some(content) = result["content"].as_array_mut() {
        for r in refusals {
            content.push(
                json!({"type": "text", "text": format!("Refused by the Stockade host: {r}")}),
            );
        }
    }
}

/// A resource as MCP JSON.
pub fn resource(r: &Resource) -> Value {
    let mut m = Map::new();
    m.insert("uri".into(), r.uri.clone().into());
    m.insert("name".into(), r.name.clone().into());
    put(&mut m, "title", r.title.clone());
    put(&mut m, "description", r.description.clone());
    put(&mut m, "mimeType", r.mime_type.clone());
    put(&mut m, "size", r.size);
    m.into()
}

/// A resource template as MCP JSON.
pub fn resource_template(r: &ResourceTemplate) -> Value {
    let mut m = Map::new();
    m.insert("uriTemplate".into(), r.uri_template.clone().into());
    m.insert("name".into(), r.name.clone().into());
    put(&mut m, "title", r.title.clone());
    put(&mut m, "description", r.description.clone());
    put(&mut m, "mimeType", r.mime_type.clone());
    m.into()
}

/// A prompt as MCP JSON.
pub fn prompt(p: &Prompt) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), p.name.clone().into());
    put(&mut m, "title", p.title.clone());
    put(&mut m, "description", p.description.clone());
    let args: Vec<Value> = p
        .arguments
        .iter()
        .map(|a| {
            let mut am = Map::new();
            am.insert("name".into(), a.name.clone().into());
            put(&mut am, "title", a.title.clone());
            put(&mut am, "description", a.description.clone());
            am.insert("required".into(), a.required.into());
            am.into()
        })
        .collect();
    m.insert("arguments".into(), args.into());
    m.into()
}

/// A rendered prompt as MCP JSON.
pub fn prompt_result(p: &PromptResult) -> Value {
    let mut m = Map::new();
    put(&mut m, "description", p.description.clone());
    let msgs: Vec<Value> = p
        .messages
        .iter()
        .map(|msg| json!({"role": role(msg.role), "content": content(&msg.content)}))
        .collect();
    m.insert("messages".into(), msgs.into());
    m.into()
}

/// Whether `uri` matches the RFC 6570 template `template`, with the matcher the
/// SDK uses too ([`stockade_sdk::uri_template`]): linear in the URI's length,
/// simple `{var}` expressions match within a path segment, `{+var}` any text.
pub fn uri_matches(template: &str, uri: &str) -> bool {
    stockade_sdk::uri_template::matches(template, uri)
}

/// Deserializes MCP JSON (a result object) into an rmcp type. The JSON is built
/// by this module, so a failure is a bug; it is reported as an internal error.
///
/// Every result is stamped `resultType: "complete"`, which MCP 2026-07-28
/// requires on every result; rmcp strips it again for peers that negotiated an
/// older revision, so legacy clients see the shape they know.
pub fn to_rmcp<T: serde::de::DeserializeOwned>(mut v: Value) -> Result<T, rmcp::ErrorData> {
    if let Value::Object(m) = &mut v {
        m.entry("resultType").or_insert_with(|| "complete".into());
    }
    serde_json::from_value(v).map_err(|e| {
        tracing::error!("internal conversion to MCP failed: {e}");
        rmcp::ErrorData::internal_error(format!("internal conversion error: {e}"), None)
    })
}

#[cfg(test)]
#[path = "convert_props.rs"]
mod props;
#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
