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
    let v = to_json(&Snapshot::default(), &Config::default(), "dry-run");
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

#[test]
fn config_for_no_plugin_file_is_a_warning_with_a_suggestion() {
    let mut snapshot = Snapshot::default();
    snapshot.refused.insert(
        "template".into(),
        crate::plugins::Refused {
            path: "plugins/template.wasm".into(),
            stamp: crate::plugins::FileStamp {
                modified: SystemTime::UNIX_EPOCH,
                len: 0,
            },
            digest: None,
            sig_stamp: None,
            refusal: crate::plugins::Refusal::Read("test".into()),
        },
    );
    let config = Config::from_toml(
        "[plugins.tempalte.grants]\nenv = { A = \"1\" }\n[plugins.template]\n[plugins.unrelated]\n",
    )
    .unwrap();
    let warnings = unmatched_config(&snapshot, &config);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("`[plugins.tempalte]` in the config matches no plugin file")
            && warnings[0].ends_with("did you mean `[plugins.template]`?"),
        "{warnings:?}"
    );
    assert!(!warnings[1].contains("did you mean"), "{warnings:?}");
    let text = render(&to_json(&snapshot, &config, "dry-run"));
    assert!(text.contains("warning: `[plugins.unrelated]`"), "{text}");
}
