//! Property tests of what `exec` reads from a plugin: arguments against the
//! grant's patterns, environment variables, and the working directory it
//! asks for (resolved inside the granted directories).

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::*;
use crate::config::{DirMode, Grants};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn grant() -> ExecGrant {
    ExecGrant {
        program: "/bin/true".into(),
        args: None,
        cwd: None,
        guest_cwd: true,
        env: BTreeMap::from([("LANG".to_owned(), "C".to_owned())]),
        guest_env: BTreeMap::new(),
        timeout_ms: 1000,
        max_output_kib: 1,
    }
}

/// A small regular expression over `a`, `b`, `c` (never `!`, `~`, `-`), as the operator would
/// write one, and a way to draw strings it matches.
#[derive(Debug, Clone)]
enum Re {
    Lit(char),
    Class(&'static str, &'static [char]),
    Concat(Vec<Re>),
    Alt(Vec<Re>),
    Group(Box<Re>),
    Star(Box<Re>),
    Plus(Box<Re>),
    Opt(Box<Re>),
}

impl Re {
    fn pattern(&self) -> String {
        match self {
            Re::Lit(c) => c.to_string(),
            Re::Class(p, _) => (*p).to_owned(),
            Re::Concat(v) => v
                .iter()
                .map(|r| match r {
                    Re::Alt(_) => format!("(?:{})", r.pattern()),
                    _ => r.pattern(),
                })
                .collect(),
            // Alternation binds loosest: at the top of a pattern it is left bare,
            // which is what an unanchored wrapper would get wrong.
            Re::Alt(v) => v.iter().map(Re::pattern).collect::<Vec<_>>().join("|"),
            Re::Group(r) => format!("({})", r.pattern()),
            Re::Star(r) => format!("(?:{})*", r.pattern()),
            Re::Plus(r) => format!("(?:{})+", r.pattern()),
            Re::Opt(r) => format!("(?:{})?", r.pattern()),
        }
    }

    /// A string the pattern matches, chosen by `seed`.
    fn instance(&self, seed: &mut u64) -> String {
        let mut next = |n: usize| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed % n as u64) as usize
        };
        let choice = next(6);
        match self {
            Re::Lit(c) => c.to_string(),
            Re::Class(_, cs) => cs[choice % cs.len()].to_string(),
            Re::Concat(v) => v.iter().map(|r| r.instance(seed)).collect(),
            Re::Alt(v) => v[choice % v.len()].instance(seed),
            Re::Group(r) => r.instance(seed),
            Re::Star(r) => (0..choice % 3).map(|_| r.instance(seed)).collect(),
            Re::Plus(r) => (0..1 + choice % 2).map(|_| r.instance(seed)).collect(),
            Re::Opt(_) if choice % 2 == 0 => String::new(),
            Re::Opt(r) => r.instance(seed),
        }
    }
}

fn re() -> impl Strategy<Value = Re> {
    let leaf = prop_oneof![
        prop::sample::select(&['a', 'b', 'c'][..]).prop_map(Re::Lit),
        Just(Re::Class("[ab]", &['a', 'b'])),
        Just(Re::Class("[^!~-]", &['a', 'b', 'c'])),
        Just(Re::Class("\\w", &['a', 'c'])),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Re::Concat),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Re::Alt),
            inner.clone().prop_map(|r| Re::Group(Box::new(r))),
            inner.clone().prop_map(|r| Re::Star(Box::new(r))),
            inner.clone().prop_map(|r| Re::Plus(Box::new(r))),
            inner.prop_map(|r| Re::Opt(Box::new(r))),
        ]
    })
}

/// Pattern text as an operator might mistype it: unbalanced groups, stray
/// anchors, flags and comments.
fn pattern_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(
            &[
                "a", "b", ".*", "(", ")", "|", "(?:", "[", "]", "\\", "$", "^", "(?x)", "(?m)",
                "#", "\n", "\\)", "[)]", "{", "}", "*",
            ][..],
        ),
        0..7,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    // Compiling nested patterns is slow in debug builds: fewer cases.
    #![proptest_config(config(160))]

    /// Argument patterns are anchored: a pattern matches its instances as a
    /// whole, and never an argument that merely contains an instance.
    #[test]
    fn argument_patterns_match_whole_arguments(
        r in re(),
        seed in 1u64..,
        // Characters no generated pattern matches.
        pre in "[!~-]{1,3}",
        post in "[!~-]{1,3}",
    ) {
        let mut seed = seed;
        let p = r.pattern();
        let w = r.instance(&mut seed);
        let mut g = grant();
        g.args = Some(vec![p.clone()]);
        prop_assert!(args_allowed(&g, std::slice::from_ref(&w)).is_ok(), "{:?} refused {:?}", p, w);
        for arg in [format!("{pre}{w}"), format!("{w}{post}"), format!("{pre}{w}{post}")] {
            prop_assert!(args_allowed(&g, std::slice::from_ref(&arg)).is_err(), "{:?} allowed {:?}", p, arg);
        }
        // One pattern per argument, exactly as many arguments.
        prop_assert!(args_allowed(&g, &[]).is_err());
        prop_assert!(args_allowed(&g, &[w.clone(), w.clone()]).is_err());
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// A pattern that is not a regular expression on its own is refused,
    /// never read with part of it outside the anchors (`a)|(b` would match
    /// any argument starting with `a`).
    #[test]
    fn argument_patterns_cannot_escape_their_anchors(
        p in pattern_soup(),
        v in "[ab()|\\\\x]{0,6}",
    ) {
        match full_match(&p, &v) {
            Ok(matched) => {
                let alone = regex::Regex::new(&p);
                prop_assert!(alone.is_ok(), "pattern {:?} accepted, alone it is {:?}", p, alone.err());
                if matched {
                    prop_assert!(alone.expect("checked").is_match(&v));
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        // The config check agrees with the capability.
        let mut g = grant();
        g.guest_cwd = false;
        g.args = Some(vec![p.clone()]);
        let grants = Grants { exec: vec![g], ..Grants::default() };
        let mut problems = Vec::new();
        grants.check("p", &BTreeMap::new(), &mut problems);
        prop_assert_eq!(problems.is_empty(), full_match(&p, "").is_ok(), "{:?}: {:?}", p, problems);
    }

    /// The environment is the grant's plus the guest variables `guest_env`
    /// allows, values matching as a whole; a variable that loaders, shells or
    /// interpreters read is never the guest's, whatever the grant says.
    #[test]
    fn guest_environment_follows_the_grant(
        vars in proptest::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(&[
                        "TZ", "LANG", "FOO", "LD_PRELOAD", "ld_preload", "Ld_Audit", "BASH_ENV",
                        "PATH", "Path", "PYTHONPATH", "GIT_DIR", "NODE_OPTIONS", "HOME", "IFS",
                        "XDG_CONFIG_HOME", "JAVA_TOOL_OPTIONS", "PERL5OPT", "MYPATH",
                    ][..]).prop_map(str::to_owned),
                    "[A-Za-z_]{1,8}",
                ],
                "[a-z/\\x00=]{0,6}",
            ),
            0..4,
        ),
        listed in proptest::collection::btree_map(
            prop::sample::select(&["TZ", "FOO", "LD_PRELOAD", "PATH", "HOME", "LANG"][..])
                .prop_map(str::to_owned),
            prop::sample::select(&["[a-z/]*", "[a-z]+", ".*"][..]).prop_map(str::to_owned),
            0..4,
        ),
    ) {
        let mut g = grant();
        g.guest_env = listed.clone();
        match environment(&g, &vars) {
            Ok(env) => {
                for (name, value) in &vars {
                    prop_assert!(forbidden_env_name(name).is_none(), "{} accepted", name);
                    let pattern = listed.get(name).expect("only listed names pass");
                    prop_assert!(!value.contains('\0'));
                    prop_assert!(full_match(pattern, value).expect("valid"));
                }
                // Each name once; the guest's value wins over the grant's.
                let mut names: Vec<&String> = env.iter().map(|(k, _)| k).collect();
                names.sort();
                names.dedup();
                prop_assert_eq!(names.len(), env.len());
                for (k, v) in &env {
                    let from_guest = vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
                    prop_assert_eq!(Some(v), from_guest.or_else(|| g.env.get(k)));
                }
            }
            Err(e) => {
                prop_assert!(!e.is_empty());
                let refusable = vars.iter().any(|(n, v)| {
                    forbidden_env_name(n).is_some()
                        || v.contains('\0')
                        || !listed.get(n).is_some_and(|p| full_match(p, v).unwrap_or(false))
                });
                prop_assert!(refusable, "refused {:?}: {}", vars, e);
            }
        }
    }
}

/// A guest path: a granted prefix (or a near miss) and components, some of
/// them `..`, `.`, symbolic links or files.
fn guest_path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(
            &[
                "/data",
                "/data/",
                "/dat",
                "/data2",
                "data",
                "/",
                "//data",
                "/./data",
                "/data/.",
                "",
                "/data/a/b",
                "/data/a/b/..",
            ][..],
        ),
        proptest::collection::vec(
            prop::sample::select(
                &[
                    "a", "b", "..", ".", "link", "up", "f", "x", "", "a/../a", "é",
                ][..],
            ),
            0..5,
        ),
    )
        .prop_map(|(prefix, parts)| {
            if parts.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}/{}", parts.join("/"))
            }
        })
}

/// Where an open directory is, from `/proc`.
fn where_is(fd: &OwnedFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("/proc is mounted")
}

/// The working directory a plugin asks for is opened inside a granted
/// directory, exactly where its path says lexically (no `..`, no symbolic
/// link followed, the longest granted prefix wins), or refused.
#[test]
fn guest_working_directories_stay_inside_granted_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical").join("root");
    let inner = tmp.path().canonicalize().expect("canonical").join("inner");
    for d in [
        root.join("a/b"),
        root.join("é"),
        inner.join("a"),
        inner.join("b"),
    ] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(root.join("f"), b"x").expect("file");
    std::os::unix::fs::symlink("/", root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("..", root.join("a/up")).expect("symlink");
    let dirs = vec![
        DirGrant {
            host: root.clone(),
            guest: "/data".into(),
            mode: DirMode::ReadOnly,
        },
        DirGrant {
            host: inner.clone(),
            guest: "/data/a/b".into(),
            mode: DirMode::ReadOnly,
        },
    ];
    let g = grant();
    let opened = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(config(512));
    runner
        .run(&guest_path(), |path| {
            let result = work_dir(&g, &dirs, Some(&path));
            let p = Path::new(&path);
            let lexical = dirs
                .iter()
                .filter_map(|d| p.strip_prefix(&d.guest).ok().map(|rest| (d, rest)))
                .max_by_key(|(d, _)| d.guest.len());
            match result {
                Ok(WorkDir::Opened(fd)) => {
                    opened.set(opened.get() + 1);
                    let (d, rest) = lexical.expect("inside a granted dir");
                    prop_assert!(
                        !rest.components().any(|c| matches!(c, Component::ParentDir)),
                        "{} accepted",
                        path
                    );
                    let expected: PathBuf = rest
                        .components()
                        .filter(|c| matches!(c, Component::Normal(_)))
                        .fold(d.host.clone(), |acc, c| acc.join(c));
                    prop_assert_eq!(where_is(&fd), expected, "for {}", path);
                }
                Ok(WorkDir::Operator(_)) => {
                    prop_assert!(false, "the operator's directory for a guest path {}", path)
                }
                Err(e) => {
                    prop_assert!(!e.is_empty());
                    if let Some((d, rest)) = lexical {
                        let target: PathBuf = rest
                            .components()
                            .filter(|c| matches!(c, Component::Normal(_)))
                            .fold(d.host.clone(), |acc, c| acc.join(c));
                        let plain = !rest.components().any(|c| matches!(c, Component::ParentDir))
                            && std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir())
                            && target.canonicalize().is_ok_and(|c| c == target);
                        prop_assert!(!plain, "{} refused: {}", path, e);
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(opened.get() > 0, "no directory was ever opened");
}
