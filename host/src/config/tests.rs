use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[limits]\nfule = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fule"), "{err}");
}

#[test]
fn typos_and_bad_values_are_reported_in_one_run() {
    let err = Config::from_toml(
        "[limits]\nfule = 3\nmemory_mib = 0\n[plugins.web.grants.http]\nhosts = [\"api.example.com\"]\nmethods = [\"GET\", \"FETCH\"]\nallow_privat = true\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "limits.fule: unknown key",
        "plugins.web.grants.http.allow_privat: unknown key",
        "limits.memory_mib",
        "plugins.web.grants.http.methods: `FETCH` is not an HTTP method",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
    assert!(!err.contains("`GET`"), "{err}");
}

#[test]
fn plugin_overrides_inherit_defaults() {
    let c =
        Config::from_toml("[limits]\nfuel = 100\n[plugins.echo.limits]\nmemory_mib = 8\n").unwrap();
    let l = c.limits_for("echo");
    assert_eq!(l.fuel, 100);
    assert_eq!(l.memory_mib, 8);
    assert_eq!(
        c.limits_for("other").memory_mib,
        Limits::default().memory_mib
    );
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

#[test]
fn auth_defaults_to_builtin_and_may_listen_anywhere() {
    let c = Config::from_toml(
        "listen = \"0.0.0.0:8080\"\n[auth]\npublic_url = \"https://mcp.example.com/\"\n",
    )
    .unwrap();
    assert_eq!(c.auth.mode, AuthMode::Builtin);
    assert_eq!(c.auth.public_url(c.listen), "https://mcp.example.com");
    assert_eq!(
        Config::default().auth.public_url(Config::default().listen),
        "http://127.0.0.1:8080"
    );
    assert_eq!(c.auth.scopes_supported, vec!["mcp"]);
}

#[test]
fn auth_problems_are_reported_together() {
    let err = Config::from_toml(
        "listen = \"0.0.0.0:8080\"\n[auth]\nmode = \"none\"\nauto_approve = true\npublic_url = \"https://h.example/sub\"\n\
         access_token_ttl_secs = 1\nscopes_supported = [\"a b\"]\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "only allowed when listening on loopback",
        "auth.public_url",
        "access_token_ttl_secs",
        "not a valid scope",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
    let err = Config::from_toml("[auth]\nmode = \"external\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.issuer") && err.contains("auth.jwks_url"),
        "{err}"
    );
    let err = Config::from_toml("[auth]\nmode = \"external\"\nissuer = \"https://i\"\njwks_url = \"http://idp.example/jwks\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("jwks_url"), "{err}");
    let err = Config::from_toml("listen = \"0.0.0.0:8080\"\n[auth]\nauto_approve = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("auto_approve"), "{err}");
    let err = Config::from_toml("[auth]\npublic_url = \"http://mcp.example.com\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("https"), "{err}");
    let err = Config::from_toml("[auth]\npasword_file = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("pasword_file"), "{err}");
    let err = Config::from_toml("[plugins.p]\nscope = \"admin\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugins.p.scope"), "{err}");
    assert!(
        Config::from_toml(
            "[auth]\nscopes_supported = [\"mcp\", \"admin\"]\n[plugins.p]\nscope = \"admin\"\n"
        )
        .is_ok()
    );
}

#[test]
fn the_sample_config_is_valid() {
    let c = Config::from_toml(include_str!("../../../dist/stockade.example.toml")).unwrap();
    assert!(c.plugins.contains_key("template"));
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
}

/// Issue 18.6: the sample's advice for the metrics plugin, followed as
/// written, gives a valid config.
#[test]
fn the_sample_configs_admin_scope_advice_validates() {
    let sample = include_str!("../../../dist/stockade.example.toml");
    let followed = sample
        .replace(
            "# [plugins.metrics]\n# scope = \"admin\"",
            "[plugins.metrics]\nscope = \"admin\"",
        )
        .replace(
            "[auth]\nmode",
            "[auth]\nscopes_supported = [\"mcp\", \"admin\"]\nmode",
        );
    assert!(
        followed.contains("scope = \"admin\"\n[plugins.metrics.grants]"),
        "{followed}"
    );
    assert!(
        followed.contains("scopes_supported = [\"mcp\", \"admin\"]"),
        "the sample has an [auth] table"
    );
    let c = Config::from_toml(&followed).unwrap();
    assert_eq!(c.plugins["metrics"].scope.as_deref(), Some("admin"));
}

#[test]
fn sql_sources_name_one_database_and_keep_passwords_out_of_urls() {
    let ok = Config::from_toml(
        "[sql.a]\nsqlite = \"/srv/a.db\"\n[sql.b]\npostgres = \"postgres://reader@db/shop?sslmode=verify-full\"\n\
         password_file = \"/etc/stockade/pg\"\n",
    )
    .unwrap();
    assert_eq!(ok.sql["b"].max_connections, 4);
    let err = Config::from_toml(
        "[sql.both]\nsqlite = \"/srv/a.db\"\npostgres = \"postgres://r@db/x\"\n\
         [sql.none]\nmax_rows = 5\n\
         [sql.secret]\npostgres = \"postgres://reader:hunter2@db/shop\"\n\
         [sql.nodb]\npostgres = \"postgres://reader@db\"\n\
         [sql.plain]\npostgres = \"postgres://reader@db.internal/shop?sslmode=disable\"\n\
         [sql.web]\npostgres = \"https://db/shop\"\nmax_connections = 0\n\
         [sql.rel]\nsqlite = \"a.db\"\npassword_file = \"pw\"\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "sql.both: give either `sqlite` or `postgres`, not both",
        "sql.none: give the database",
        "sql.secret.postgres: put the password in `password_file`",
        "sql.nodb.postgres: name the database",
        "sql.plain.postgres: the database on `db.internal` is reached over the network, which needs TLS",
        "sql.web.postgres: not a `postgres://",
        "sql.web.max_connections: 0 is not between 1 and 64",
        "sql.rel.sqlite: `a.db` must be an absolute path",
        "sql.rel.password_file: only for `postgres` sources",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
    assert!(
        !err.contains("hunter2"),
        "the password is not repeated: {err}"
    );
}
