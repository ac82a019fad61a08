//! Test plugin: every content type, structured output, logging and progress,
//! failures, and every capability (each `try_*` tool returns the capability's
//! error message as plain text when it is denied).

use stockade_sdk::client::{self, Elicitation, Sampling};
use stockade_sdk::exec::Command;
use stockade_sdk::http::Request;
use stockade_sdk::prelude::*;
use stockade_sdk::sql::{self, Value};
use stockade_sdk::{log, progress};

/// A 1x1 transparent PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

/// A WAV file: 8 samples of 8-bit mono silence at 8 kHz.
fn wav() -> Vec<u8> {
    let samples = [0x80u8; 8];
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes()); // sample rate
    w.extend_from_slice(&8000u32.to_le_bytes()); // byte rate
    w.extend_from_slice(&1u16.to_le_bytes()); // block align
    w.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    w.extend_from_slice(&samples);
    w
}

#[derive(Deserialize, JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

fn echo(args: EchoArgs, _: &Call) -> Result<String, ToolError> {
    Ok(args.text)
}

fn everything(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::text("one of each content type")
        .with(Output::image(PNG, "image/png"))
        .with(Output::audio(wav(), "audio/wav"))
        .with(Output::embedded_text(
            "kitchen://embedded",
            "text/plain",
            "embedded text",
        ))
        .with(Output::resource_link("kitchen://readme", "readme")))
}

#[derive(Deserialize, JsonSchema)]
struct StatsArgs {
    /// The numbers to summarize.
    numbers: Vec<f64>,
}

#[derive(Serialize, JsonSchema)]
struct Stats {
    /// How many numbers.
    count: usize,
    /// Their sum.
    sum: f64,
    /// Their mean; absent for no numbers.
    mean: Option<f64>,
}

fn stats(args: StatsArgs, _: &Call) -> Result<Stats, ToolError> {
    let count = args.numbers.len();
    let sum = args.numbers.iter().sum();
    Ok(Stats {
        count,
        sum,
        mean: (count > 0).then(|| sum / count as f64),
    })
}

fn log_and_progress(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    for step in 1..=3 {
        log::info(format!("step {step} of 3"));
        progress::report(step as f64, Some(3.0), Some(&format!("step {step}")));
    }
    Ok("logged and reported 3 steps".into())
}

fn fail(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(Output::error("it failed on purpose"))
}

fn fail_hard(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    Err(ToolError::failed("it failed hard on purpose"))
}

fn try_exec(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    Ok(match Command::new("/bin/echo").arg("hi").run() {
        Ok(out) => out.stdout_str().into_owned(),
        Err(e) => e.to_string(),
    })
}

fn read_env(_: NoArgs, _: &Call) -> Result<String, ToolError> {
    Ok(std::env::var("HOME").unwrap_or_else(|_| "not set".into()))
}

#[derive(Deserialize, JsonSchema)]
struct PathArgs {
    /// The file to read.
    path: String,
}

fn read_file(args: PathArgs, _: &Call) -> Result<Output, ToolError> {
    Ok(match std::fs::read_to_string(&args.path) {
        Ok(text) => Output::text(text),
        Err(e) => Output::error(e.to_string()),
    })
}

#[derive(Deserialize, JsonSchema)]
struct UrlArgs {
    /// The URL to GET.
    url: String,
}

fn try_http(args: UrlArgs, _: &Call) -> Result<String, ToolError> {
    Ok(match Request::get(&args.url).send() {
        Ok(resp) => format!("{} {}", resp.status, resp.text()),
        Err(e) => e.to_string(),
    })
}

#[derive(Deserialize, JsonSchema)]
struct SqlArgs {
    /// The data source.
    source: String,
    /// The statement.
    statement: String,
}

fn try_sql(args: SqlArgs, _: &Call) -> Result<String, ToolError> {
    let rows = match sql::query(&args.source, &args.statement, &[]) {
        Ok(rows) => rows,
        Err(e) => return Ok(e.to_string()),
    };
    let mut out = rows.columns.join("\t");
    for row in &rows.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                Value::Null => "NULL".into(),
                Value::Integer(i) => i.to_string(),
                Value::Real(r) => r.to_string(),
                Value::Text(t) => t.clone(),
                Value::Blob(b) => format!("<{} bytes>", b.len()),
                Value::Boolean(b) => b.to_string(),
            })
            .collect();
        out.push('\n');
        out.push_str(&cells.join("\t"));
    }
    Ok(out)
}

#[derive(Deserialize, JsonSchema)]
struct SampleArgs {
    /// What to ask the client's model.
    prompt: String,
}

fn try_sample(args: SampleArgs, _: &Call) -> Result<String, ToolError> {
    Ok(match Sampling::new(100).user(args.prompt).send() {
        Ok(resp) => resp.text().unwrap_or("(not text)").to_owned(),
        Err(e) => e.to_string(),
    })
}

#[derive(Deserialize, JsonSchema)]
struct ElicitArgs {
    /// What to ask the user.
    message: String,
}

fn try_elicit(args: ElicitArgs, _: &Call) -> Result<String, ToolError> {
    let schema = stockade_sdk::serde_json::json!({
        "type": "object",
        "properties": { "name": { "type": "string" } },
        "required": ["name"],
    });
    Ok(match client::elicit(&args.message, &schema) {
        Ok(Elicitation::Accept(answer)) => format!("accepted: {answer}"),
        Ok(Elicitation::Decline) => "declined".into(),
        Ok(Elicitation::Cancel) => "cancelled".into(),
        Err(e) => e.to_string(),
    })
}

#[derive(Deserialize, JsonSchema)]
struct TouchArgs {
    /// The resource URI to announce as changed.
    uri: String,
}

fn touch(args: TouchArgs, _call: &Call) -> Result<String, ToolError> {
    Ok(stockade_sdk::events::resource_updated(&args.uri).to_string())
}

/// Arguments taken as they come: the schema below is declared by hand and the
/// handler checks nothing, as a plugin built without the Rust SDK might. Only
/// the host's check against the declared schema stands between the model and it.
#[derive(Deserialize)]
#[serde(transparent)]
struct Unchecked(stockade_sdk::serde_json::Value);

impl JsonSchema for Unchecked {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Unchecked".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 1, "description": "A positive count"}},
            "required": ["n"]
        })
    }
}

/// Echoes its raw arguments, and logs that it ran (a trace the host would
/// forward if the plugin were ever called with arguments it refused).
fn unchecked(args: Unchecked, _: &Call) -> Result<String, ToolError> {
    log::info("unchecked ran");
    Ok(format!("ran with {}", args.0))
}

/// A result whose declared schema says `count` is an integer, but which
/// serializes it as text: the host must not pass it on as structured content.
#[derive(Serialize)]
struct Miscounted {
    count: String,
}

impl JsonSchema for Miscounted {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Miscounted".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"]
        })
    }
}

fn miscount(_: NoArgs, _: &Call) -> Result<Miscounted, ToolError> {
    Ok(Miscounted {
        count: "many".into(),
    })
}

stockade_sdk::plugin! {
    description: "Test plugin: every content type and capability",
    capabilities: {
        exec: ["/bin/echo"],
        http: ["example.com"],
        sql: ["metrics"],
        client: ["sampling", "elicitation"],
        env: ["HOME"],
        dirs: ["/data"],
    },
    tools: [
        Tool::new("echo", "Sends the text back", echo).read_only(),
        Tool::new("everything", "Returns one piece of each content type", everything),
        Tool::structured("stats", "Count, sum and mean of numbers", stats),
        Tool::new("log_and_progress", "Logs and reports progress three times", log_and_progress),
        Tool::new("fail", "Returns an error result", fail),
        Tool::new("fail_hard", "Fails with a tool error", fail_hard),
        Tool::new("try_exec", "Runs /bin/echo hi", try_exec),
        Tool::new("read_env", "Returns $HOME", read_env),
        Tool::new("read_file", "Reads a file", read_file),
        Tool::new("try_http", "GETs a URL", try_http).open_world(),
        Tool::new("try_sql", "Runs an SQL query", try_sql),
        Tool::new("try_sample", "Asks the client's model", try_sample),
        Tool::new("try_elicit", "Asks the user for a name", try_elicit),
        Tool::new("touch", "Says a resource changed", touch),
        Tool::new("unchecked", "Echoes its arguments without checking them", unchecked),
        Tool::structured("miscount", "Returns a result that breaks its output schema", miscount),
    ],
    resources: [
        Resource::text("kitchen://readme", "readme", || Ok("The kitchen sink test plugin.".into()))
            .description("What this plugin is"),
        ResourceTemplate::text("kitchen://echo/{text}", "echo", |_uri, vars| Ok(vars[0].clone())),
    ],
    prompts: [
        Prompt::new("kitchen_greeting", "Greets someone")
            .argument("name", "Who to greet", true)
            .render(|args| Ok(vec![PromptMessage::user(format!("Please greet {}.", args["name"]))])),
    ],
}
