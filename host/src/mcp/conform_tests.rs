use serde_json::{Value, json};

use super::*;

fn counted() -> ToolSchema {
    let output = json!({
        "type": "object",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"]
    });
    let input = json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"]
    });
    ToolSchema::compile("count", &input.to_string(), Some(&output.to_string())).unwrap()
}

fn ok_result(structured: Option<Value>) -> Value {
    let mut r = json!({"content": [{"type": "text", "text": "done"}], "isError": false});
    if let Some(s) = structured {
        r["structuredContent"] = s;
    }
    r
}

#[test]
fn conforming_arguments_are_let_through() {
    assert_eq!(
        argument_refusal(&counted(), "count", &json!({"n": 2})),
        None
    );
}

#[test]
fn a_refusal_names_the_tool_and_the_violation() {
    let m = argument_refusal(&counted(), "count", &json!({"n": 0})).unwrap();
    assert_eq!(
        m,
        "invalid arguments for tool `count`: at `/n`: `n` must be at least 1, not 0"
    );
}

#[test]
fn a_refusal_is_reported_as_the_plugins_invalid_arguments_answer_with_nothing_run() {
    let r = refused(
        "invalid arguments for tool `count`: x".into(),
        Duration::from_micros(7),
    );
    assert!(matches!(
        &r.outcome,
        Ok(OpOutput::Tool(Err(ToolError::InvalidArguments(m)))) if m.ends_with(": x")
    ));
    assert_eq!(
        (r.fuel_used, r.denied, r.duration),
        (0, 0, Duration::from_micros(7))
    );
}

#[test]
fn conforming_structured_content_passes_unchanged() {
    let mut r = ok_result(Some(json!({"count": 3})));
    let before = r.clone();
    assert_eq!(enforce_output(&counted(), "count", "p", &mut r), None);
    assert_eq!(r, before);
}

#[test]
fn nonconforming_structured_content_becomes_an_error_result() {
    let mut r = ok_result(Some(json!({"count": "many"})));
    let why = enforce_output(&counted(), "count", "p", &mut r).unwrap();
    assert_eq!(r["isError"], true);
    assert!(r.get("structuredContent").is_none(), "withheld: {r}");
    let text = r["content"][0]["text"].as_str().unwrap();
    assert_eq!(text, why);
    assert_eq!(
        text,
        "the result of tool `count` (plugin `p`) did not match the tool's declared output schema: \
         at `/count`: invalid type: `count` must be an integer, not \"many\""
    );
}

#[test]
fn a_success_without_structured_content_is_an_error_when_an_output_schema_is_declared() {
    let mut r = ok_result(None);
    let why = enforce_output(&counted(), "count", "p", &mut r).unwrap();
    assert!(why.ends_with("it returned no structured content"), "{why}");
    assert_eq!(r["isError"], true);
}

#[test]
fn error_results_and_tools_without_output_schema_are_left_alone() {
    let mut failed = json!({"content": [{"type": "text", "text": "no"}], "isError": true});
    let before = failed.clone();
    assert_eq!(enforce_output(&counted(), "count", "p", &mut failed), None);
    assert_eq!(failed, before);

    let plain = ToolSchema::compile("t", r#"{"type":"object"}"#, None).unwrap();
    let mut r = ok_result(Some(json!("not even an object")));
    assert_eq!(enforce_output(&plain, "t", "p", &mut r), None);
    assert_eq!(r["structuredContent"], "not even an object");
}
