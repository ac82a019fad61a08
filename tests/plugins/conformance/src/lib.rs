//! Test plugin: the fixtures that the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`, server mode) asks for by name. It
//! serves the tools, resources, resource template and prompts the suite's
//! scenarios call, with the texts, URIs and MIME types of the reference server.
//! It is only for running that suite against the host and is never shipped.
//!
//! Grants: `client = ["sampling", "elicitation"]` (for `test_sampling` and the
//! three `test_elicitation*` tools). Logging and progress need no grant.

use std::thread::sleep;
use std::time::Duration;

use stockade_sdk::client::{self, Elicitation, Sampling};
use stockade_sdk::prelude::*;
use stockade_sdk::schemars::{Schema, SchemaGenerator};
use stockade_sdk::serde_json::{self, Value, json};
use stockade_sdk::{log, progress};

/// A 1x1 PNG (one RGBA pixel): the reference server's image.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0xDA, 0x63, 0xFC, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x05, 0x02, 0x00, 0x5F, 0xC8, 0xF1, 0xD2, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// A WAV file: one sample of 16-bit mono silence at 8 kHz (the reference
/// server's header, plus the sample its data chunk announces).
const WAV: &[u8] = &[
    0x52, 0x49, 0x46, 0x46, 0x26, 0x00, 0x00, 0x00, 0x57, 0x41, 0x56, 0x45, 0x66, 0x6D, 0x74, 0x20,
    0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x40, 0x1F, 0x00, 0x00, 0x00, 0x7D, 0x00, 0x00,
    0x02, 0x00, 0x10, 0x00, 0x64, 0x61, 0x74, 0x61, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// The pause between the notifications of the logging and progress tools.
const STEP: Duration = Duration::from_millis(50);

fn simple_text(_: NoArgs, _: &Call) -> Result<&'static str, ToolError> {
    Ok("This is a simple text response for testing.")
}

fn image_content(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::image(PNG, "image/png"))
}

fn audio_content(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::audio(WAV, "audio/wav"))
}

fn embedded_resource(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::embedded_text(
        "test://embedded-resource",
        "text/plain",
        "This is an embedded resource content.",
    ))
}

fn multiple_content_types(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::text("Multiple content types test:")
        .with(Output::image(PNG, "image/png"))
        .with(Output::embedded_text(
            "test://mixed-content-resource",
            "application/json",
            json!({"test": "data", "value": 123}).to_string(),
        )))
}

fn with_logging(_: NoArgs, _: &Call) -> Result<&'static str, ToolError> {
    log::info("Tool execution started");
    sleep(STEP);
    log::info("Tool processing data");
    sleep(STEP);
    log::info("Tool execution completed");
    Ok("Tool with logging executed successfully")
}

fn with_progress(_: NoArgs, _: &Call) -> Result<&'static str, ToolError> {
    for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            sleep(STEP);
        }
        progress::report(p, Some(100.0), None);
    }
    Ok("Tool with progress executed successfully")
}

fn error_handling(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::error(
        "This tool intentionally returns an error for testing",
    ))
}

fn reconnection(_: NoArgs, _: &Call) -> Result<&'static str, ToolError> {
    // The reference tool closes the POST's SSE stream before it answers; a
    // plugin cannot reach the transport, so this one only takes its time.
    sleep(Duration::from_millis(100));
    Ok(
        "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
    )
}

#[derive(Deserialize, JsonSchema)]
struct SamplingArgs {
    /// The prompt to send to the client's model.
    prompt: String,
}

fn sampling(args: SamplingArgs, _: &Call) -> Result<String, ToolError> {
    let answer = Sampling::new(100).user(args.prompt).send()?;
    Ok(format!(
        "LLM response: {}",
        answer.text().unwrap_or("(not text)")
    ))
}

#[derive(Deserialize, JsonSchema)]
struct ElicitationArgs {
    /// The message to show the user.
    message: String,
}

/// Asks the user with `schema` and reports the answer as `prefix: action=..., content=...`.
fn elicit(prefix: &str, message: &str, schema: Value) -> Result<String, ToolError> {
    let (action, content) = match client::elicit(message, &schema)? {
        Elicitation::Accept(content) => ("accept", content),
        Elicitation::Decline => ("decline", json!({})),
        Elicitation::Cancel => ("cancel", json!({})),
    };
    Ok(format!("{prefix}: action={action}, content={content}"))
}

fn elicitation(args: ElicitationArgs, _: &Call) -> Result<String, ToolError> {
    let schema = json!({
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    });
    elicit("User response", &args.message, schema)
}

fn elicitation_defaults(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": true},
        },
    });
    elicit(
        "Elicitation completed",
        "Please review and update the form fields with defaults",
        schema,
    )
}

fn elicitation_enums(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    let schema = json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Choose an option",
                "enum": ["option1", "option2", "option3"],
            },
            "titledSingle": {
                "type": "string",
                "description": "Choose a titled option",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "description": "Choose a legacy option",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "description": "Choose multiple options",
                "minItems": 1,
                "maxItems": 3,
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "description": "Choose multiple titled options",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ],
                },
            },
        },
    });
    elicit(
        "Elicitation completed",
        "Please choose from the enum fields",
        schema,
    )
}

/// The arguments of `json_schema_2020_12_tool`. Its input schema is written by
/// hand so that it keeps `$defs`, `$ref` and `additionalProperties` exactly.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Schema2020Args {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<Address>,
}

#[derive(Deserialize, Serialize)]
struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    city: Option<String>,
}

impl JsonSchema for Schema2020Args {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Schema2020Args".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The SDK adds `"$schema"` (2020-12) to every input schema.
        stockade_sdk::schemars::json_schema!({
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {
                        "street": {"type": "string"},
                        "city": {"type": "string"},
                    },
                },
            },
            "properties": {
                "name": {"type": "string"},
                "address": {"$ref": "#/$defs/address"},
            },
            "additionalProperties": false,
        })
    }
}

fn json_schema_2020_12(args: Schema2020Args, _: &Call) -> Result<String, ToolError> {
    Ok(format!(
        "JSON Schema 2020-12 tool called with: {}",
        serde_json::to_string(&args)?
    ))
}

/// The arguments of `test_header_param`: `region` is mirrored into the
/// `Mcp-Param-Region` header by 2026-07-28 clients (`x-mcp-header`), which the
/// host checks against the body.
#[derive(Deserialize)]
struct HeaderParamArgs {
    region: String,
}

impl JsonSchema for HeaderParamArgs {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HeaderParamArgs".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        stockade_sdk::schemars::json_schema!({
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
            },
            "required": ["region"],
        })
    }
}

fn touch_watched(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    Ok(stockade_sdk::events::resource_updated("test://watched-resource").to_string())
}

fn header_param(args: HeaderParamArgs, _: &Call) -> Result<String, ToolError> {
    Ok(format!("region: {}", args.region))
}

stockade_sdk::plugin! {
    description: "Fixtures for the official MCP conformance suite (tests only)",
    capabilities: { client: ["sampling", "elicitation"] },
    tools: [
        Tool::new("test_simple_text", "Returns a simple text response", simple_text),
        Tool::new("test_image_content", "Returns a PNG image", image_content),
        Tool::new("test_audio_content", "Returns a WAV audio clip", audio_content),
        Tool::new("test_embedded_resource", "Returns an embedded text resource", embedded_resource),
        Tool::new(
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource",
            multiple_content_types,
        ),
        Tool::new("test_tool_with_logging", "Logs three messages while it runs", with_logging),
        Tool::new("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100", with_progress),
        Tool::new("test_error_handling", "Returns an error result on purpose", error_handling),
        Tool::new("test_reconnection", "Takes 100 ms, then answers (SSE polling test)", reconnection),
        Tool::new("test_sampling", "Asks the client's model the given prompt", sampling),
        Tool::new("test_elicitation", "Asks the user for a username and an email", elicitation),
        Tool::new(
            "test_elicitation_sep1034_defaults",
            "Asks the user with a form whose fields have defaults (SEP-1034)",
            elicitation_defaults,
        ),
        Tool::new(
            "test_elicitation_sep1330_enums",
            "Asks the user with every kind of enum field (SEP-1330)",
            elicitation_enums,
        ),
        Tool::new(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            json_schema_2020_12,
        ),
        Tool::new(
            "test_touch_watched_resource",
            "Says test://watched-resource changed (subscribers hear resources/updated)",
            touch_watched,
        ),
        Tool::new(
            "test_header_param",
            "Echoes a region its clients also send as the Mcp-Param-Region header",
            header_param,
        ),
    ],
    resources: [
        Resource::text("test://static-text", "static-text", || {
            Ok("This is the content of the static text resource.".into())
        })
        .title("Static Text Resource")
        .description("A static text resource for testing"),
        Resource::blob("test://static-binary", "static-binary", "image/png", || Ok(PNG.to_vec()))
            .title("Static Binary Resource")
            .description("A static binary resource (a PNG image) for testing"),
        Resource::text("test://watched-resource", "watched-resource", || {
            Ok("Watched resource content".into())
        })
        .title("Watched Resource")
        .description("A resource for subscription tests"),
        ResourceTemplate::text("test://template/{id}/data", "template", |_uri, vars| {
            let id = &vars[0];
            Ok(json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")})
                .to_string())
        })
        .title("Template Resource")
        .description("A resource template with an id parameter")
        .mime_type("application/json"),
    ],
    prompts: [
        Prompt::new("test_simple_prompt", "A simple prompt without arguments")
            .render(|_| Ok(vec![PromptMessage::user("This is a simple prompt for testing.")])),
        Prompt::new("test_prompt_with_arguments", "A prompt with two required arguments")
            .argument("arg1", "First test argument", true)
            .argument("arg2", "Second test argument", true)
            .render(|args| {
                Ok(vec![PromptMessage::user(format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    args["arg1"], args["arg2"]
                ))])
            }),
        Prompt::new("test_prompt_with_embedded_resource", "A prompt with an embedded resource")
            .argument("resourceUri", "URI of the resource to embed", true)
            .render(|args| {
                Ok(vec![
                    PromptMessage::user(Content::embedded_text(
                        args["resourceUri"].clone(),
                        "text/plain",
                        "Embedded resource content for testing.",
                    )),
                    PromptMessage::user("Please process the embedded resource above."),
                ])
            }),
        Prompt::new(
            "test_input_required_result_prompt",
            "Asks the user for context before rendering (MRTR on prompts/get)",
        )
        .render(|_| {
            let schema = json!({
                "type": "object",
                "properties": {"context": {"type": "string", "description": "What you are working on"}},
                "required": ["context"],
            });
            let context = match client::elicit("What context should the prompt use?", &schema)? {
                Elicitation::Accept(content) => content["context"].as_str().unwrap_or("").to_owned(),
                Elicitation::Decline | Elicitation::Cancel => "(none given)".to_owned(),
            };
            Ok(vec![PromptMessage::user(format!("Prompt with context: {context}"))])
        }),
        Prompt::new("test_prompt_with_image", "A prompt with an image")
            .render(|_| {
                Ok(vec![
                    PromptMessage::user(Content::image(PNG, "image/png")),
                    PromptMessage::user("Please analyze the image above."),
                ])
            }),
    ],
}
