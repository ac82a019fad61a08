use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::exports::stockade::plugin::tools as wit;
use crate::{Output, ToolError};

type Handler = Box<dyn Fn(Value, &Call) -> Result<Output, ToolError>>;

/// One tool: its name, description, hints, and the handler that runs it.
///
/// The input schema comes from the handler's argument type (through
/// [`JsonSchema`]); doc comments on its fields become their descriptions, which
/// the model reads. The arguments type must be a struct with named fields (use
/// [`NoArgs`] for none).
pub struct Tool {
    name: String,
    title: Option<String>,
    description: String,
    annotations: wit::ToolAnnotations,
    input_schema: fn() -> Schema,
    output_schema: Option<fn() -> Schema>,
    handler: Handler,
}

impl Tool {
    /// A tool whose handler returns content ([`Output`], `String`, ...).
    ///
    /// ```
    /// # use stockade_sdk::prelude::*;
    /// #[derive(Deserialize, JsonSchema)]
    /// struct Args {
    ///     /// The text to echo.
    ///     text: String,
    /// }
    /// let tool = Tool::new("echo", "Echoes text", |args: Args, _call: &Call| {
    ///     Ok::<_, ToolError>(args.text)
    /// });
    /// # let _ = tool;
    /// ```
    pub fn new<A, O, F>(name: impl Into<String>, description: impl Into<String>, handler: F) -> Self
    where
        A: DeserializeOwned + JsonSchema,
        O: Into<Output>,
        F: Fn(A, &Call) -> Result<O, ToolError> + 'static,
    {
        Self {
            name: name.into(),
            title: None,
            description: description.into(),
            annotations: wit::ToolAnnotations {
                read_only: None,
                destructive: None,
                idempotent: None,
                open_world: None,
            },
            input_schema: schema_of::<A>,
            output_schema: None,
            handler: Box::new(move |args, call| {
                let args = decode_args::<A>(call.tool(), args)?;
                handler(args, call).map(Into::into)
            }),
        }
    }

    /// A tool whose handler returns a typed value: the result carries it as
    /// structured content (plus a text copy of the JSON), and the tool declares its
    /// output schema. `T` must serialize to a JSON object (a struct).
    ///
    /// ```
    /// # use stockade_sdk::prelude::*;
    /// #[derive(Deserialize, JsonSchema)]
    /// struct Pair { a: f64, b: f64 }
    /// #[derive(Serialize, JsonSchema)]
    /// struct Sum { sum: f64 }
    /// let tool = Tool::structured("add", "Adds two numbers", |p: Pair, _: &Call| {
    ///     Ok(Sum { sum: p.a + p.b })
    /// });
    /// # let _ = tool;
    /// ```
    pub fn structured<A, T, F>(
        name: impl Into<String>,
        description: impl Into<String>,
        handler: F,
    ) -> Self
    where
        A: DeserializeOwned + JsonSchema,
        T: Serialize + JsonSchema,
        F: Fn(A, &Call) -> Result<T, ToolError> + 'static,
    {
        let mut tool = Self::new(name, description, move |args: A, call: &Call| {
            Output::json(&handler(args, call)?)
        });
        tool.output_schema = Some(schema_of::<T>);
        tool
    }

    /// A short human-readable title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Hint: the tool does not change its environment.
    pub fn read_only(mut self) -> Self {
        self.annotations.read_only = Some(true);
        self
    }

    /// Hint: the tool may perform destructive updates.
    pub fn destructive(mut self) -> Self {
        self.annotations.read_only = Some(false);
        self.annotations.destructive = Some(true);
        self
    }

    /// Hint: calling it again with the same arguments has no further effect.
    pub fn idempotent(mut self) -> Self {
        self.annotations.idempotent = Some(true);
        self
    }

    /// Hint: the tool interacts with an open world of external entities.
    pub fn open_world(mut self) -> Self {
        self.annotations.open_world = Some(true);
        self
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the tool with `arguments` (a JSON object as text), as the host would.
    /// Handy in a plugin's own unit tests.
    pub fn call(&self, arguments: &str, call: &Call) -> Result<Output, ToolError> {
        let args = parse_args(&self.name, arguments)?;
        (self.handler)(args, call)
    }

    /// The tool as listed to the host, or why its schemas are unusable.
    pub(crate) fn describe(&self) -> Result<wit::Tool, String> {
        let input = object_schema((self.input_schema)())
            .map_err(|t| format!("the arguments of tool `{}` {t}", self.name))?;
        let output = match self.output_schema {
            Some(schema) => Some(
                object_schema(schema())
                    .map_err(|t| format!("the result of tool `{}` {t}", self.name))?,
            ),
            None => None,
        };
        Ok(wit::Tool {
            name: self.name.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            input_schema: input,
            output_schema: output,
            annotations: self.annotations,
        })
    }
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .field("title", &self.title)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Arguments for a tool that takes none: `Tool::new("ping", "...", |_: NoArgs, _: &Call| ...)`.
/// Its schema is an empty object; any object is accepted.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct NoArgs {}

impl JsonSchema for NoArgs {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NoArgs".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> Schema {
        schemars::json_schema!({ "type": "object", "properties": {} })
    }
}

/// The context of one tool call: which tool, and who is calling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    tool: String,
    subject: Option<String>,
    client_id: Option<String>,
}

impl Call {
    /// A call context, for tests of handlers outside the host.
    pub fn new(
        tool: impl Into<String>,
        subject: Option<String>,
        client_id: Option<String>,
    ) -> Self {
        Self {
            tool: tool.into(),
            subject,
            client_id,
        }
    }

    /// The name of the tool being called.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The authenticated subject (user), as established by the host, when known.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The OAuth client the call came through, when known.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
}

fn schema_of<T: JsonSchema>() -> Schema {
    let mut schema = schemars::schema_for!(T);
    // The Rust type's name means nothing to a client or a model.
    if let Some(root) = schema.as_object_mut() {
        root.remove("title");
        root.values_mut().for_each(portable);
    }
    schema
}

/// The `format` values JSON Schema 2020-12 defines; clients know these.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Rewrites what schemars says in Rust terms into plain JSON Schema that every
/// client understands: a non-standard `format` (`uint32`, `double`, ...) is
/// dropped, and unsigned integers keep their meaning as `minimum: 0`.
fn portable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(f)) = map.get("format")
                && !STANDARD_FORMATS.contains(&f.as_str())
            {
                let unsigned = f.starts_with("uint");
                map.remove("format");
                if unsigned && !map.contains_key("minimum") {
                    map.insert("minimum".into(), 0.into());
                }
            }
            map.values_mut().for_each(portable);
        }
        Value::Array(items) => items.iter_mut().for_each(portable),
        _ => {}
    }
}

/// Requires a JSON Schema of `"type": "object"`; returns it as JSON text.
fn object_schema(schema: Schema) -> Result<String, String> {
    let ty = schema.get("type").cloned();
    match ty {
        Some(Value::String(t)) if t == "object" => {}
        other => {
            let got = other.map_or_else(|| "no `type`".to_owned(), |t| format!("type {t}"));
            return Err(format!(
                "must be a JSON object (a struct with named fields), but its schema has {got}"
            ));
        }
    }
    Ok(serde_json::to_string(&schema).expect("a schema serializes"))
}

fn parse_args(tool: &str, arguments: &str) -> Result<Value, ToolError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str(arguments) {
        Ok(Value::Null) => Ok(Value::Object(Default::default())),
        Ok(value) => Ok(value),
        Err(e) => Err(ToolError::InvalidArguments(format!(
            "invalid arguments for tool `{tool}`: not valid JSON: {e}"
        ))),
    }
}

fn decode_args<A: DeserializeOwned>(tool: &str, args: Value) -> Result<A, ToolError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ToolError::InvalidArguments(if path == "." {
            format!("invalid arguments for tool `{tool}`: {inner}")
        } else {
            format!("invalid arguments for tool `{tool}` at `{path}`: {inner}")
        })
    })
}

/// `tools.list-tools`. A tool whose schemas are not objects is a bug in the
/// plugin: it panics with a message saying which tool, so the host refuses to load it.
pub fn list_tools(tools: &[Tool]) -> Vec<wit::Tool> {
    tools
        .iter()
        .map(|t| t.describe().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// `tools.call-tool`.
pub fn call_tool(
    tools: &[Tool],
    name: String,
    arguments: &str,
    caller: wit::Caller,
) -> Result<wit::CallResult, wit::ToolError> {
    let Some(tool) = tools.iter().find(|t| t.name == name) else {
        return Err(wit::ToolError::UnknownTool(format!(
            "no tool named `{name}` in this plugin"
        )));
    };
    let call = Call {
        tool: name,
        subject: caller.subject,
        client_id: caller.client_id,
    };
    tool.call(arguments, &call)
        .map(Output::into_call_result)
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Content;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    struct GreetArgs {
        /// Who to greet.
        name: String,
        /// Whether to shout.
        #[serde(default)]
        excited: bool,
    }

    #[derive(Deserialize, JsonSchema)]
    struct CountArgs {
        #[allow(dead_code)]
        count: u32,
    }

    #[derive(Deserialize, JsonSchema)]
    struct Pair {
        a: i64,
        b: i64,
    }

    #[derive(Serialize, JsonSchema)]
    struct Sum {
        /// The sum.
        sum: i64,
    }

    fn greet(args: GreetArgs, _call: &Call) -> Result<Output, ToolError> {
        let end = if args.excited { "!" } else { "." };
        Ok(Output::text(format!("Hello, {}{end}", args.name)))
    }

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("greet", "Greet someone", greet)
                .title("Greet")
                .read_only(),
            Tool::new("count", "Counts", |_: CountArgs, _: &Call| {
                Ok::<_, ToolError>("ok")
            }),
            Tool::new("ping", "Pong", |_: NoArgs, c: &Call| {
                Ok::<_, ToolError>(c.tool().to_owned())
            }),
            Tool::structured("add", "Adds", |p: Pair, _: &Call| {
                Ok(Sum { sum: p.a + p.b })
            }),
            Tool::new(
                "text",
                "A string is not an object",
                |s: String, _: &Call| Ok::<_, ToolError>(s),
            ),
        ]
    }

    fn caller() -> wit::Caller {
        wit::Caller {
            subject: Some("alice".into()),
            client_id: None,
        }
    }

    fn call(name: &str, args: &str) -> Result<wit::CallResult, wit::ToolError> {
        call_tool(&tools(), name.into(), args, caller())
    }

    fn invalid(r: Result<wit::CallResult, wit::ToolError>) -> String {
        match r {
            Err(wit::ToolError::InvalidArguments(m)) => m,
            Err(e) => panic!("expected invalid-arguments, got {e:?}"),
            Ok(_) => panic!("expected invalid-arguments, got a result"),
        }
    }

    fn text(r: &wit::CallResult) -> &str {
        match &r.content[..] {
            [Content::Text(t)] => t,
            other => panic!("expected one text, got {other:?}"),
        }
    }

    #[test]
    fn decodes_and_calls() {
        let r = call("greet", r#"{"name":"Ann","excited":true}"#).unwrap();
        assert_eq!(text(&r), "Hello, Ann!");
        assert!(!r.is_error);
        assert!(r.structured_content.is_none());
        let r = call("greet", r#"{"name":"Ann"}"#).unwrap();
        assert_eq!(text(&r), "Hello, Ann.");
    }

    #[test]
    fn missing_field() {
        assert_eq!(
            invalid(call("greet", "{}")),
            "invalid arguments for tool `greet`: missing field `name`"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        assert_eq!(
            invalid(call("count", r#"{"count":"x"}"#)),
            r#"invalid arguments for tool `count` at `count`: invalid type: string "x", expected u32"#
        );
    }

    #[test]
    fn not_json() {
        let m = invalid(call("greet", "{nope"));
        assert!(
            m.starts_with("invalid arguments for tool `greet`: not valid JSON"),
            "{m}"
        );
    }

    #[test]
    fn no_args_accepts_empty_and_null() {
        for args in ["", "{}", "null", r#"{"extra":1}"#] {
            let r = call("ping", args).unwrap();
            assert_eq!(text(&r), "ping");
        }
    }

    #[test]
    fn unknown_tool() {
        match call("nope", "{}") {
            Err(wit::ToolError::UnknownTool(m)) => assert!(m.contains("`nope`"), "{m}"),
            _ => panic!("expected unknown-tool"),
        }
    }

    #[test]
    fn handler_error_is_failed() {
        let t = Tool::new("f", "fails", |_: NoArgs, _: &Call| {
            Err::<Output, _>(ToolError::failed("nope"))
        });
        match call_tool(&[t], "f".into(), "{}", caller()) {
            Err(wit::ToolError::Failed(m)) => assert_eq!(m, "nope"),
            _ => panic!("expected failed"),
        }
    }

    #[test]
    fn caller_reaches_handler() {
        let t = Tool::new("who", "who", |_: NoArgs, c: &Call| {
            Ok::<_, ToolError>(format!("{:?} {:?}", c.subject(), c.client_id()))
        });
        let r = call_tool(&[t], "who".into(), "{}", caller()).unwrap();
        assert_eq!(text(&r), r#"Some("alice") None"#);
    }

    #[test]
    fn input_schema_is_object_with_docs() {
        let listed = tools()[..4]
            .iter()
            .map(|t| t.describe().unwrap())
            .collect::<Vec<_>>();
        let greet = &listed[0];
        assert_eq!(greet.name, "greet");
        assert_eq!(greet.title.as_deref(), Some("Greet"));
        assert_eq!(greet.annotations.read_only, Some(true));
        assert!(greet.output_schema.is_none());
        let schema: Value = serde_json::from_str(&greet.input_schema).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["name"]["description"], "Who to greet.");
        assert_eq!(schema["properties"]["name"]["type"], "string");
        assert_eq!(schema["required"], serde_json::json!(["name"]));

        let ping: Value = serde_json::from_str(&listed[2].input_schema).unwrap();
        assert_eq!(ping["type"], "object");
        assert_eq!(ping["properties"], serde_json::json!({}));
        assert!(ping.get("description").is_none());
    }

    #[test]
    fn schemas_speak_plain_json_schema() {
        // Issue 9.6: no Rust type names, no non-standard formats.
        let listed: Vec<_> = tools()
            .iter()
            .take(4)
            .map(|t| t.describe().unwrap())
            .collect();
        for t in &listed {
            let schemas = std::iter::once(&t.input_schema).chain(t.output_schema.as_ref());
            for s in schemas {
                let v: Value = serde_json::from_str(s).unwrap();
                assert!(v.get("title").is_none(), "{s}");
                assert!(!s.contains("\"format\""), "{s}");
            }
        }
        let count = tools()
            .into_iter()
            .find(|t| t.name == "count")
            .unwrap()
            .describe()
            .unwrap();
        let v: Value = serde_json::from_str(&count.input_schema).unwrap();
        assert_eq!(v["properties"]["count"]["type"], "integer");
        assert_eq!(v["properties"]["count"]["minimum"], 0);
    }

    #[test]
    fn non_object_arguments_are_refused() {
        let e = tools()[4].describe().unwrap_err();
        assert!(
            e.contains("tool `text`") && e.contains("JSON object"),
            "{e}"
        );
    }

    #[test]
    fn structured_output() {
        let add = tools()[3].describe().unwrap();
        let out: Value = serde_json::from_str(add.output_schema.as_deref().unwrap()).unwrap();
        assert_eq!(out["type"], "object");
        assert_eq!(out["properties"]["sum"]["description"], "The sum.");

        let r = call("add", r#"{"a":2,"b":3}"#).unwrap();
        assert_eq!(r.structured_content.as_deref(), Some(r#"{"sum":5}"#));
        assert_eq!(text(&r), r#"{"sum":5}"#);
    }
}
