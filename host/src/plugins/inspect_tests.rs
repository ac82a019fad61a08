use super::*;

#[test]
fn finds_the_section_in_a_nested_module() {
    // A component whose nested core module carries the custom section.
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let name = CAPABILITIES_SECTION.as_bytes();
    let data = br#"{"version":1,"exec":["/bin/df"]}"#;
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(data);
    module.push(0);
    module.push(section.len() as u8);
    module.extend_from_slice(&section);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    component.push(1); // core module section
    component.push(module.len() as u8);
    component.extend_from_slice(&module);
    let caps = declared_capabilities(&component).unwrap().unwrap();
    assert_eq!(caps["exec"][0], "/bin/df");
    assert_eq!(declared_capabilities(b"\0asm\x0d\0\x01\0").unwrap(), None);
}

#[test]
fn suggestion_pins_the_digest_and_lists_grants() {
    let caps = serde_json::json!({"version": 1, "exec": ["/usr/bin/df"], "http": ["api.github.com"], "sql": ["m"]});
    let s = suggested_config("disk", "ab12", Some(&caps));
    assert!(s.contains("digest = \"sha256:ab12\""));
    assert!(s.contains("program = \"/usr/bin/df\""));
    assert!(s.contains("hosts = [\"api.github.com\"]"));
    assert!(s.contains("sql = [\"m\"]"));
    let parsed: toml::Value = toml::from_str(&s).unwrap();
    assert!(parsed.get("plugins").is_some());
}

#[test]
fn hostile_declarations_stay_data_in_the_suggestion() {
    // Keys and values that would close the string, start a new table, or
    // carry terminal escape sequences if pasted as they are.
    let caps = serde_json::json!({
        "version": 1,
        "env": ["A\"]\n[plugins.other.grants]\nexec = 1 #", "ok_NAME"],
        "exec": ["/bin/x\"\n[[plugins.evil.grants.exec]]\nprogram = \"/bin/sh"],
        "dirs": ["/d\u{1b}[2J"],
    });
    let s = suggested_config("p", "00", Some(&caps));
    let parsed: toml::Value = toml::from_str(&s).expect("the suggestion parses");
    let plugins = parsed["plugins"].as_table().unwrap();
    assert_eq!(plugins.keys().collect::<Vec<_>>(), ["p"], "{s}");
    let grants = &plugins["p"]["grants"];
    assert!(grants["env"].get("ok_NAME").is_some());
    assert_eq!(grants["env"].as_table().unwrap().len(), 1, "{s}");
    assert!(grants.get("exec").is_none(), "{s}");
    assert!(grants.get("dirs").is_none(), "{s}");
    assert!(!s.contains('\u{1b}'), "raw escape in {s:?}");
    assert!(
        !s.contains("evil") && !s.contains("other"),
        "no free text pasted: {s}"
    );
    assert!(s.contains("# 3 declared value(s) left out"), "{s}");
}

#[test]
fn imports_tell_what_a_plugin_can_use() {
    let none: [&str; 0] = [];
    assert!(reachable_capabilities(none).is_empty());
    let r = reachable_capabilities([
        "wasi:http/outgoing-handler@0.2.6",
        "wasi:cli/environment@0.2.6",
        "wasi:cli/stdout@0.2.6",
        "stockade:plugin/exec@0.1.0",
        "wasi:sockets/tcp@0.2.6",
    ]);
    assert_eq!(r.len(), 4, "{r:?}");
    assert!(r[0].starts_with("http:") && r[2].starts_with("exec:") && r[3].starts_with("sockets:"));
    assert!(
        reachable_capabilities(["wasi:cli/stdout@0.2.6", "wasi:random/random@0.2.6"]).is_empty()
    );
}

#[test]
fn printable_escapes_control_and_bidi_characters() {
    assert_eq!(printable("ok \u{1b}[31mred"), "ok \\u{1b}[31mred");
    assert_eq!(printable("a\u{202E}b"), "a\\u{202e}b");
    assert_eq!(printable("plain é"), "plain é");
}
