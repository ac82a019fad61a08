//! Entry points of the `cargo fuzz` targets in `fuzz/` (see `fuzz/README.md`).
//! Each runs the parsers of one kind of untrusted input on arbitrary bytes and
//! panics when an invariant breaks; the property tests (`*_props.rs`) check
//! the same invariants on generated inputs in every test run. Not an API.

use std::sync::Arc;

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::Value;
use stockade_sdk::uri_template;

use crate::auth::{Principal, bearer, cimd, register, rules};

/// Redirect URIs, origins, scopes, forms and client metadata (the OAuth
/// endpoints). The input is read as text, as a form and as JSON.
pub fn redirect_uri(data: &[u8]) {
    let _ = crate::auth::parse_form(data);
    if let Ok(m) = serde_json::from_slice::<register::ClientMetadata>(data)
        && let Ok((name, uris)) = register::validate_metadata(&m)
    {
        assert!((1..=20).contains(&uris.len()));
        assert!(uris.iter().all(|u| rules::check_redirect_uri(u).is_ok()));
        assert!(name.is_none_or(|n| !n.chars().any(char::is_control)));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cimd::check_url(text);
    let _ = rules::parse_scope(text);
    assert!(!rules::html_escape(text).contains(['<', '>', '"', '\'']));
    if let Some(o) = rules::normalize_origin(text) {
        assert_eq!(rules::normalize_origin(&o).as_deref(), Some(o.as_str()));
    }
    let _ = rules::redirect_host(text);
    if let Some(src) = rules::csp_source(text) {
        assert!(!src.contains([' ', ';', ',']));
    }
    if let Ok(url) = rules::check_redirect_uri(text) {
        assert!(url.fragment().is_none() && url.username().is_empty());
        let back = rules::with_query(text, &[("code", "c"), ("state", text)]);
        let back = url::Url::parse(&back).expect("the redirect back parses");
        assert_eq!(back.host_str(), url.host_str());
        assert_eq!(back.port(), url.port());
        assert_eq!(back.path(), url.path());
        assert!(back.fragment().is_none());
        if back.scheme() == "http" {
            let host = back.host().expect("http has a host");
            assert!(
                crate::config::is_loopback_host(&host),
                "plain http to {host}"
            );
        }
    }
}

/// URI templates: the first line is the template, the rest the URI.
pub fn uri_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, uri) = text.split_once('\n').unwrap_or((text, ""));
    if let Some(values) = uri_template::match_uri(template, uri) {
        assert!(uri.len() <= uri_template::MAX_URI_LEN);
        // The values and the template's literal text rebuild the URI.
        let mut rebuilt = String::new();
        let mut rest = template;
        let mut values = values.into_iter();
        while let Some(open) = rest.find('{') {
            rebuilt.push_str(&rest[..open]);
            rebuilt.push_str(&values.next().expect("a value per variable"));
            rest = &rest[open + rest[open..].find('}').expect("closed") + 1..];
        }
        rebuilt.push_str(rest);
        assert_eq!(rebuilt, uri);
        // A plain URI is a template without variables.
        assert!(uri.contains(['{', '}']) || uri_template::overlap(template, uri));
    }
    assert_eq!(
        uri_template::overlap(template, uri),
        uri_template::overlap(uri, template)
    );
}

/// SQL statements as both engines read them before the database does.
pub fn sql_statement(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::capabilities::sql::fuzz_statement(text);
    }
}

/// The config file, and the pieces of it that carry patterns.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = crate::config::Config::from_toml(text) {
        assert!(!e.to_string().trim().is_empty());
    }
    if let Ok(p) = crate::config::HostPattern::parse(text) {
        let _ = p.matches(text, 443);
    }
    let _ = crate::config::forbidden_env_name(text);
}

/// Argument and environment patterns of `exec`: the first line is the
/// pattern, the rest the value.
pub fn exec_pattern(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, value) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(re) = crate::config::whole_match_regex(pattern) {
        let alone = regex::Regex::new(pattern).expect("a pattern is a regex on its own");
        if re.is_match(value) {
            assert!(alone.is_match(value));
        }
    }
}

/// `/mcp` POST bodies: the gate's scope check against what rmcp would run,
/// and the relay's reading of replies.
pub fn jsonrpc_body(data: &[u8]) {
    let scopes: bearer::ScopeResolver =
        Arc::new(|tool: &str| (tool == "secret").then(|| "admin".to_owned()));
    let principal = Principal {
        subject: "fuzz".into(),
        client_id: None,
        scopes: vec!["mcp".into()],
        audience: None,
    };
    let gate = serde_json::from_slice::<Value>(data)
        .ok()
        .map(|m| bearer::missing_scope(&m, &principal, &scopes));
    let relayed = crate::http::fuzz_reply_id(data);
    match serde_json::from_slice::<ClientJsonRpcMessage>(data) {
        Ok(JsonRpcMessage::Request(r)) => {
            assert_eq!(relayed, None, "a request taken for a reply");
            if let ClientRequest::CallToolRequest(call) = &r.request
                && call.params.name == "secret"
            {
                assert_eq!(
                    gate,
                    Some(Some(("secret".into(), "admin".into()))),
                    "rmcp runs a call the gate let through"
                );
            }
        }
        Ok(JsonRpcMessage::Notification(_)) => assert_eq!(relayed, None),
        Ok(JsonRpcMessage::Response(r)) => {
            assert_eq!(relayed, serde_json::to_string(&r.id).ok());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    /// Every entry point on a few seeds (the cases the property tests found
    /// among them): they build, and hold on these.
    #[test]
    fn entry_points_hold_on_seeds() {
        let seeds: &[&[u8]] = &[
            b"",
            b"https://app.example/cb",
            b"http://127.0.0.1:3000/callback?x=1",
            b"{\"redirect_uris\":[\"http://localhost/cb\"],\"client_name\":\"a\\u0000b\"}",
            b"a://{x}{y}\na://.\xe2\x82\xac",
            b"/* /* */ SELECT */ INSERT INTO t VALUES (1)",
            b"SELECT 1 AS \xc3\xa9$$;$$",
            b"[sql.shop]\npostgres = \"postgres://reader:Pw1@localhost/shop\n",
            b")(a\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":-0,\"result\":{}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"secret\"}}",
            b"\xff\xfe",
        ];
        for s in seeds {
            super::redirect_uri(s);
            super::uri_template(s);
            super::sql_statement(s);
            super::config_toml(s);
            super::exec_pattern(s);
            super::jsonrpc_body(s);
        }
    }
}
