use super::*;

#[test]
fn forms_refuse_repeated_parameters() {
    let f = parse_form(b"a=1&b=x%20y").unwrap();
    assert_eq!(f["b"], "x y");
    assert!(parse_form(b"code=1&code=2").is_err());
}

#[test]
fn random_tokens_are_long_and_distinct() {
    let a = random_token();
    assert_eq!(a.len(), 43);
    assert_ne!(a, random_token());
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn secrets_do_not_print() {
    let s = Secret::new("hunter2hunter2");
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[tokio::test]
async fn credentials_refuse_short_or_missing_passwords() {
    let scopes = vec!["mcp".to_owned()];
    let err = Credentials::load(Some(Secret::new("short").into()), None, &scopes, false)
        .err()
        .unwrap();
    assert!(err.contains("12"), "{err}");
    let err = Credentials::load(None, None, &scopes, false).err().unwrap();
    assert!(err.contains("STOCKADE_PASSWORD"), "{err}");
    let c = Credentials::load(
        Some(Secret::new("correct horse battery").into()),
        None,
        &scopes,
        false,
    )
    .unwrap();
    assert_eq!(
        c.verify("", "correct horse battery").await.unwrap().subject,
        "operator"
    );
    assert!(c.verify("", "correct horse batterY").await.is_none());
    assert!(c.verify("", "").await.is_none());
}

#[tokio::test]
async fn users_file_with_argon2_hashes_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let hash = users::hash_password("alice's long password").unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(
        &path,
        format!("[[user]]\nname = \"alice\"\npassword_hash = '{hash}'\nscopes = [\"mcp\"]\n"),
    )
    .unwrap();
    let scopes = vec!["mcp".to_owned(), "admin".to_owned()];
    let c = Credentials::load(None, Some(&path), &scopes, false).unwrap();
    assert!(c.has_users());
    let who = c.verify("alice", "alice's long password").await.unwrap();
    assert_eq!(who.subject, "alice");
    assert_eq!(who.allowed_scopes, vec!["mcp"]);
    assert!(c.verify("alice", "wrong password!!").await.is_none());
    assert!(c.verify("bob", "alice's long password").await.is_none());
    std::fs::write(
        &path,
        "[[user]]\nname = \"x\"\npassword_hash = \"nope\"\nscopes = [\"root\"]\n",
    )
    .unwrap();
    let err = Credentials::load(None, Some(&path), &scopes, false)
        .err()
        .unwrap();
    assert!(err.contains("PHC") && err.contains("root"), "{err}");
}
