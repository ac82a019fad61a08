//! Property tests of what the MCP layer reads from untrusted sides: resource
//! URIs against plugin URI templates (`stockade_sdk::uri_template`, the
//! matcher the host routes `resources/read` with) and plugin call results
//! turned into rmcp's types.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use stockade_sdk::uri_template::{MAX_URI_LEN, match_uri, matches, overlap};

use super::*;
use crate::bindings::types::{BlobResource, Media, ResourceLink, Role, TextResource};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One part of a generated template.
#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    /// A variable: `{x}` (false) or `{+x}` / `{#x}` (true, any character).
    Var(bool, String),
}

/// Characters of literals and values: the separators simple variables stop
/// at, regex metacharacters (the reference escapes them) and non-ASCII.
const CHAR: &str = "[ab/?#.:*+()|$é€]";
const LITERAL: &str = "[ab/?#.:*+()|$é€]{1,3}";
const VALUE: &str = "[ab/?#.:*+()|$é€]{1,4}";

fn parts() -> impl Strategy<Value = Vec<Part>> {
    let part = prop_oneof![
        LITERAL.prop_map(Part::Literal),
        (
            any::<bool>(),
            "[a-z][a-z0-9_.%]{0,3}",
            prop::sample::select(&["+", "#"][..])
        )
            .prop_map(|(any, name, op)| Part::Var(
                any,
                if any { format!("{op}{name}") } else { name }
            )),
    ];
    (
        "[a-z]{1,3}://".prop_map(Part::Literal),
        proptest::collection::vec(part, 0..6),
    )
        .prop_map(|(head, mut rest)| {
            rest.insert(0, head);
            rest
        })
}

fn template(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Literal(l) => l.clone(),
            Part::Var(_, name) => format!("{{{name}}}"),
        })
        .collect()
}

/// The reference: a regular expression with a capture group per variable.
fn reference(parts: &[Part]) -> regex::Regex {
    let mut re = String::from("(?s)^");
    for p in parts {
        match p {
            Part::Literal(l) => re.push_str(&regex::escape(l)),
            Part::Var(false, _) => re.push_str("([^/?#]+)"),
            Part::Var(true, _) => re.push_str("(.+)"),
        }
    }
    re.push('$');
    regex::Regex::new(&re).expect("the reference compiles")
}

/// A URI made from `parts`, mostly one they match, sometimes slightly off.
fn instance(parts: Vec<Part>) -> impl Strategy<Value = (Vec<Part>, String)> {
    let n = parts.len();
    (
        proptest::collection::vec(
            prop_oneof![
                4 => "[abé€.:]{1,4}",
                1 => VALUE,
            ],
            n,
        ),
        0usize..6,
        any::<prop::sample::Index>(),
        CHAR,
    )
        .prop_map(move |(values, tweak, at, c)| {
            let mut uri = String::new();
            for (p, v) in parts.iter().zip(&values) {
                match p {
                    Part::Literal(l) => uri.push_str(l),
                    Part::Var(..) => uri.push_str(v),
                }
            }
            let chars: Vec<char> = uri.chars().collect();
            let i = at.index(chars.len() + 1);
            let uri = match tweak {
                0 => chars[..i].iter().collect(),
                1 if i < chars.len() => chars[..i].iter().chain(&chars[i + 1..]).collect(),
                2 => format!(
                    "{}{c}{}",
                    chars[..i].iter().collect::<String>(),
                    chars[i..].iter().collect::<String>()
                ),
                _ => uri,
            };
            (parts.clone(), uri)
        })
}

fn template_and_uri() -> impl Strategy<Value = (Vec<Part>, String)> {
    parts().prop_flat_map(instance)
}

/// A template sharing much with `a`: some variables made literal, some
/// literals made variables, or an unrelated one.
fn related(a: Vec<Part>) -> impl Strategy<Value = Vec<Part>> {
    let n = a.len();
    prop_oneof![
        3 => (
            proptest::collection::vec((0u8..4, "[abé/.]{1,2}"), n),
        )
            .prop_map(move |(changes,)| {
                a.iter()
                    .zip(changes)
                    .map(|(p, (change, text))| match (p, change) {
                        (Part::Var(..), 0) => Part::Literal(text),
                        (Part::Literal(_), 1) => Part::Var(false, "v".into()),
                        (Part::Literal(_), 2) => Part::Var(true, "+v".into()),
                        (Part::Var(_, _), 3) => Part::Var(true, "+w".into()),
                        (p, _) => p.clone(),
                    })
                    .collect()
            }),
        1 => parts(),
    ]
}

fn two_templates_and_uri() -> impl Strategy<Value = (Vec<Part>, Vec<Part>, String)> {
    template_and_uri()
        .prop_flat_map(|(a, uri)| related(a.clone()).prop_map(move |b| (a.clone(), b, uri.clone())))
}

/// Templates with one defect: they match nothing.
fn malformed() -> impl Strategy<Value = String> {
    let defect = prop_oneof![
        Just("{"),
        Just("}"),
        Just("{}"),
        Just("{+}"),
        Just("{x y}"),
        Just("{?x}"),
        Just("{/x}"),
        Just("{;x}"),
        Just("{x*}"),
        Just("{x:3}"),
        Just("{{x}}"),
        Just("{x"),
        Just("x}"),
        Just("{é}"),
    ];
    (parts(), defect, any::<prop::sample::Index>()).prop_map(|(parts, defect, at)| {
        let mut t: Vec<String> = parts
            .iter()
            .map(|p| template(std::slice::from_ref(p)))
            .collect();
        t.insert(at.index(t.len() + 1), defect.to_owned());
        t.concat()
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// `match_uri` agrees with the regular expression the template stands
    /// for, values included (earlier variables take as much as they can,
    /// like greedy groups).
    #[test]
    fn templates_match_like_their_regex((parts, uri) in template_and_uri()) {
        let t = template(&parts);
        let expected = reference(&parts).captures(&uri).map(|c| {
            c.iter().skip(1).map(|g| g.expect("every group takes part").as_str().to_owned()).collect::<Vec<_>>()
        });
        prop_assert_eq!(match_uri(&t, &uri), expected, "template {:?}, uri {:?}", t, uri);
    }

    /// Malformed templates and other operators match nothing.
    #[test]
    fn malformed_templates_match_nothing(t in malformed(), (_, uri) in template_and_uri()) {
        prop_assert!(!matches(&t, &uri), "{:?} matched {:?}", t, uri);
        prop_assert!(!matches(&t, &t));
        prop_assert!(!overlap(&t, &uri) && !overlap(&uri, &t));
    }

    /// Two templates overlap when some URI matches both (never says no then),
    /// in either order; a plain URI overlaps a template exactly when it
    /// matches it.
    #[test]
    fn overlap_finds_every_shared_uri((a, b, uri) in two_templates_and_uri()) {
        let (ta, tb) = (template(&a), template(&b));
        prop_assert_eq!(overlap(&ta, &tb), overlap(&tb, &ta), "{:?} / {:?}", ta, tb);
        if matches(&ta, &uri) && matches(&tb, &uri) {
            prop_assert!(overlap(&ta, &tb), "{:?} and {:?} both match {:?}", ta, tb, uri);
        }
        // A plain URI is a template without variables.
        if !uri.contains(['{', '}']) {
            prop_assert_eq!(overlap(&ta, &uri), matches(&ta, &uri), "{:?} / {:?}", ta, uri);
        }
    }

    /// A URI longer than `MAX_URI_LEN` matches nothing, even a template that
    /// takes any text.
    #[test]
    fn overlong_uris_match_nothing((parts, uri) in template_and_uri(), extra in 0usize..3) {
        let mut parts = parts;
        parts.push(Part::Var(true, "+rest".into()));
        let t = template(&parts);
        let pad = MAX_URI_LEN.saturating_sub(uri.len()) + extra;
        let long = format!("{uri}{}", "a".repeat(pad));
        if long.len() > MAX_URI_LEN {
            prop_assert!(!matches(&t, &long));
        } else {
            prop_assert_eq!(matches(&t, &long), reference(&parts).is_match(&long));
        }
    }
}

proptest! {
    #![proptest_config(config(12))]

    /// Matching a hostile URI of the largest size takes linear time, whatever
    /// the template (a backtracking matcher takes minutes on these).
    #[test]
    fn matching_time_is_bounded(parts in parts(), filler in "[ab/.é]{1,3}") {
        let mut t = template(&parts);
        t.push_str("{x}{y}{+z}!");
        let uri = filler.repeat(MAX_URI_LEN / filler.len());
        let cut = (0..=MAX_URI_LEN - 16).rev().find(|&i| uri.is_char_boundary(i)).unwrap_or(0);
        let started = Instant::now();
        let _ = match_uri(&t, &uri);
        let _ = match_uri(&t, &format!("{}{}", template(&parts[..1]), &uri[..cut]));
        prop_assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::User), Just(Role::Assistant)]
}

fn annotations() -> impl Strategy<Value = Option<ContentAnnotations>> {
    proptest::option::of(
        (
            proptest::collection::vec(role(), 0..3),
            proptest::option::of(prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(1e300),
                Just(-0.0),
            ]),
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(audience, priority, last_modified)| ContentAnnotations {
                audience,
                priority,
                last_modified,
            }),
    )
}

fn media() -> impl Strategy<Value = Media> {
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<String>(),
        annotations(),
    )
        .prop_map(|(data, mime_type, annotations)| Media {
            data,
            mime_type,
            annotations,
        })
}

fn guest_content() -> impl Strategy<Value = Content> {
    let text = any::<String>();
    let opt = || proptest::option::of(any::<String>());
    prop_oneof![
        text.prop_map(Content::Text),
        media().prop_map(Content::Image),
        media().prop_map(Content::Audio),
        (any::<String>(), opt(), any::<String>()).prop_map(|(uri, mime_type, text)| {
            Content::EmbeddedResource(ResourceContents::Text(TextResource {
                uri,
                mime_type,
                text,
            }))
        }),
        (
            any::<String>(),
            opt(),
            proptest::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(uri, mime_type, blob)| {
                Content::EmbeddedResource(ResourceContents::Blob(BlobResource {
                    uri,
                    mime_type,
                    blob,
                }))
            }),
        (
            any::<String>(),
            any::<String>(),
            opt(),
            opt(),
            opt(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(uri, name, title, description, mime_type, size)| {
                Content::ResourceLink(ResourceLink {
                    uri,
                    name,
                    title,
                    description,
                    mime_type,
                    size,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever a plugin returns converts into rmcp's result type (a failure
    /// would answer the client with an internal error), with every content
    /// block and its text kept; structured content that is not JSON becomes
    /// an error result.
    #[test]
    fn any_plugin_result_converts(
        content in proptest::collection::vec(guest_content(), 0..4),
        structured in proptest::option::of(prop_oneof![
            any::<String>(),
            Just("{\"a\":1}".to_owned()),
            Just("[1,2]".to_owned()),
            Just("5".to_owned()),
            Just("null".to_owned()),
            Just("1e999".to_owned()),
        ]),
        is_error in any::<bool>(),
    ) {
        let r = CallResult { content: content.clone(), structured_content: structured.clone(), is_error };
        let v = call_result(&r);
        let converted: rmcp::model::CallToolResult = to_rmcp(v.clone())
            .map_err(|e| TestCaseError::fail(format!("{e:?} for {v}")))?;
        let valid = structured.as_deref().map(|s| serde_json::from_str::<Value>(s).is_ok());
        let added = usize::from(valid == Some(false) || (valid == Some(true) && content.is_empty()));
        prop_assert_eq!(converted.content.len(), content.len() + added);
        prop_assert_eq!(converted.is_error, Some(is_error || valid == Some(false)));
        for (c, back) in content.iter().zip(&converted.content) {
            if let Content::Text(t) = c {
                prop_assert_eq!(back.as_text().map(|x| x.text.as_str()), Some(t.as_str()));
            }
        }
    }
}
