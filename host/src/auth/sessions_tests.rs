use super::*;

fn who(subject: &str, client: &str) -> Principal {
    Principal {
        subject: subject.into(),
        client_id: Some(client.into()),
        scopes: vec!["mcp".into()],
        audience: None,
    }
}

#[test]
fn a_session_belongs_to_its_subject_and_client() {
    let s = SessionBindings::default();
    s.bind("s1", &who("alice", "c1"));
    assert_eq!(s.check("s1", &who("alice", "c1")), SessionCheck::Owner);
    assert_eq!(s.check("s1", &who("bob", "c1")), SessionCheck::Foreign);
    assert_eq!(s.check("s1", &who("alice", "c2")), SessionCheck::Foreign);
    assert_eq!(s.check("s2", &who("alice", "c1")), SessionCheck::Unknown);
    s.unbind("s1");
    assert_eq!(s.check("s1", &who("alice", "c1")), SessionCheck::Unknown);
}

#[test]
fn the_table_is_bounded_and_evicts_the_least_recently_used() {
    let s = SessionBindings::with_capacity(2);
    let alice = who("alice", "c1");
    s.bind("old", &alice);
    s.bind("used", &alice);
    // "old" is used again, so "used" is now the least recently used.
    assert_eq!(s.check("old", &alice), SessionCheck::Owner);
    s.bind("new", &alice);
    assert_eq!(s.len(), 2);
    assert_eq!(s.check("used", &alice), SessionCheck::Unknown);
    assert_eq!(s.check("old", &alice), SessionCheck::Owner);
    assert_eq!(s.check("new", &alice), SessionCheck::Owner);
}
