use super::*;
use crate::config::Config;

#[test]
fn guest_env_never_lists_code_loading_variables() {
    let toml = r#"
[[plugins.p.grants.exec]]
program = "/usr/bin/git"
guest_env = { LD_PRELOAD = ".*", BASH_ENV = ".*", GIT_CONFIG_COUNT = "[0-9]", PYTHONPATH = ".*", NODE_OPTIONS = ".*", TZ = "[A-Za-z/]+", BAD = "(" }
"#;
    let err = Config::from_toml(toml).unwrap_err().to_string();
    for name in [
        "LD_PRELOAD",
        "BASH_ENV",
        "GIT_CONFIG_COUNT",
        "PYTHONPATH",
        "NODE_OPTIONS",
    ] {
        assert!(
            err.contains(&format!(
                "plugins.p.grants.exec[0].guest_env: a plugin may never set `{name}`"
            )),
            "{name}: {err}"
        );
    }
    assert!(
        err.contains("guest_env.BAD: `(` is not a valid regex"),
        "{err}"
    );
    assert!(!err.contains("`TZ`"), "{err}");
    // The operator may still set such variables to fixed values.
    let ok = "[[plugins.p.grants.exec]]\nprogram = \"/usr/bin/python3\"\nenv = { PYTHONPATH = \"/opt/lib\" }\nguest_env = { TZ = \"[A-Za-z/]+\" }\n";
    Config::from_toml(ok).unwrap();
}

#[test]
fn forbidden_names() {
    for n in [
        "LD_PRELOAD",
        "ld_library_path",
        "BASH_ENV",
        "ENV",
        "BASH_FUNC_x%%",
        "GIT_DIR",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "PERL5LIB",
        "NODE_OPTIONS",
        "RUBYOPT",
        "PATH",
        "HOME",
        "XDG_CONFIG_HOME",
        "JAVA_TOOL_OPTIONS",
        "GLIBC_TUNABLES",
        "IFS",
    ] {
        assert!(forbidden_env_name(n).is_some(), "{n}");
    }
    for n in ["TZ", "LANG", "LC_ALL", "GREETING", "REPORT_TITLE"] {
        assert!(forbidden_env_name(n).is_none(), "{n}");
    }
}

#[test]
fn guest_cwd_needs_granted_dirs() {
    let err =
        Config::from_toml("[[plugins.p.grants.exec]]\nprogram = \"/bin/ls\"\nguest_cwd = true\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("plugins.p.grants.exec[0].guest_cwd"), "{err}");
}
