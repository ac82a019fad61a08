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
