use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::call::CallContext;
use crate::config::{DirMode, Grants};

fn grant(program: &str) -> ExecGrant {
    ExecGrant {
        program: program.into(),
        args: None,
        cwd: None,
        guest_cwd: false,
        env: BTreeMap::from([("LANG".to_owned(), "C".to_owned())]),
        guest_env: BTreeMap::new(),
        timeout_ms: 5000,
        max_output_kib: 64,
    }
}

/// The capability runs on the call's context alone: no store, no wasm.
fn state(grants: Grants) -> CallContext {
    let mut cx = CallContext::internal("p");
    cx.grants = Arc::new(grants);
    cx
}

fn command(program: &str, args: &[&str]) -> Command {
    Command {
        program: program.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        cwd: None,
        env: Vec::new(),
        stdin: None,
        timeout_ms: None,
    }
}

#[test]
fn the_environment_is_the_grants() {
    let mut g = grant("/bin/echo");
    g.guest_env.insert("TZ".into(), "[A-Za-z/_]{1,30}".into());
    let env = environment(&g, &[("TZ".into(), "Europe/Paris".into())]).unwrap();
    assert_eq!(
        env,
        [
            ("LANG".into(), "C".into()),
            ("TZ".into(), "Europe/Paris".into())
        ]
    );
    // Not listed, forbidden whatever the grant says, or a value off the pattern.
    for (k, v, why) in [
        ("LD_PRELOAD", "/data/x.so", "never chooses it"),
        ("ld_preload", "/data/x.so", "never chooses it"),
        ("BASH_ENV", "$(id)", "never chooses it"),
        ("GIT_CONFIG_COUNT", "1", "never chooses it"),
        ("PYTHONSTARTUP", "/data/x.py", "never chooses it"),
        ("NODE_OPTIONS", "--require /data/x.js", "never chooses it"),
        ("PATH", "/data", "never chooses it"),
        ("LANG", "C.UTF-8", "grants.exec.guest_env"),
        ("TZ", "../../etc/x;id", "does not match the allowed pattern"),
        ("TZ", "UTC\0", "does not match"),
    ] {
        let e = environment(&g, &[(k.into(), v.into())]).unwrap_err();
        assert!(e.contains(why), "{k}={v}: {e}");
    }
}

#[test]
fn a_guest_cwd_needs_the_grant_and_stays_inside_granted_dirs() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(data.join("work/deep")).unwrap();
    std::fs::create_dir(root.path().join("secret")).unwrap();
    std::os::unix::fs::symlink(root.path().join("secret"), data.join("out")).unwrap();
    std::os::unix::fs::symlink("/", data.join("work/up")).unwrap();
    let dirs = [DirGrant {
        host: data.clone(),
        guest: "/data".into(),
        mode: DirMode::ReadWrite,
    }];
    let mut g = grant("/bin/pwd");
    g.cwd = Some("/tmp".into());
    assert!(
        matches!(work_dir(&g, &dirs, None), Ok(WorkDir::Operator(p)) if p == Path::new("/tmp"))
    );
    let e = work_dir(&g, &dirs, Some("/data/work")).err().unwrap();
    assert!(e.contains("guest_cwd = true"), "{e}");

    g.guest_cwd = true;
    for ok in ["/data", "/data/work", "/data/./work/deep/"] {
        assert!(
            matches!(work_dir(&g, &dirs, Some(ok)), Ok(WorkDir::Opened(_))),
            "{ok}"
        );
    }
    for bad in [
        "/",
        "/etc",
        "/database",
        "data/work",
        "/data/../etc",
        "/data/work/../../secret",
        "/data/out",
        "/data/work/up",
        "/data/work/up/etc",
        "/data/missing",
    ] {
        let e = work_dir(&g, &dirs, Some(bad)).err().unwrap();
        assert!(e.contains("must lie inside one of"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn refused_commands_never_start() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let mut g = grant("/bin/sh");
    g.args = Some(vec!["-c".into(), ".*".into()]);
    let mut st = state(Grants {
        exec: vec![g],
        ..Grants::default()
    });
    let script = format!("touch {}", marker.display());
    for (k, v) in [
        ("BASH_ENV", "/dev/null"),
        ("LD_PRELOAD", "/nonexistent.so"),
        ("GIT_CONFIG_COUNT", "1"),
    ] {
        let mut c = command("/bin/sh", &["-c", &script]);
        c.env.push((k.into(), v.into()));
        let e = st.run(c).await.unwrap_err();
        assert!(
            matches!(&e, CapabilityError::Denied(m) if m.contains(k) && m.contains("plugin `p`")),
            "{e:?}"
        );
    }
    let mut c = command("/bin/sh", &["-c", &script]);
    c.cwd = Some("/etc".into());
    let e = st.run(c).await.unwrap_err();
    assert!(
        matches!(&e, CapabilityError::Denied(m) if m.contains("guest_cwd")),
        "{e:?}"
    );
    assert!(!marker.exists(), "nothing ran");
    // The same command without the guest's extras runs.
    st.run(command("/bin/sh", &["-c", &script])).await.unwrap();
    assert!(marker.exists());
}

/// Whether a process whose command line contains `marker` is running.
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

#[tokio::test]
async fn the_whole_process_group_goes_on_exit_timeout_and_cap() {
    let mut g = grant("/bin/sh");
    g.timeout_ms = 1500;
    g.max_output_kib = 1;
    let mut st = state(Grants {
        exec: vec![g],
        ..Grants::default()
    });
    let id = std::process::id();
    // Exits at once, leaving a background sleep holding stdout.
    let m1 = format!("1000.{id}1");
    let script = format!("sleep {m1} & echo started");
    let t = std::time::Instant::now();
    let out = st.run(command("/bin/sh", &["-c", &script])).await.unwrap();
    assert_eq!(out.stdout, b"started\n");
    assert!(!out.timed_out && t.elapsed() < Duration::from_millis(1400));
    // Runs past the timeout: the output so far comes back.
    let m2 = format!("1000.{id}2");
    let script = format!("sleep {m2} & echo partial; sleep {m2}");
    let out = st.run(command("/bin/sh", &["-c", &script])).await.unwrap();
    assert!(out.timed_out);
    assert_eq!(out.stdout, b"partial\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("grants.exec.timeout_ms"));
    // Floods its output: stopped at the cap.
    let m3 = format!("1000.{id}3");
    let script = format!("sleep {m3} & yes");
    let t = std::time::Instant::now();
    let out = st.run(command("/bin/sh", &["-c", &script])).await.unwrap();
    assert!(out.truncated && out.stdout.len() == 1024 && !out.timed_out);
    assert!(t.elapsed() < Duration::from_millis(1400));
    // Dropped mid-run (a cancelled call).
    let m4 = format!("1000.{id}4");
    let script = format!("sleep {m4} & sleep {m4}");
    let _ = tokio::time::timeout(
        Duration::from_millis(300),
        st.run(command("/bin/sh", &["-c", &script])),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for m in [m1, m2, m3, m4] {
        assert!(!running_with(&m), "a `sleep {m}` outlived its call");
    }
}
