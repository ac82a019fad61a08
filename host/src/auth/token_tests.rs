use super::*;

fn family(subject: &str, scope: &str) -> Family {
    Family {
        id: "f".into(),
        client_id: "c".into(),
        subject: subject.into(),
        scope: scope.into(),
        resource: "http://h/mcp".into(),
        created_at: 0,
    }
}

/// alice may hold `mcp` only; `mcp` and `admin` exist.
fn credentials() -> (tempfile::TempDir, Credentials) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let hash = super::super::users::hash_password("alice's long password").unwrap();
    std::fs::write(
        &path,
        format!("[[user]]\nname = \"alice\"\npassword_hash = '{hash}'\nscopes = [\"mcp\"]\n"),
    )
    .unwrap();
    let all = vec!["mcp".to_owned(), "admin".to_owned()];
    let c = Credentials::load(None, Some(&path), &all, false).unwrap();
    (dir, c)
}

#[test]
fn a_refresh_issues_what_the_grant_and_the_user_allow_now() {
    let (_d, c) = credentials();
    let granted = family("alice", "mcp admin");
    // `admin` was granted, but alice no longer holds it: left out.
    assert_eq!(refresh_scope(&granted, None, &c), Ok("mcp".into()));
    assert_eq!(refresh_scope(&granted, Some(""), &c), Ok("mcp".into()));
    assert_eq!(
        refresh_scope(&granted, Some("admin"), &c),
        Err(RefreshBlocked::ScopesWithdrawn)
    );
    let narrow = family("alice", "mcp");
    assert_eq!(
        refresh_scope(&narrow, Some("mcp admin"), &c),
        Err(RefreshBlocked::Wider("admin".into()))
    );
    assert_eq!(
        refresh_scope(&family("bob", "mcp"), None, &c),
        Err(RefreshBlocked::SubjectGone)
    );
    // No operator password and no auto-approve: the operator is gone too.
    assert_eq!(
        refresh_scope(&family("operator", "mcp"), None, &c),
        Err(RefreshBlocked::SubjectGone)
    );
}
