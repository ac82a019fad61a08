use serde_json::{Value, json};

use super::*;

fn schema(input: Value) -> ToolSchema {
    ToolSchema::compile("t", &input.to_string(), None).unwrap()
}

fn with_output(output: Value) -> ToolSchema {
    ToolSchema::compile("t", r#"{"type":"object"}"#, Some(&output.to_string())).unwrap()
}

/// The one violation `args` has against `input`, described.
fn violation(input: Value, args: Value) -> String {
    let v = schema(input).check_arguments(&args).unwrap_err();
    assert_eq!(v.shown().len(), 1, "{v}");
    v.to_string()
}

fn positive() -> Value {
    json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"]
    })
}

#[test]
fn arguments_that_conform_pass() {
    let s = schema(positive());
    assert_eq!(s.check_arguments(&json!({"n": 3})), Ok(()));
    assert_eq!(s.check_arguments(&json!({"n": 3, "extra": true})), Ok(()));
}

#[test]
fn each_violation_says_where_and_what_in_plain_words() {
    assert_eq!(
        violation(positive(), json!({})),
        "at the top level: missing field `n`"
    );
    assert_eq!(
        violation(positive(), json!({"n": 0})),
        "at `/n`: `n` must be at least 1, not 0"
    );
    assert_eq!(
        violation(positive(), json!({"n": "three"})),
        "at `/n`: invalid type: `n` must be an integer, not \"three\""
    );
    let strict = json!({
        "type": "object",
        "properties": {
            "unit": {"enum": ["words", "lines"]},
            "tags": {"type": "array", "items": {"type": ["string", "null"]}}
        },
        "additionalProperties": false
    });
    assert_eq!(
        violation(strict.clone(), json!({"unit": "pages"})),
        "at `/unit`: `unit` must be one of [\"words\",\"lines\"], not \"pages\""
    );
    assert_eq!(
        violation(strict.clone(), json!({"extra": 1})),
        "at the top level: unknown field `extra`"
    );
    assert_eq!(
        violation(strict, json!({"tags": ["a", 2]})),
        "at `/tags/1`: invalid type: item 1 must be null or a string, not 2"
    );
}

#[test]
fn several_violations_are_listed_up_to_five_and_the_rest_counted() {
    let input = json!({
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "integer"}}}
    });
    let v = schema(input)
        .check_arguments(&json!({"xs": ["a", "b", "c", "d", "e", "f", "g"]}))
        .unwrap_err();
    assert_eq!(v.shown().len(), 5);
    let text = v.to_string();
    assert!(
        text.starts_with(
            "at `/xs/0`: invalid type: item 0 must be an integer, not \"a\"; at `/xs/1`"
        ),
        "{text}"
    );
    assert!(text.ends_with("; and 2 more"), "{text}");
}

#[test]
fn a_huge_value_is_never_echoed_whole() {
    let huge = "x".repeat(1 << 20);
    let v = schema(positive())
        .check_arguments(&json!({"n": huge}))
        .unwrap_err()
        .to_string();
    assert!(v.len() <= MAX_LINE + 8, "{} bytes", v.len());
    assert!(
        v.contains("must be an integer, not \"xxxx") && v.ends_with('…'),
        "{v}"
    );
    // Also when the schema's own words would quote it (a fallback message).
    let not = json!({"type": "object", "properties": {"s": {"not": {"type": "string"}}}});
    let v = schema(not)
        .check_arguments(&json!({"s": huge}))
        .unwrap_err()
        .to_string();
    assert!(v.len() <= MAX_LINE + 8, "{} bytes: {v}", v.len());
    // Many unknown names, long ones, and multi-byte text cut on a character boundary.
    let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
    let names: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("é{i:0>50}"), json!(1)))
        .collect();
    let v = schema(closed)
        .check_arguments(&Value::Object(names))
        .unwrap_err()
        .to_string();
    assert!(
        v.len() <= MAX_LINE + 8 && v.starts_with("at the top level: unknown fields `é"),
        "{v}"
    );
}

#[test]
fn trivial_schemas_need_no_validator_and_still_want_an_object() {
    for trivial in [
        json!({"type": "object"}),
        json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {}}),
        json!({"type": "object", "description": "No arguments"}),
    ] {
        let s = schema(trivial.clone());
        assert!(matches!(s.input, Check::AnyObject), "{trivial}");
        assert_eq!(s.check_arguments(&json!({"anything": [1, 2]})), Ok(()));
        let v = s.check_arguments(&json!([1])).unwrap_err().to_string();
        assert_eq!(
            v,
            "at the top level: invalid type: the value must be an object, not [1]"
        );
    }
    for not_trivial in [
        json!({"type": "object", "properties": {"a": {}}}),
        json!({"type": "object", "required": ["a"]}),
        json!({"type": "object", "additionalProperties": false}),
    ] {
        assert!(
            matches!(schema(not_trivial.clone()).input, Check::Schema(_)),
            "{not_trivial}"
        );
    }
}

#[test]
fn local_references_resolve() {
    // What schemars derives for nested types.
    let input = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"point": {"$ref": "#/$defs/Point"}},
        "required": ["point"],
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}
    });
    let s = schema(input);
    assert_eq!(s.check_arguments(&json!({"point": {"x": 1.5}})), Ok(()));
    assert_eq!(
        s.check_arguments(&json!({"point": {}}))
            .unwrap_err()
            .to_string(),
        "at `/point`: missing field `x`"
    );
}

#[test]
fn remote_references_are_refused_at_load_without_fetching() {
    for uri in [
        "https://example.invalid/schema.json",
        "http://127.0.0.1:9/schema.json",
        "file:///etc/passwd",
    ] {
        let input = json!({"type": "object", "properties": {"a": {"$ref": uri}}});
        let started = std::time::Instant::now();
        let err = ToolSchema::compile("fetcher", &input.to_string(), None)
            .err()
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let text = err.to_string();
        assert!(
            text.starts_with("tool `fetcher`: input schema is not a usable JSON Schema")
                && text.contains("fetches nothing"),
            "{text}"
        );
    }
}

#[test]
fn the_draft_comes_from_schema_and_defaults_to_2020_12() {
    // Draft 4: a boolean `exclusiveMinimum` modifies `minimum`.
    let draft4 = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "minimum": 1, "exclusiveMinimum": true}}
    });
    let v = schema(draft4)
        .check_arguments(&json!({"n": 1}))
        .unwrap_err()
        .to_string();
    assert!(v.starts_with("at `/n`:"), "{v}");
    // 2020-12 without `$schema`: `prefixItems` is understood.
    let tuple = json!({
        "type": "object",
        "properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}}
    });
    assert!(
        schema(tuple)
            .check_arguments(&json!({"pair": ["a", "b"]}))
            .is_err()
    );
}

#[test]
fn schemas_that_are_not_usable_refuse_the_tool_by_name() {
    let compile = |input: &str, output: Option<&str>| {
        ToolSchema::compile("broken", input, output)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(compile("{", None).starts_with("tool `broken`: input schema is not JSON"));
    assert_eq!(
        compile(r#"{"type":"string"}"#, None),
        "tool `broken`: input schema must be a JSON Schema object with \"type\": \"object\""
    );
    let bad_type = compile(
        r#"{"type":"object","properties":{"a":{"type":"strng"}}}"#,
        None,
    );
    assert!(
        bad_type.starts_with(
            "tool `broken`: input schema is not a usable JSON Schema: at `/properties/a/type`: \"strng\""
        ),
        "{bad_type}"
    );
    let bad_pattern = compile(
        r#"{"type":"object","properties":{"a":{"pattern":"(unclosed"}}}"#,
        None,
    );
    assert!(
        bad_pattern.starts_with("tool `broken`: input schema is not a usable"),
        "{bad_pattern}"
    );
    let unknown_draft = compile(
        r#"{"$schema":"https://example.com/meta","type":"object"}"#,
        None,
    );
    assert!(
        unknown_draft.contains("Unknown meta-schema"),
        "{unknown_draft}"
    );
    assert_eq!(
        compile(r#"{"type":"object"}"#, Some("[]")),
        "tool `broken`: output schema must be a JSON object"
    );
    let bad_output = compile(r#"{"type":"object"}"#, Some(r#"{"minimum":"one"}"#));
    assert!(
        bad_output.starts_with("tool `broken`: output schema is not a usable"),
        "{bad_output}"
    );
}

#[test]
fn outputs_are_checked_only_when_declared() {
    let none = schema(json!({"type": "object"}));
    assert!(!none.declares_output());
    assert_eq!(none.check_output(&json!("anything")), Ok(()));

    let s = with_output(json!({
        "type": "object",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"]
    }));
    assert!(s.declares_output());
    assert_eq!(s.check_output(&json!({"count": 3})), Ok(()));
    assert_eq!(
        s.check_output(&json!({"count": "many"}))
            .unwrap_err()
            .to_string(),
        "at `/count`: invalid type: `count` must be an integer, not \"many\""
    );
}

#[test]
fn every_tool_of_a_plugin_is_compiled_in_order() {
    use crate::bindings::guest_tools::ToolAnnotations;
    let tool = |name: &str, input: Value| Tool {
        name: name.into(),
        title: None,
        description: String::new(),
        input_schema: input.to_string(),
        output_schema: None,
        annotations: ToolAnnotations {
            read_only: None,
            destructive: None,
            idempotent: None,
            open_world: None,
        },
    };
    let tools = [
        tool("free", json!({"type": "object"})),
        tool("counted", positive()),
    ];
    let schemas = ToolSchemas::compile(&tools).unwrap();
    assert_eq!(schemas.get(0).unwrap().check_arguments(&json!({})), Ok(()));
    assert!(schemas.get(1).unwrap().check_arguments(&json!({})).is_err());
    assert!(schemas.get(2).is_none());

    let broken = [
        tools[0].clone(),
        tool("second", json!({"type": "object", "required": "n"})),
    ];
    let err = ToolSchemas::compile(&broken).err().unwrap();
    assert!(
        matches!(&err, SchemaError::Invalid { tool, side: Side::Input, .. } if tool == "second"),
        "{err}"
    );
}

#[test]
fn compiled_schemas_are_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ToolSchemas>();
}

#[test]
fn reference_cycles_neither_hang_nor_overflow() {
    for input in [
        json!({"type": "object", "allOf": [{"$ref": "#"}]}),
        json!({
            "type": "object",
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
            "properties": {"x": {"$ref": "#/$defs/a"}}
        }),
    ] {
        let s = schema(input.clone());
        let _ = s.check_arguments(&json!({"x": {"x": {"x": 1}}}));
    }
    // A recursive schema checks nested values.
    let tree = schema(json!({"type": "object", "properties": {"x": {"$ref": "#"}}}));
    assert_eq!(
        tree.check_arguments(&json!({"x": {"x": 1}}))
            .unwrap_err()
            .to_string(),
        "at `/x/x`: invalid type: `x` must be an object, not 1"
    );
}

#[test]
fn a_documented_enum_names_its_values() {
    // What schemars makes of an enum whose variants carry doc comments.
    let kinds = json!({
        "type": "object",
        "properties": {"kind": {"oneOf": [
            {"const": "usage", "description": "Calls"},
            {"const": "performance", "description": "Latency"},
            {"enum": ["health", "status"]}
        ]}},
        "required": ["kind"]
    });
    assert_eq!(
        violation(kinds, json!({"kind": "bogus"})),
        "at `/kind`: `kind` must be one of \"usage\", \"performance\", \"health\", \"status\", not \"bogus\""
    );
    // A oneOf of shapes is not a list of values.
    let shapes = json!({"type": "object", "properties": {"v": {"anyOf": [
        {"type": "integer"}, {"type": "object", "required": ["x"]}
    ]}}});
    let v = violation(shapes, json!({"v": "s"}));
    assert!(v.contains("matches none of the allowed forms"), "{v}");
}

/// Issue 19: `x-mcp-header` annotations follow MCP 2026-07-28's rules or the
/// tool is refused, naming the property.
#[test]
fn param_header_annotations_follow_the_rules() {
    let compile = |schema: Value| ToolSchema::compile("t", &schema.to_string(), None);
    let good = json!({"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "opts": {"type": "object", "properties": {
            "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"}}},
    }});
    let s = compile(good.clone()).unwrap();
    assert_eq!(Value::Object((*s.declared_input()).clone()), good);
    let refused = |schema: Value, needle: &str| match compile(schema) {
        Err(e @ SchemaError::ParamHeader { .. }) => {
            assert!(e.to_string().contains(needle), "{e} lacks {needle}")
        }
        Err(other) => panic!("expected a refusal naming {needle}, got {other}"),
        Ok(_) => panic!("expected a refusal naming {needle}, got a compiled schema"),
    };
    refused(
        json!({"type": "object", "x-mcp-header": "Root"}),
        "the root",
    );
    refused(
        json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
        "property `a`: x-mcp-header must be a non-empty string",
    );
    refused(
        json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "Bad Name"}}}),
        "not an HTTP token",
    );
    refused(
        json!({"type": "object", "properties": {
            "a": {"type": "string", "x-mcp-header": "Region"},
            "b": {"type": "string", "x-mcp-header": "region"}}}),
        "used twice",
    );
    refused(
        json!({"type": "object", "properties": {"n": {"type": "number", "x-mcp-header": "N"}}}),
        "property `n`: x-mcp-header needs",
    );
    refused(
        json!({"type": "object", "properties": {"tags": {"type": "array",
            "items": {"type": "string", "x-mcp-header": "Tag"}}}}),
        "tags.items",
    );
    refused(
        json!({"type": "object", "allOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
        "allOf",
    );
}
