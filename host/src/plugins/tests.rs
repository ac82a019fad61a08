use super::*;

#[test]
fn plugin_names() {
    assert!(is_valid_plugin_name("template"));
    assert!(is_valid_plugin_name("my-tool_2"));
    assert!(!is_valid_plugin_name(""));
    assert!(!is_valid_plugin_name("-x"));
    assert!(!is_valid_plugin_name("a b"));
    assert!(!is_valid_plugin_name("../etc"));
    assert!(!is_valid_plugin_name(&"a".repeat(65)));
}

#[test]
fn tool_names() {
    assert!(is_valid_tool_name("get_metrics"));
    assert!(is_valid_tool_name("fs.read-file"));
    assert!(!is_valid_tool_name(""));
    assert!(!is_valid_tool_name("has space"));
    assert!(!is_valid_tool_name(&"a".repeat(129)));
}
