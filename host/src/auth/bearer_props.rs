//! Property tests of the gate's reading of JSON-RPC bodies: the scope check
//! ([`missing_scope`]) reads the body as a `serde_json::Value`; rmcp reads the
//! same bytes into its own types afterwards. Whatever rmcp would run as a
//! `tools/call` of a tool needing a scope the token lacks, the gate must have
//! refused, however the JSON is spelled (duplicate members, escapes, batches).

use std::sync::Arc;

use proptest::prelude::*;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::Value;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `secret` needs scope `admin`; every other tool needs nothing.
fn resolver() -> ScopeResolver {
    Arc::new(|tool: &str| (tool == "secret").then(|| "admin".to_owned()))
}

fn caller() -> Principal {
    Principal {
        subject: "alice".into(),
        client_id: None,
        scopes: vec!["mcp".into()],
        audience: None,
    }
}

/// A JSON string literal, sometimes spelled with escapes.
fn spelled(s: &'static str) -> impl Strategy<Value = String> {
    (any::<bool>(), any::<prop::sample::Index>()).prop_map(move |(escape, at)| {
        if escape && !s.is_empty() {
            // Escape one character as \uXXXX (and `/` as `\/`).
            let i = at.index(s.len());
            let c = s.as_bytes()[i] as char;
            let esc = if c == '/' {
                "\\/".to_owned()
            } else {
                format!("\\u{:04x}", c as u32)
            };
            format!("\"{}{}{}\"", &s[..i], esc, &s[i + 1..])
        } else {
            format!("\"{s}\"")
        }
    })
}

/// An object's text from members (duplicates allowed: JSON text may repeat a
/// key, and readers differ on which one wins).
fn object(members: Vec<(String, String)>) -> String {
    let inner: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

fn tool_name() -> impl Strategy<Value = String> {
    prop_oneof![
        spelled("secret"),
        spelled("free"),
        Just("\"SECRET\"".to_owned()),
        Just("\"secret \"".to_owned()),
        Just("5".to_owned()),
        Just("null".to_owned()),
    ]
}

fn params() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        (spelled("name"), tool_name()),
        (spelled("arguments"), Just("{}".to_owned())),
        (spelled("_meta"), Just("{\"progressToken\":1}".to_owned())),
        (Just("\"Name\"".to_owned()), tool_name()),
    ];
    prop_oneof![
        8 => proptest::collection::vec(member, 0..4).prop_map(object),
        1 => Just("null".to_owned()),
        1 => Just("[]".to_owned()),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => spelled("tools/call"),
        1 => spelled("tools/list"),
        1 => spelled("ping"),
        1 => Just("\"Tools/call\"".to_owned()),
        1 => Just("\"tools/call \"".to_owned()),
    ]
}

/// One JSON-RPC message as text.
fn message() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        3 => (spelled("method"), method()),
        3 => (spelled("params"), params()),
        2 => (spelled("id"), prop_oneof![Just("1".to_owned()), Just("\"a\"".to_owned())]),
        2 => (spelled("jsonrpc"), Just("\"2.0\"".to_owned())),
        1 => (spelled("result"), Just("{}".to_owned())),
    ];
    // Mostly well-formed requests, then members in any order and number.
    let request =
        (spelled("method"), method(), params(), any::<bool>()).prop_map(|(mk, m, p, dup)| {
            let mut members = vec![
                ("\"jsonrpc\"".to_owned(), "\"2.0\"".to_owned()),
                ("\"id\"".to_owned(), "7".to_owned()),
                (mk, m),
                ("\"params\"".to_owned(), p),
            ];
            if dup {
                members.push(("\"params\"".to_owned(), "{\"name\":\"free\"}".to_owned()));
            }
            object(members)
        });
    prop_oneof![
        2 => request,
        2 => proptest::collection::vec(member, 0..7).prop_map(object),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => message().prop_map(String::into_bytes),
        2 => proptest::collection::vec(message(), 0..3)
            .prop_map(|ms| format!("[{}]", ms.join(",")).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    /// What rmcp would run as a `tools/call` of `secret` (scope `admin`), the
    /// gate refuses for a token with only `mcp`.
    #[test]
    fn the_gate_refuses_every_call_rmcp_would_run_without_its_scope(body in body()) {
        let principal = caller();
        let scopes = resolver();
        let gate = serde_json::from_slice::<Value>(&body)
            .ok()
            .map(|m| missing_scope(&m, &principal, &scopes));
        if let Ok(JsonRpcMessage::Request(r)) = serde_json::from_slice::<ClientJsonRpcMessage>(&body)
            && let ClientRequest::CallToolRequest(call) = &r.request
            && call.params.name == "secret"
        {
            prop_assert_eq!(
                gate.clone(),
                Some(Some(("secret".to_owned(), "admin".to_owned()))),
                "rmcp runs `secret` from {}", String::from_utf8_lossy(&body)
            );
        }
        // And the gate never names a tool that does not need the scope.
        if let Some(Some((tool, scope))) = gate {
            prop_assert_eq!((tool.as_str(), scope.as_str()), ("secret", "admin"));
        }
    }

    /// A token holding the scope is never refused.
    #[test]
    fn a_token_with_the_scope_passes(body in body()) {
        let mut principal = caller();
        principal.scopes.push("admin".into());
        if let Ok(m) = serde_json::from_slice::<Value>(&body) {
            prop_assert_eq!(missing_scope(&m, &principal, &resolver()), None);
        }
    }
}
