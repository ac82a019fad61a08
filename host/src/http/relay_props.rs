//! Property tests of [`reply_id`], which picks client replies out of `/mcp`
//! POST bodies to relay them between hosts: it must agree with rmcp, which
//! reads the same bytes on the host that waits for the reply.

use proptest::prelude::*;
use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage};
use serde_json::Value;

use super::reply_id;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn id() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "3",
            "-3",
            "0",
            "-0",
            "3.0",
            "3e0",
            "30e-1",
            "1.5",
            "9223372036854775807",
            "9223372036854775808",
            "1e400",
            "\"a\"",
            "\"\\u0061\"",
            "\"\"",
            "null",
            "true",
            "[1]",
            "{}",
        ][..],
    )
}

/// A JSON-RPC message as text: members from a small set, any subset, any
/// order, sometimes repeated.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let member = prop_oneof![
        id().prop_map(|i| format!("\"id\":{i}")),
        Just("\"jsonrpc\":\"2.0\"".to_owned()),
        Just("\"result\":{}".to_owned()),
        Just("\"result\":{\"action\":\"accept\"}".to_owned()),
        Just("\"error\":{\"code\":-1,\"message\":\"no\"}".to_owned()),
        Just("\"method\":\"tools/call\"".to_owned()),
        Just("\"method\":\"notifications/initialized\"".to_owned()),
        Just("\"params\":{\"name\":\"x\"}".to_owned()),
        Just("\"r\\u0065sult\":{}".to_owned()),
    ];
    prop_oneof![
        8 => proptest::collection::vec(member, 0..6)
            .prop_map(|ms| format!("{{{}}}", ms.join(",")).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..32),
        1 => Just(b"[{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}]".to_vec()),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    /// A request or notification is never taken for a reply; a reply rmcp
    /// reads is relayed under the id text the waiting host recorded
    /// (`serde_json::to_string` of rmcp's id, `mcp/link.rs`); and whatever is
    /// relayed is a JSON object with `result` or `error`, an id and no `method`.
    #[test]
    fn replies_are_what_rmcp_takes_for_replies(body in body()) {
        let ours = reply_id(&body);
        match serde_json::from_slice::<ClientJsonRpcMessage>(&body) {
            Ok(JsonRpcMessage::Request(_) | JsonRpcMessage::Notification(_)) => {
                prop_assert_eq!(ours.clone(), None, "{}", String::from_utf8_lossy(&body));
            }
            Ok(JsonRpcMessage::Response(r)) => {
                let recorded = serde_json::to_string(&r.id).expect("serializes");
                prop_assert_eq!(ours.clone(), Some(recorded), "{}", String::from_utf8_lossy(&body));
            }
            Ok(JsonRpcMessage::Error(e)) => {
                if let Some(id) = &e.id {
                    let recorded = serde_json::to_string(id).expect("serializes");
                    prop_assert_eq!(ours.clone(), Some(recorded), "{}", String::from_utf8_lossy(&body));
                }
            }
            Err(_) => {}
        }
        if ours.is_some() {
            let v: Value = serde_json::from_slice(&body).expect("relayed, so JSON");
            let m = v.as_object().expect("an object");
            prop_assert!(!m.contains_key("method"));
            prop_assert!(m.contains_key("result") || m.contains_key("error"));
        }
    }
}
