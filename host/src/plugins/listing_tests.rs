use super::*;

#[test]
fn grants_are_summarised_one_per_kind() {
    let g: Grants = toml::from_str(
        r#"
        env = { GREETING = "hi", OTHER = "x" }
        sql = ["shop"]
        client = ["sampling"]
        dirs = [{ host = "/srv/data", guest = "/data" }]
        [http]
        hosts = ["api.example.com"]
        [[exec]]
        program = "/bin/echo"
        "#,
    )
    .unwrap();
    let s = grants_summary(&g);
    assert_eq!(
        s,
        [
            "dir: /data (ro) = /srv/data",
            "env: GREETING, OTHER",
            "http: api.example.com",
            "exec: /bin/echo",
            "sql: shop",
            "client: sampling",
        ]
    );
    assert!(grants_summary(&Grants::default()).is_empty());
}

#[test]
fn an_empty_snapshot_renders() {
    let v = to_json(&Snapshot::default(), Path::new("plugins"), "dry-run");
    assert_eq!(v["source"], "dry-run");
    assert_eq!(render(&v), "no plugin files\n");
}

#[test]
fn refusals_render_with_their_reason() {
    let v = json!({"plugins": [
        {"name": "a", "state": "serving", "plugin_name": "a", "version": "1.0.0",
         "digest": "sha256:00", "tools": ["x", "y"], "grants": []},
        {"name": "a", "state": "refused", "digest": "sha256:11",
         "reason": "not a WebAssembly component: bad", "previous_version_serving": true},
    ]});
    let text = render(&v);
    assert!(text.contains("a: serving a 1.0.0"), "{text}");
    assert!(text.contains("tools:  x, y"), "{text}");
    assert!(text.contains("grants: none"), "{text}");
    assert!(
        text.contains("a: refused (the previous version keeps serving)"),
        "{text}"
    );
    assert!(
        text.contains("reason: not a WebAssembly component: bad"),
        "{text}"
    );
}
