//! Property tests of the authorization server's parsers of untrusted input:
//! redirect URIs (registration, client metadata documents, the redirect back),
//! origins, scopes, forms, PKCE, HTML escaping. `cargo fuzz` covers the same
//! functions (fuzz/README.md).

use proptest::prelude::*;

use super::*;
use crate::auth::cimd;
use crate::auth::register::{ClientMetadata, validate_metadata};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Found failures are kept as unit tests instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// URI-looking text built from pieces that have fooled URI checks before:
/// loopback look-alikes, user info, backslashes, percent-encoding, dangerous
/// schemes in other cases, fragments, odd separators.
fn uri() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("https"),
        Just("http"),
        Just("HTTP"),
        Just("HtTpS"),
        Just("javascript"),
        Just("JavaScript"),
        Just("data"),
        Just("file"),
        Just("ws"),
        Just("wss"),
        Just("ftp"),
        Just("blob"),
        Just("about"),
        Just("vbscript"),
        Just("com.example.app"),
        Just("myapp"),
        Just(""),
    ];
    let sep = prop_oneof![
        Just("://"),
        Just(":"),
        Just(":/"),
        Just(":///"),
        Just(":\\\\"),
        Just("://\t"),
        Just(": //"),
    ];
    let user = prop_oneof![
        Just(""),
        Just(""),
        Just("u@"),
        Just("u:p@"),
        Just("@"),
        Just("localhost@"),
        Just("127.0.0.1@"),
        Just("%40@"),
        Just("evil.com\\@"),
    ];
    let host = prop_oneof![
        prop::sample::select(
            &[
                "localhost",
                "LOCALHOST",
                "localhost.",
                "127.0.0.1",
                "127.1",
                "127.255.255.254",
                "2130706433",
                "0x7f.1",
                "0177.0.0.1",
                "[::1]",
                "[::ffff:127.0.0.1]",
                "[0:0:0:0:0:0:0:1]",
                "0.0.0.0",
                "localhost.evil.com",
                "127.0.0.1.evil.com",
                "localhost%2eevil.com",
                "evil.com",
                "app.example.com",
                "ex%61mple.com",
                "ëxample.com",
                "a b",
                "",
                "evil.com\\@localhost",
                "localhost\\@evil.com",
                "evil.com#@localhost",
                "evil.com?@localhost",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z0-9.%-]{0,12}",
    ];
    let port = prop_oneof![
        Just(""),
        Just(":80"),
        Just(":8080"),
        Just(":0"),
        Just(":65536"),
        Just(":x"),
    ];
    let path = "(/[a-zA-Z0-9._~%@:\\\\-]{0,6}){0,3}";
    let query = prop_oneof![Just(String::new()), "\\?[a-z=&%+#]{0,10}"];
    let fragment = prop_oneof![Just(String::new()), Just(String::new()), "#[a-z]{0,4}"];
    (scheme, sep, user, host, port, path, query, fragment)
        .prop_map(|(s, sep, u, h, p, path, q, f)| format!("{s}{sep}{u}{h}{p}{path}{q}{f}"))
}

/// Text that is sometimes a URI and sometimes anything at all.
fn any_uri() -> impl Strategy<Value = String> {
    prop_oneof![4 => uri(), 1 => any::<String>(), 1 => "\\PC{0,3000}"]
}

/// Any string, with the characters that matter to URLs and forms over-represented.
fn form_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z&=+%#?/ \\\\;:@]{0,12}", any::<String>()]
}

proptest! {
    #![proptest_config(config(512))]

    /// An accepted redirect URI has no fragment or user info, no forbidden
    /// scheme, a host for https, and plain http only to a loopback host: as
    /// parsed, and as the browser will be sent there (`with_query`).
    #[test]
    fn accepted_redirect_uris_keep_the_rules(u in any_uri()) {
        let Ok(url) = check_redirect_uri(&u) else { return Ok(()); };
        prop_assert!(u.len() <= 2000);
        prop_assert!(!u.contains('#') && url.fragment().is_none());
        prop_assert!(url.username().is_empty() && url.password().is_none());
        prop_assert!(!FORBIDDEN_SCHEMES.contains(&url.scheme()));
        let location = url::Url::parse(&with_query(&u, &[("code", "c"), ("state", "s")]))
            .expect("the redirect to an accepted URI parses");
        for target in [&url, &location] {
            match target.scheme() {
                "https" => prop_assert!(target.host().is_some()),
                "http" => prop_assert!(
                    target.host().is_some_and(|h| crate::config::is_loopback_host(&h)),
                    "plain http to a non-loopback host: {u}"
                ),
                _ => {}
            }
        }
        // The login page names where the browser goes, and the CSP allows it.
        prop_assert_eq!(location.host_str(), url.host_str());
        prop_assert_eq!(location.port(), url.port());
        if let Some(h) = url.host_str() {
            let shown = redirect_host(&u);
            prop_assert!(shown.starts_with(h), "{} shown for {}", shown, u);
            if let Some(src) = csp_source(&u) {
                prop_assert_eq!(src, format!("{}://{}", url.scheme(), shown));
            }
        }
    }

    /// The redirect back carries exactly the parameters the server adds, after
    /// the client's own, whatever `state` holds (no parameter or fragment
    /// injection), and goes to the registered scheme, host, port and path.
    #[test]
    fn the_redirect_back_carries_exactly_code_and_state(
        u in uri(),
        code in form_text(),
        state in form_text(),
    ) {
        let Ok(url) = check_redirect_uri(&u) else { return Ok(()); };
        let location = with_query(&u, &[("code", &code), ("state", &state)]);
        let back = url::Url::parse(&location).expect("parses");
        prop_assert_eq!(back.scheme(), url.scheme());
        prop_assert_eq!(back.host_str(), url.host_str());
        prop_assert_eq!(back.port(), url.port());
        prop_assert_eq!(back.path(), url.path());
        prop_assert!(back.fragment().is_none());
        let mut expected: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        expected.push(("code".into(), code.clone()));
        expected.push(("state".into(), state.clone()));
        let got: Vec<(String, String)> = back.query_pairs().into_owned().collect();
        prop_assert_eq!(got, expected);
    }

    /// A requested redirect URI matches only a registered one, byte for byte:
    /// never another spelling of it, let alone another host.
    #[test]
    fn redirect_uris_match_only_exactly(
        registered in proptest::collection::vec(uri(), 1..4),
        pick in any::<prop::sample::Index>(),
        tweak in 0usize..8,
    ) {
        let base = pick.get(&registered).clone();
        let requested = match tweak {
            0 => base.clone(),
            1 => base.to_uppercase(),
            2 => format!("{base}/"),
            3 => base.replacen("://", "://evil.com@", 1),
            4 => base.replacen("localhost", "127.0.0.1", 1),
            5 => format!("{base}#x"),
            6 => base.replacen('/', "/./", 1),
            _ => base.replacen("e", "%65", 1),
        };
        let matched = redirect_uri_matches(&requested, &registered);
        prop_assert_eq!(matched, registered.contains(&requested));
    }

    /// Normalizing an origin is idempotent and lower-cases the host, so an
    /// `Origin` header and a configured origin compare as one.
    #[test]
    fn normalized_origins_are_fixed_points(o in any_uri()) {
        if let Some(n) = normalize_origin(&o) {
            let again = normalize_origin(&n);
            prop_assert_eq!(again.as_deref(), Some(n.as_str()));
            prop_assert_eq!(n.to_ascii_lowercase(), n.clone());
            let parsed = url::Url::parse(&o).expect("normalized, so it parsed");
            prop_assert_eq!(
                n,
                format!(
                    "{}://{}:{}",
                    parsed.scheme(),
                    parsed.host_str().unwrap_or_default().to_ascii_lowercase(),
                    parsed.port_or_known_default().unwrap_or_default()
                )
            );
        }
    }

    /// Scopes: every space-separated token once, in order, nothing else.
    #[test]
    fn scopes_are_the_distinct_tokens(s in "[a-c :\t]{0,24}|\\PC{0,40}") {
        let scopes = parse_scope(&s);
        let mut expected: Vec<&str> = Vec::new();
        for t in s.split(' ').filter(|t| !t.is_empty()) {
            if !expected.contains(&t) {
                expected.push(t);
            }
        }
        prop_assert_eq!(scopes, expected);
    }

    /// Escaped text has no markup characters or controls left, and decodes back
    /// to the input (controls as spaces).
    #[test]
    fn escaped_html_is_inert_and_faithful(s in "[<>&\"'a\\x00-\\x1f\\x7f\\u{85}]{0,20}|\\PC{0,40}") {
        let e = html_escape(&s);
        prop_assert!(!e.contains(['<', '>', '"', '\'']));
        prop_assert!(!e.chars().any(char::is_control));
        let decoded = e
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        let expected: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        prop_assert_eq!(decoded, expected);
    }

    /// PKCE: a valid verifier matches its own S256 challenge and no other; an
    /// invalid verifier matches nothing, not even its own hash.
    #[test]
    fn pkce_matches_only_valid_verifiers_and_their_hash(
        v in "[A-Za-z0-9._~-]{43,128}|[A-Za-z0-9._~ +/=\\PC-]{0,140}",
        other in "[A-Za-z0-9_-]{43}",
    ) {
        let own = B64.encode(Sha256::digest(v.as_bytes()));
        prop_assert!(is_s256_challenge(&own));
        let valid = (43..=128).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        prop_assert_eq!(pkce_s256_matches(&v, &own), valid);
        prop_assert_eq!(pkce_s256_matches(&v, &other), valid && other == own);
    }

    /// Forms: what a client encodes is what the server reads; a repeated
    /// parameter is refused; nothing panics.
    #[test]
    fn forms_round_trip_and_refuse_repeats(
        pairs in proptest::collection::btree_map(form_text(), form_text(), 0..6),
        dup in any::<prop::sample::Index>(),
        raw in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = crate::auth::parse_form(&raw);
        let mut enc = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            enc.append_pair(k, v);
        }
        let body = enc.finish();
        let parsed = crate::auth::parse_form(body.as_bytes()).expect("no repeats");
        prop_assert_eq!(parsed.len(), pairs.len());
        for (k, v) in &pairs {
            prop_assert_eq!(parsed.get(k), Some(v));
        }
        if !pairs.is_empty() {
            let (k, _) = pairs.iter().nth(dup.index(pairs.len())).expect("in range");
            let repeated = format!(
                "{body}&{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair(k, "again")
                    .finish()
            );
            prop_assert!(crate::auth::parse_form(repeated.as_bytes()).is_err());
        }
    }

}

proptest! {
    #![proptest_config(config(128))]

    /// Client metadata (registration body or metadata document): accepted
    /// metadata has 1 to 20 redirect URIs that each pass the redirect rules,
    /// and a display name without control characters, at most 100 of them.
    #[test]
    fn accepted_client_metadata_is_clean(
        uris in proptest::option::of(proptest::collection::vec(any_uri(), 0..23)),
        name in proptest::option::of("[a-z \\x00-\\x1f\\u{202e}]{0,120}|\\PC{0,200}"),
        method in proptest::option::of(prop_oneof![
            Just("none".to_owned()), Just("client_secret_post".to_owned()), "[a-z_]{0,12}"
        ]),
        grants in proptest::option::of(proptest::collection::vec(prop_oneof![
            Just("authorization_code".to_owned()), Just("refresh_token".to_owned()),
            Just("implicit".to_owned()), "[a-z_]{0,10}"
        ], 0..3)),
    ) {
        let body = serde_json::json!({
            "redirect_uris": uris,
            "client_name": name,
            "token_endpoint_auth_method": method,
            "grant_types": grants,
        });
        let m: ClientMetadata = serde_json::from_value(body).expect("the shape is right");
        if let Ok((name, uris)) = validate_metadata(&m) {
            prop_assert!((1..=20).contains(&uris.len()));
            for u in &uris {
                prop_assert!(check_redirect_uri(u).is_ok());
            }
            if let Some(n) = name {
                prop_assert!(n.chars().count() <= 100);
                prop_assert!(!n.chars().any(char::is_control));
                prop_assert!(!n.trim().is_empty());
            }
            if let Some(g) = &m.grant_types {
                prop_assert!(g.iter().all(|g| g == "authorization_code" || g == "refresh_token"));
            }
        }
    }

    /// A metadata-document client id is an https URL with a host, a path, no
    /// user info, fragment or dot segments; and a document is never accepted
    /// for another URL than its own.
    #[test]
    fn metadata_client_ids_are_plain_https_urls(u in any_uri(), other in any_uri()) {
        if let Ok(url) = cimd::check_url(&u) {
            prop_assert_eq!(url.scheme(), "https");
            prop_assert!(url.host().is_some());
            prop_assert!(url.username().is_empty() && url.password().is_none());
            prop_assert!(url.fragment().is_none());
            prop_assert!(url.path() != "/");
        }
        let doc = serde_json::json!({
            "client_id": other,
            "redirect_uris": ["https://app.example/cb"],
        });
        let parsed = cimd::parse_document(&u, doc.to_string().as_bytes());
        if let Ok(c) = parsed {
            prop_assert_eq!(&u, &other);
            prop_assert_eq!(&c.client_id, &u);
        }
        let _ = cimd::parse_document(&u, other.as_bytes());
    }
}
