//! The child-process compiler's failure paths, with shell scripts standing in
//! for the child (the real child is exercised by every end-to-end test: the
//! serving host compiles every plugin that way).

use std::os::unix::fs::PermissionsExt as _;

use super::*;

const WAT: &str = r#"(component (core module (func (export "f"))))"#;

/// A `Compiler::Child` running `script` (a shell script body) as the child.
fn scripted(dir: &tempfile::TempDir, script: &str, timeout: Duration) -> Compiler {
    let exe = dir.path().join("compiler");
    std::fs::write(&exe, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    Compiler::Child {
        exe,
        options: RuntimeOptions::default(),
        timeout,
    }
}

/// What `c` says about a trivial component it cannot compile.
fn refusal(c: &Compiler) -> CompileError {
    c.component(&engine(), WAT.as_bytes())
        .map(|_| ())
        .unwrap_err()
}

fn engine() -> Engine {
    Engine::new(&super::super::engine_config(RuntimeOptions::default())).unwrap()
}

#[test]
fn in_process_compiles() {
    let (component, artifact) = Compiler::InProcess
        .component(&engine(), WAT.as_bytes())
        .unwrap();
    assert!(!artifact.is_empty());
    drop(component);
}

#[test]
fn the_childs_compile_error_is_the_plugins_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = scripted(
        &dir,
        "cat >/dev/null; echo 'failed to parse WebAssembly module' >&2; echo more >&2; exit 3",
        Duration::from_secs(30),
    );
    match refusal(&c) {
        CompileError::Invalid(m) => assert_eq!(m, "failed to parse WebAssembly module"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_crashing_child_refuses_the_plugin_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let c = scripted(
        &dir,
        "echo 'out of memory' >&2; kill -9 $$",
        Duration::from_secs(30),
    );
    let e = refusal(&c);
    let text = e.to_string();
    assert!(matches!(e, CompileError::Process(_)), "{text}");
    assert!(
        text.contains("signal: 9") && text.contains("out of memory"),
        "{text}"
    );
}

#[test]
fn a_child_past_its_deadline_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let c = scripted(&dir, "exec sleep 30", Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = refusal(&c);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the child was not killed"
    );
    assert!(e.to_string().contains("was stopped after 300 ms"), "{e}");
}

#[test]
fn garbage_from_the_child_is_refused_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let c = scripted(
        &dir,
        "cat >/dev/null; printf 'definitely not compiled code'",
        Duration::from_secs(30),
    );
    let e = refusal(&c);
    assert!(matches!(e, CompileError::Process(_)), "{e}");
    assert!(
        e.to_string().contains("produced code this engine refuses"),
        "{e}"
    );
}
