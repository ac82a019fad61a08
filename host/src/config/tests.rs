use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[limits]\nfule = 3\n").unwrap_err().to_string();
    assert!(err.contains("fule"), "{err}");
}

#[test]
fn plugin_overrides_inherit_defaults() {
    let c = Config::from_toml("[limits]\nfuel = 100\n[plugins.echo.limits]\nmemory_mib = 8\n").unwrap();
    let l = c.limits_for("echo");
    assert_eq!(l.fuel, 100);
    assert_eq!(l.memory_mib, 8);
    assert_eq!(c.limits_for("other").memory_mib, Limits::default().memory_mib);
}

#[test]
fn all_problems_reported_together() {
    let err = Config::from_toml("[limits]\nfuel = 0\nmemory_mib = 0\n[plugins.\"bad name\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.fuel"), "{err}");
    assert!(err.contains("limits.memory_mib"), "{err}");
    assert!(err.contains("bad name"), "{err}");
}
