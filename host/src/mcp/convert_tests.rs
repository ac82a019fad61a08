use super::*;
use crate::bindings::guest_tools::{CallResult, Tool, ToolAnnotations};
use crate::bindings::types::{Content, Media};

#[test]
fn uri_templates() {
    assert!(uri_matches("notes://{name}", "notes://today"));
    assert!(!uri_matches("notes://{name}", "notes://a/b"));
    assert!(uri_matches("file:///{+path}", "file:///var/log/syslog"));
    assert!(uri_matches("db://{table}/rows/{id}", "db://users/rows/7"));
    assert!(!uri_matches("db://{table}/rows/{id}", "db://users/cols/7"));
    assert!(!uri_matches("notes://{name}", "other://today"));
}

#[test]
fn tool_json_carries_annotations_and_schema() {
    let t = Tool {
        name: "greet".into(),
        title: Some("Greet".into()),
        description: "Say hello".into(),
        input_schema: r#"{"type":"object","properties":{"name":{"type":"string"}}}"#.into(),
        output_schema: None,
        annotations: ToolAnnotations {
            read_only: Some(true),
            destructive: None,
            idempotent: None,
            open_world: Some(false),
        },
    };
    let v = tool(&t);
    assert_eq!(v["inputSchema"]["properties"]["name"]["type"], "string");
    assert_eq!(v["annotations"]["readOnlyHint"], true);
    assert_eq!(v["annotations"]["openWorldHint"], false);
    let parsed: rmcp::model::Tool = serde_json::from_value(v).unwrap();
    assert_eq!(parsed.name, "greet");
}

#[test]
fn media_is_base64_and_structured_is_parsed() {
    let r = CallResult {
        content: vec![Content::Image(Media {
            data: vec![1, 2, 3],
            mime_type: "image/png".into(),
            annotations: None,
        })],
        structured_content: Some(r#"{"sum":3}"#.into()),
        is_error: false,
    };
    let v = call_result(&r);
    assert_eq!(v["content"][0]["data"], "AQID");
    assert_eq!(v["structuredContent"]["sum"], 3);
    let bad = CallResult {
        content: vec![],
        structured_content: Some("{nope".into()),
        is_error: false,
    };
    assert_eq!(call_result(&bad)["isError"], true);
}

#[test]
fn host_refusals_reach_error_results_only() {
    let refusals = vec!["plugin `p` may not reach 10.0.0.1 (grants.http.allow_private)".to_owned()];
    let mut failed = error_result("failed");
    add_host_refusals(&mut failed, &refusals);
    assert_eq!(failed["content"].as_array().unwrap().len(), 2);
    assert_eq!(
        failed["content"][1]["text"],
        "Refused by the Stockade host: plugin `p` may not reach 10.0.0.1 (grants.http.allow_private)"
    );
    let mut fine = json!({"content": [{"type": "text", "text": "ok"}], "isError": false});
    add_host_refusals(&mut fine, &refusals);
    assert_eq!(fine["content"].as_array().unwrap().len(), 1);
}
