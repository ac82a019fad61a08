//! The JSON Schemas a plugin's tools declare, compiled once per plugin version.
//!
//! When a plugin is loaded, every tool's input schema and output schema is
//! compiled (JSON Schema 2020-12, or the draft its `$schema` names); a schema
//! that does not compile refuses the plugin, naming the tool. A call then costs
//! only the check: [`ToolSchema::check_arguments`] before the plugin runs, and
//! [`ToolSchema::check_output`] on its structured result. What is wrong is told
//! in plain words ([`Violations`]), a few violations at most and each bounded in
//! length, so the model can correct its call without the host echoing back
//! everything it sent.
//!
//! A schema never makes the host reach out: a `$ref` to anything outside the
//! schema itself (a URL, a file) is refused at load. `format` is an annotation,
//! as 2020-12 says, and is not checked.
//!
//! MCP 2026-07-28's `x-mcp-header` annotations (a property a client mirrors
//! into an `Mcp-Param-*` header) are checked at load as the revision requires
//! (a non-empty HTTP token, unique regardless of case, on a string, integer
//! or boolean property reached from the root through `properties` alone): a
//! client must drop a tool that breaks these rules, so such a plugin is
//! refused, naming the property. rmcp checks each request's headers against
//! the schema ([`ToolSchema::declared_input`]).

use std::fmt::{self, Write as _};

use jsonschema::error::{TypeKind, ValidationErrorKind as Kind};
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{JsonType, PatternOptions, ValidationError, Validator};
use serde_json::Value;

use crate::bindings::guest_tools::Tool;

/// At most this many violations are described; the others are counted.
const MAX_SHOWN: usize = 5;
/// A value quoted in a description is cut to this many bytes.
const MAX_EXCERPT: usize = 100;
/// One violation's description (or a compile error) is cut to this many bytes.
const MAX_LINE: usize = 300;
/// The backtracking budget of a `pattern` that uses look-around or
/// back-references, per match; plain patterns run in linear time.
const REGEX_BACKTRACK_LIMIT: usize = 100_000;

/// Which of a tool's two schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The schema of its arguments (`inputSchema`).
    Input,
    /// The schema of its structured results (`outputSchema`).
    Output,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Input => "input",
            Side::Output => "output",
        })
    }
}

/// Why a tool's schemas were refused when its plugin was loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema is not JSON.
    #[error("tool `{tool}`: {side} schema is not JSON: {reason}")]
    NotJson {
        /// The tool.
        tool: String,
        /// Which schema.
        side: Side,
        /// The parser's complaint.
        reason: String,
    },
    /// The input schema does not describe an object.
    #[error("tool `{tool}`: input schema must be a JSON Schema object with \"type\": \"object\"")]
    InputNotObject {
        /// The tool.
        tool: String,
    },
    /// The output schema is not a JSON object.
    #[error("tool `{tool}`: output schema must be a JSON object")]
    OutputNotObject {
        /// The tool.
        tool: String,
    },
    /// An `x-mcp-header` annotation breaks MCP's rules for it.
    #[error("tool `{tool}`: input schema: {reason}")]
    ParamHeader {
        /// The tool.
        tool: String,
        /// What is wrong, naming the property.
        reason: String,
    },
    /// The schema is not a valid JSON Schema for its draft, or it refers to
    /// something outside itself.
    #[error("tool `{tool}`: {side} schema is not a usable JSON Schema: {reason}")]
    Invalid {
        /// The tool.
        tool: String,
        /// Which schema.
        side: Side,
        /// What the compiler said, shortened.
        reason: String,
    },
}

/// The compiled schemas of one plugin version's tools, in the order of its
/// tool list.
pub struct ToolSchemas(Vec<ToolSchema>);

impl ToolSchemas {
    /// Compiles the schemas of every tool in `tools`; the first that does not
    /// compile is the error.
    pub fn compile(tools: &[Tool]) -> Result<Self, SchemaError> {
        tools
            .iter()
            .map(|t| ToolSchema::compile(&t.name, &t.input_schema, t.output_schema.as_deref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The schemas of the tool at `index` in the plugin's tool list.
    pub fn get(&self, index: usize) -> Option<&ToolSchema> {
        self.0.get(index)
    }
}

/// One tool's compiled schemas.
pub struct ToolSchema {
    input: Check,
    output: Option<Check>,
    /// The input schema as declared (for `Mcp-Param-*` header checks).
    declared: std::sync::Arc<serde_json::Map<String, Value>>,
}

impl ToolSchema {
    /// Compiles the schemas of the tool `tool`: `input` (JSON text, which must
    /// describe an object) and `output`, if it declares one.
    pub fn compile(tool: &str, input: &str, output: Option<&str>) -> Result<Self, SchemaError> {
        let schema = parse(tool, Side::Input, input)?;
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(SchemaError::InputNotObject {
                tool: tool.to_owned(),
            });
        }
        if let Err(reason) = check_param_headers(&schema) {
            return Err(SchemaError::ParamHeader {
                tool: tool.to_owned(),
                reason,
            });
        }
        let input = Check::compile(tool, Side::Input, &schema)?;
        let declared = std::sync::Arc::new(schema.as_object().cloned().unwrap_or_default());
        let output = match output {
            None => None,
            Some(text) => {
                let schema = parse(tool, Side::Output, text)?;
                if !schema.is_object() {
                    return Err(SchemaError::OutputNotObject {
                        tool: tool.to_owned(),
                    });
                }
                Some(Check::compile(tool, Side::Output, &schema)?)
            }
        };
        Ok(Self {
            input,
            output,
            declared,
        })
    }

    /// The input schema as the tool declares it.
    pub fn declared_input(&self) -> std::sync::Arc<serde_json::Map<String, Value>> {
        self.declared.clone()
    }

    /// Checks a call's arguments (absent arguments are `{}`) against the input schema.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), Violations> {
        self.input.check(arguments)
    }

    /// Whether the tool declares an output schema: its successful results must
    /// then carry structured content that conforms to it.
    pub fn declares_output(&self) -> bool {
        self.output.is_some()
    }

    /// Checks a result's structured content against the output schema, if the
    /// tool declares one.
    pub fn check_output(&self, structured: &Value) -> Result<(), Violations> {
        self.output.as_ref().map_or(Ok(()), |c| c.check(structured))
    }
}

/// Checks the `x-mcp-header` annotations of an input schema (MCP 2026-07-28,
/// "x-mcp-header"): each a non-empty HTTP token (RFC 9110 `tchar`s), unique
/// regardless of case, on a `string`, `integer` or `boolean` property reached
/// from the root through `properties` alone; anywhere else (the root, `items`,
/// `allOf`, `$defs`, …) is refused.
fn check_param_headers(schema: &Value) -> Result<(), String> {
    fn tchar(c: char) -> bool {
        c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
    }
    /// Walks `v`; `on_chain` when `v` is the root or a property schema reached
    /// through `properties` alone.
    fn walk(
        v: &Value,
        path: &mut Vec<String>,
        on_chain: bool,
        seen: &mut std::collections::HashSet<String>,
    ) -> Result<(), String> {
        match v {
            Value::Object(m) => {
                if let Some(h) = m.get("x-mcp-header") {
                    let prop = path.join(".");
                    if path.is_empty() || !on_chain {
                        return Err(format!(
                            "x-mcp-header is allowed only on a property reached through                              `properties` from the root (found at `{}`)",
                            if prop.is_empty() { "the root" } else { &prop }
                        ));
                    }
                    let Some(h) = h.as_str().filter(|h| !h.is_empty()) else {
                        return Err(format!(
                            "property `{prop}`: x-mcp-header must be a non-empty string"
                        ));
                    };
                    if !h.chars().all(tchar) {
                        return Err(format!(
                            "property `{prop}`: x-mcp-header `{}` is not an HTTP token",
                            h.chars().take(64).collect::<String>()
                        ));
                    }
                    if !seen.insert(h.to_ascii_lowercase()) {
                        return Err(format!(
                            "property `{prop}`: x-mcp-header `{h}` is used twice (case does not count)"
                        ));
                    }
                    if !matches!(
                        m.get("type").and_then(Value::as_str),
                        Some("string" | "integer" | "boolean")
                    ) {
                        return Err(format!(
                            "property `{prop}`: x-mcp-header needs \"type\": \"string\", \"integer\" or \"boolean\""
                        ));
                    }
                }
                for (k, child) in m {
                    if k == "properties" && on_chain {
                        if let Value::Object(props) = child {
                            for (name, s) in props {
                                path.push(name.clone());
                                walk(s, path, true, seen)?;
                                path.pop();
                            }
                        }
                    } else if k != "x-mcp-header" {
                        path.push(k.clone());
                        walk(child, path, false, seen)?;
                        path.pop();
                    }
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, path, false, seen)),
            _ => Ok(()),
        }
    }
    walk(schema, &mut Vec::new(), true, &mut Default::default())
}

/// How a value is checked.
enum Check {
    /// The schema accepts every object and says nothing more: no validator runs.
    AnyObject,
    /// By the compiled validator.
    Schema(Box<Validator>),
}

impl Check {
    /// Compiles `schema`; the validator is skipped when the schema accepts any object.
    fn compile(tool: &str, side: Side, schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .with_retriever(NoFetch)
            .with_pattern_options(
                PatternOptions::fancy_regex().backtrack_limit(REGEX_BACKTRACK_LIMIT),
            )
            .build(schema)
            .map_err(|e| SchemaError::Invalid {
                tool: tool.to_owned(),
                side,
                reason: compile_error(&e),
            })?;
        Ok(if accepts_any_object(schema) {
            Check::AnyObject
        } else {
            Check::Schema(Box::new(validator))
        })
    }

    /// Checks `value`: the fast yes/no first, the details only when it fails.
    fn check(&self, value: &Value) -> Result<(), Violations> {
        match self {
            Check::AnyObject if value.is_object() => Ok(()),
            Check::AnyObject => Err(Violations {
                shown: vec![bounded(MAX_LINE, |w| {
                    write!(
                        w,
                        "at the top level: invalid type: the value must be an object, not {}",
                        Excerpt(value)
                    )
                })],
                more: 0,
            }),
            Check::Schema(v) if v.is_valid(value) => Ok(()),
            Check::Schema(v) => Err(Violations::from_errors(v.iter_errors(value))),
        }
    }
}

/// Whether `schema` accepts every object and constrains nothing else
/// (`{"type": "object"}`, perhaps with empty `properties`, a title or a
/// description), as tools without arguments declare.
fn accepts_any_object(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else {
        return false;
    };
    map.get("type").and_then(Value::as_str) == Some("object")
        && map.iter().all(|(key, v)| match key.as_str() {
            "type" | "$schema" | "title" | "description" | "$comment" => true,
            "properties" => v.as_object().is_some_and(|p| p.is_empty()),
            _ => false,
        })
}

/// Why a schema does not compile, with the place in the schema when known.
fn compile_error(e: &ValidationError<'_>) -> String {
    bounded(MAX_LINE, |w| match e.instance_path().as_str() {
        "" => write!(w, "{e}"),
        at => write!(w, "at `{at}`: {e}"),
    })
}

/// Parses one of a tool's schemas.
fn parse(tool: &str, side: Side, text: &str) -> Result<Value, SchemaError> {
    serde_json::from_str(text).map_err(|e| SchemaError::NotJson {
        tool: tool.to_owned(),
        side,
        reason: e.to_string(),
    })
}

/// Refuses every reference outside the schema: a plugin's schema must not make
/// the host fetch a URL or read a file.
struct NoFetch;

impl jsonschema::Retrieve for NoFetch {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "`{uri}` is outside the schema and the host fetches nothing; put what it refers to under `$defs`"
        )
        .into())
    }
}

/// What is wrong with a value, in plain words: the first few violations, each
/// as "at `/path`: what is wrong", and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.shown, *.more))]
pub struct Violations {
    /// The first violations, described.
    shown: Vec<String>,
    /// How many more there were.
    more: usize,
}

impl Violations {
    /// Describes the first of `errors` and counts the rest.
    fn from_errors<'a>(errors: impl Iterator<Item = ValidationError<'a>>) -> Self {
        let mut errors = errors.fuse();
        let shown = errors
            .by_ref()
            .take(MAX_SHOWN)
            .map(|e| describe(&e))
            .collect();
        Self {
            shown,
            more: errors.count(),
        }
    }

    /// The violations described, in order (at most a few).
    pub fn shown(&self) -> &[String] {
        &self.shown
    }
}

fn render(shown: &[String], more: usize) -> String {
    let mut text = shown.join("; ");
    if more > 0 {
        let _ = write!(text, "; and {more} more");
    }
    text
}

/// One violation: where, then what is wrong.
fn describe(e: &ValidationError<'_>) -> String {
    bounded(MAX_LINE, |w| {
        let at = e.instance_path();
        if at.is_empty() {
            w.write_str("at the top level: ")?;
        } else {
            write!(w, "at `{}`: ", at.as_str())?;
        }
        problem(w, e)
    })
}

/// What is wrong, for the kinds a model meets most, with the crate's own words
/// (the value replaced by a short excerpt) for the rest.
fn problem(w: &mut Bounded, e: &ValidationError<'_>) -> fmt::Result {
    let it = Subject(e.instance_path());
    let value = Excerpt(e.instance());
    match e.kind() {
        Kind::Required { property } => write!(w, "missing field {}", Name(property)),
        Kind::AdditionalProperties { unexpected } | Kind::UnevaluatedProperties { unexpected } => {
            unknown_fields(w, unexpected)
        }
        Kind::Type { kind } => write!(w, "invalid type: {it} must be {}, not {value}", Types(kind)),
        Kind::Enum { options } => {
            write!(w, "{it} must be one of {}, not {value}", Excerpt(options))
        }
        Kind::Constant { expected_value } => {
            write!(w, "{it} must be {}, not {value}", Excerpt(expected_value))
        }
        Kind::Minimum { limit } => write!(w, "{it} must be at least {limit}, not {value}"),
        Kind::Maximum { limit } => write!(w, "{it} must be at most {limit}, not {value}"),
        Kind::ExclusiveMinimum { limit } => {
            write!(w, "{it} must be more than {limit}, not {value}")
        }
        Kind::ExclusiveMaximum { limit } => {
            write!(w, "{it} must be less than {limit}, not {value}")
        }
        Kind::MinLength { limit } => write!(w, "{it} must be at least {limit} characters long"),
        Kind::MaxLength { limit } => write!(w, "{it} must be at most {limit} characters long"),
        Kind::MinItems { limit } => write!(w, "{it} must have at least {limit} items"),
        Kind::MaxItems { limit } => write!(w, "{it} must have at most {limit} items"),
        Kind::MinProperties { limit } => write!(w, "{it} must have at least {limit} fields"),
        Kind::MaxProperties { limit } => write!(w, "{it} must have at most {limit} fields"),
        Kind::Pattern { pattern } => {
            write!(w, "{it} must match the pattern `{pattern}`, not {value}")
        }
        Kind::UniqueItems => write!(w, "{it} must not hold the same item twice"),
        Kind::FalseSchema => write!(w, "{value} is not allowed here"),
        Kind::Format { format } => write!(w, "{it} must be a valid {format}, not {value}"),
        Kind::OneOfNotValid { context } | Kind::AnyOf { context } => {
            match allowed_values(context) {
                Some(values) => write!(w, "{it} must be one of {}, not {value}", values.join(", ")),
                None => write!(w, "{it} matches none of the allowed forms ({value})"),
            }
        }
        _ => write!(w, "{}", e.masked_with(value.to_string())),
    }
}

/// The values a `oneOf`/`anyOf` of constants allows (what schemars makes of a
/// documented enum), when every branch failed only for being another value;
/// `None` when a branch is more than a value.
fn allowed_values(branches: &[Vec<ValidationError<'static>>]) -> Option<Vec<String>> {
    let mut values = Vec::new();
    for branch in branches {
        let [only] = branch.as_slice() else {
            return None;
        };
        match only.kind() {
            Kind::Constant { expected_value } => values.push(Excerpt(expected_value).to_string()),
            Kind::Enum { options } => match options.as_array() {
                Some(items) => values.extend(items.iter().map(|v| Excerpt(v).to_string())),
                None => return None,
            },
            _ => return None,
        }
        if values.len() > 20 {
            return None;
        }
    }
    (!values.is_empty()).then_some(values)
}

/// "unknown field `a`" or "unknown fields `a`, `b`".
fn unknown_fields(w: &mut Bounded, names: &[String]) -> fmt::Result {
    w.write_str(if names.len() == 1 {
        "unknown field "
    } else {
        "unknown fields "
    })?;
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        write!(w, "`{name}`")?;
    }
    Ok(())
}

/// The value a violation is about, named for the model: the field (`` `name` ``),
/// the item of an array, or the value itself at the top level.
struct Subject<'a>(&'a Location);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.segments().last() {
            Some(LocationSegment::Property(name)) => write!(f, "`{name}`"),
            Some(LocationSegment::Index(i)) => write!(f, "item {i}"),
            None => f.write_str("the value"),
        }
    }
}

/// A property name from a schema: in backticks when it is a string.
struct Name<'a>(&'a Value);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::String(s) => write!(f, "`{s}`"),
            other => write!(f, "{}", Excerpt(other)),
        }
    }
}

/// The types a `type` keyword allows, in words: "a string or null".
struct Types<'a>(&'a TypeKind);

impl fmt::Display for Types<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            TypeKind::Single(t) => f.write_str(article(*t)),
            TypeKind::Multiple(set) => {
                for (i, t) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    f.write_str(article(t))?;
                }
                Ok(())
            }
        }
    }
}

fn article(t: JsonType) -> &'static str {
    match t {
        JsonType::Null => "null",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "an integer",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Array => "an array",
        JsonType::Object => "an object",
    }
}

/// A value as compact JSON, cut short: a violation never echoes a large value.
struct Excerpt<'a>(&'a Value);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bounded(MAX_EXCERPT, |w| write!(w, "{}", self.0)))
    }
}

/// Runs `write` into a string of at most `limit` bytes (plus an ellipsis when
/// cut): writing stops as soon as the limit is reached, so a large value is
/// never formatted whole.
fn bounded(limit: usize, write: impl FnOnce(&mut Bounded) -> fmt::Result) -> String {
    let mut w = Bounded {
        text: String::new(),
        limit,
        cut: false,
    };
    // An error here is the cut itself: what fit is kept.
    let _ = write(&mut w);
    if w.cut {
        w.text.push('…');
    }
    w.text
}

/// A `fmt::Write` that keeps at most `limit` bytes and then refuses more.
struct Bounded {
    text: String,
    limit: usize,
    cut: bool,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        self.text.push_str(&s[..s.floor_char_boundary(room)]);
        self.cut = true;
        Err(fmt::Error)
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
