//! Property tests of how the PostgreSQL engine reads a plugin's statement
//! before the server does: its first keyword (what may run at all) and where
//! it ends (what is wrapped in the size-bounding subquery). The reference is
//! PostgreSQL's own lexer (`scan.l`), restated for the generated tokens.

use proptest::prelude::*;

use super::{READING, first_keyword, up_to_semicolon};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text of a comment or literal body: no `*` or `/` (so no comment opens or
/// closes by accident), quotes and `;` included.
const BODY: &str = "[a-z ;'\"$é-]{0,6}";

/// A block comment; PostgreSQL's nest.
fn block_comment() -> impl Strategy<Value = String> {
    let leaf = BODY.prop_map(|b| format!("/*{b}*/"));
    leaf.prop_recursive(2, 4, 2, |inner| {
        (BODY, inner, BODY).prop_map(|(a, c, b)| format!("/*{a}{c}{b}*/"))
    })
}

/// A `--` comment: PostgreSQL ends it at a newline or a carriage return.
fn line_comment() -> impl Strategy<Value = String> {
    (
        "[a-z ;'\"$é/*-]{0,6}",
        prop::sample::select(&["\n", "\r", "\r\n"][..]),
    )
        .prop_map(|(b, end)| format!("--{b}{end}"))
}

/// One token of a statement, never a top-level `;`.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        // Identifiers: letters, digits, `_`, `$` and any non-ASCII character.
        "[a-zA-Z_é][a-zA-Z0-9_$é]{0,5}",
        prop::sample::select(&["SELECT", "FROM", "WHERE", "AS", "e", "E", "U&"][..])
            .prop_map(str::to_owned),
        "[0-9]{1,3}",
        "\\$[1-9]",
        // 'strings' ('' is a quote; a backslash is just a backslash).
        "[a-z ;\"$\\\\é']{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        // E'strings' with backslash escapes.
        proptest::collection::vec(
            prop::sample::select(&["a", ";", "\\'", "\\\\", "''", "$", "\""][..]),
            0..5
        )
        .prop_map(|v| format!("E'{}'", v.concat())),
        // "quoted identifiers" ("" is a quote).
        "[a-z ;'$é\"]{1,6}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
        // Dollar quotes: $$...$$ and $tag$...$tag$; tags are identifier-like.
        ("(|[a-zA-Z_é][a-zA-Z0-9_é]{0,3})", "[a-z ;'$é]{0,6}")
            .prop_filter("the body does not close the quote", |(tag, body)| {
                !format!("{body}$").contains(&format!("${tag}$"))
            })
            .prop_map(|(tag, body)| format!("${tag}${body}${tag}$")),
        line_comment(),
        block_comment(),
        prop::sample::select(
            &[
                "(", ")", ",", "::", "+", "-", "*", "/", "=", "<>", "[", "]", "."
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&[" ", "\n", "\t", "  ", "\r"][..])
}

/// Tokens joined by separators.
fn tokens(n: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec((token(), separator()), n)
        .prop_map(|v| v.into_iter().map(|(t, s)| format!("{t}{s}")).collect())
}

/// What PostgreSQL skips before a statement's first keyword.
fn noise() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            prop::sample::select(&[" ", "\t", "\n", "\r", "\x0c", "("][..]).prop_map(str::to_owned),
            line_comment(),
            block_comment(),
        ],
        0..5,
    )
    .prop_map(|v| v.concat())
}

const KEYWORDS: &[&str] = &[
    "SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN", "SHOW", "INSERT", "UPDATE", "DELETE", "MERGE",
    "COPY", "LOCK", "SET", "RESET", "DO", "CALL", "PREPARE", "EXECUTE", "DECLARE", "NOTIFY",
    "LISTEN", "CREATE", "DROP", "ALTER", "TRUNCATE", "GRANT", "VACUUM", "DISCARD",
];

proptest! {
    #![proptest_config(config(1024))]

    /// The statement is cut exactly at its first `;` outside literals, quoted
    /// identifiers and comments.
    #[test]
    fn the_statement_ends_at_its_first_top_level_semicolon(
        head in tokens(0..8),
        tail in proptest::option::of(tokens(0..4)),
    ) {
        let statement = match &tail {
            Some(t) => format!("{head};{t}"),
            None => head.clone(),
        };
        prop_assert_eq!(up_to_semicolon(&statement), head.as_str(), "in {:?}", statement);
    }

    /// On any text: a prefix, ending where a `;` is or at the end.
    #[test]
    fn the_statement_is_a_prefix(s in "[$'\"Ee\\\\/*;\\n\\r a_é-]{0,40}|\\PC{0,60}") {
        let cut = up_to_semicolon(&s);
        prop_assert!(s.starts_with(cut));
        prop_assert!(cut.len() == s.len() || s[cut.len()..].starts_with(';'));
    }

    /// The first keyword is the one PostgreSQL reads, after any whitespace,
    /// comments (nested, `--` ended by a newline or a carriage return) and
    /// opening parentheses; so a statement that is not a reading one is never
    /// taken for one.
    #[test]
    fn the_first_keyword_is_the_one_postgres_reads(
        noise in noise(),
        keyword in prop::sample::select(KEYWORDS),
        lower in any::<bool>(),
        after in prop::sample::select(&[" ", "\n", "\r", "(", "*", "--x\n", "/**/", ";"][..]),
        rest in tokens(0..4),
    ) {
        let kw = if lower { keyword.to_ascii_lowercase() } else { keyword.to_owned() };
        let statement = format!("{noise}{kw}{after}{rest}");
        let read = first_keyword(&statement);
        prop_assert_eq!(&read, keyword, "in {:?}", statement);
        if !READING.contains(&keyword) {
            prop_assert!(!READING.contains(&read.as_str()));
        }
    }
}

/// Inputs proptest found (kept as plain cases).
#[test]
fn found_cases() {
    // Nested comments: PostgreSQL reads INSERT.
    assert_eq!(
        first_keyword("/* /* */ SELECT */ INSERT INTO t VALUES (1)"),
        "INSERT"
    );
    // A `--` comment ends at a carriage return: PostgreSQL reads LOCK.
    assert_eq!(
        first_keyword("-- x\rLOCK\nTABLE t IN ROW EXCLUSIVE MODE"),
        "LOCK"
    );
    assert_eq!(first_keyword("( /* c */ (SELECT 1))"), "SELECT");
    // `$` after a non-ASCII identifier character is part of the identifier.
    assert_eq!(up_to_semicolon("SELECT 1 AS é$$;$$"), "SELECT 1 AS é$$");
    assert_eq!(up_to_semicolon("SELECT $é$;$é$;"), "SELECT $é$;$é$");
    assert_eq!(up_to_semicolon("SELECT 1 -- c\r; x"), "SELECT 1 -- c\r");
}
