use super::*;

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("stockade.db"))
        .await
        .unwrap();
    (dir, s)
}

fn grant(expires_at: i64) -> CodeGrant {
    CodeGrant {
        client_id: "c1".into(),
        redirect_uri: "http://127.0.0.1:1/cb".into(),
        redirect_uri_given: true,
        code_challenge: "x".repeat(43),
        resource: "http://h/mcp".into(),
        scope: "mcp".into(),
        subject: "operator".into(),
        expires_at,
    }
}

fn yes(_: &Family) -> bool {
    true
}

fn no(_: &Family) -> bool {
    false
}

/// A rotation at `now`: successors live 4,100 s, families 1,000,000 s.
fn rot<'a>(old: &'a str, new: &'a str, client: &'a str, now: i64) -> Rotation<'a> {
    Rotation {
        old_hash: old,
        new_hash: new,
        client_id: client,
        now,
        ttl: 4_100,
        max_lifetime: 1_000_000,
        accept: &yes,
    }
}

#[tokio::test]
async fn clients_round_trip_and_survive_reopen() {
    let (dir, s) = store().await;
    let c = Client {
        client_id: "c1".into(),
        client_name: Some("Claude".into()),
        redirect_uris: vec!["https://a.example/cb".into()],
        token_endpoint_auth_method: "none".into(),
        secret_hash: None,
        created_at: 7,
    };
    s.insert_client(&c).await.unwrap();
    assert_eq!(s.client("c1").await.unwrap(), Some(c.clone()));
    assert_eq!(s.client("nope").await.unwrap(), None);
    drop(s);
    let again = SqliteStore::open(&dir.path().join("stockade.db"))
        .await
        .unwrap();
    assert_eq!(again.client("c1").await.unwrap(), Some(c));
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&again.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&again.pool)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous = FULL");
}

#[tokio::test]
async fn codes_are_single_use_and_replay_revokes_the_family() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    assert_eq!(
        s.redeem_code("h1", "fam1", 900).await.unwrap(),
        Redeem::Fresh(grant(1_000))
    );
    assert!(s.family_active("fam1").await.unwrap());
    match s.redeem_code("h1", "fam2", 901).await.unwrap() {
        Redeem::Replayed { family, client_id } => {
            assert_eq!(family.as_deref(), Some("fam1"));
            assert_eq!(client_id, "c1");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !s.family_active("fam1").await.unwrap(),
        "replay revokes what the code issued"
    );
    assert!(
        !s.family_active("fam2").await.unwrap(),
        "no family for the replay"
    );
    assert_eq!(
        s.redeem_code("nope", "f", 900).await.unwrap(),
        Redeem::Unknown
    );
    s.insert_code("h2", &grant(1_000)).await.unwrap();
    assert_eq!(
        s.redeem_code("h2", "f3", 1_000).await.unwrap(),
        Redeem::Expired
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    s.redeem_code("h1", "fam", 900).await.unwrap();
    s.add_refresh("fam", "r1", 5_000).await.unwrap();
    let Rotate::Rotated(f) = s.rotate_refresh(&rot("r1", "r2", "c1", 901)).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (f.id.as_str(), f.subject.as_str(), f.scope.as_str()),
        ("fam", "operator", "mcp")
    );
    let Rotate::Rotated(_) = s.rotate_refresh(&rot("r2", "r3", "c1", 902)).await.unwrap() else {
        panic!()
    };
    // Another client presenting r3 changes nothing.
    assert!(matches!(
        s.rotate_refresh(&rot("r3", "rx", "c2", 903)).await.unwrap(),
        Rotate::WrongClient(_)
    ));
    // Reuse of the spent r1 revokes everything, including the live r3.
    assert!(matches!(
        s.rotate_refresh(&rot("r1", "r9", "c1", 904)).await.unwrap(),
        Rotate::Reused(_)
    ));
    assert!(!s.family_active("fam").await.unwrap());
    assert!(matches!(
        s.rotate_refresh(&rot("r3", "r4", "c1", 905)).await.unwrap(),
        Rotate::Revoked(_)
    ));
    assert_eq!(
        s.rotate_refresh(&rot("zzz", "r5", "c1", 905))
            .await
            .unwrap(),
        Rotate::Unknown
    );
    assert_eq!(
        s.family_of_refresh("r3").await.unwrap().map(|f| f.id),
        Some("fam".into())
    );
}

#[tokio::test]
async fn expired_refresh_and_explicit_revocation() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    s.redeem_code("h1", "fam", 900).await.unwrap();
    s.add_refresh("fam", "r1", 950).await.unwrap();
    assert!(matches!(
        s.rotate_refresh(&rot("r1", "r2", "c1", 951)).await.unwrap(),
        Rotate::Expired(_)
    ));
    assert!(s.revoke_family("fam", "test", 952).await.unwrap());
    assert!(
        !s.revoke_family("fam", "test", 953).await.unwrap(),
        "already revoked"
    );
    s.purge(10_000_000).await.unwrap();
    assert_eq!(s.family_of_refresh("r1").await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_redemptions_issue_one_family() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    let (a, b) = tokio::join!(
        s.redeem_code("h1", "fa", 900),
        s.redeem_code("h1", "fb", 900)
    );
    let fresh = [a.unwrap(), b.unwrap()]
        .into_iter()
        .filter(|r| matches!(r, Redeem::Fresh(_)))
        .count();
    assert_eq!(fresh, 1);
}

#[tokio::test]
async fn a_declined_rotation_leaves_the_token_unspent() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    s.redeem_code("h1", "fam", 900).await.unwrap();
    s.add_refresh("fam", "r1", 5_000).await.unwrap();
    let declined = Rotation {
        accept: &no,
        ..rot("r1", "r2", "c1", 901)
    };
    assert!(matches!(
        s.rotate_refresh(&declined).await.unwrap(),
        Rotate::Declined(_)
    ));
    // Not spent, so no reuse: it still rotates, and the family lives.
    assert!(matches!(
        s.rotate_refresh(&rot("r1", "r2", "c1", 902)).await.unwrap(),
        Rotate::Rotated(_)
    ));
    assert!(s.family_active("fam").await.unwrap());
}

#[tokio::test]
async fn a_family_ends_at_its_absolute_lifetime() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    s.redeem_code("h1", "fam", 900).await.unwrap();
    s.add_refresh("fam", "r1", 5_000).await.unwrap();
    fn short<'a>(old: &'a str, new: &'a str, now: i64) -> Rotation<'a> {
        Rotation {
            max_lifetime: 2_000,
            ..rot(old, new, "c1", now)
        }
    }
    // Rotation keeps renewing the token, but never past created_at + 2,000.
    let Rotate::Rotated(f) = s.rotate_refresh(&short("r1", "r2", 1_000)).await.unwrap() else {
        panic!()
    };
    assert_eq!(f.created_at, 900);
    let Rotate::Rotated(_) = s.rotate_refresh(&short("r2", "r3", 2_800)).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        s.rotate_refresh(&short("r3", "r4", 2_900)).await.unwrap(),
        Rotate::Expired(_)
    ));
    // A token stored before the cap existed is refused by the family's age too.
    s.add_refresh("fam", "legacy", 1_000_000).await.unwrap();
    assert!(matches!(
        s.rotate_refresh(&short("legacy", "r5", 2_901))
            .await
            .unwrap(),
        Rotate::Expired(_)
    ));
}

#[tokio::test]
async fn families_are_revoked_by_subject_or_client() {
    let (_d, s) = store().await;
    for (code, fam, subject, client) in [
        ("h1", "f1", "alice", "c1"),
        ("h2", "f2", "alice", "c2"),
        ("h3", "f3", "bob", "c1"),
        ("h4", "f4", "bob", "c3"),
    ] {
        let g = CodeGrant {
            subject: subject.into(),
            client_id: client.into(),
            ..grant(1_000)
        };
        s.insert_code(code, &g).await.unwrap();
        s.redeem_code(code, fam, 900).await.unwrap();
    }
    assert_eq!(
        s.revoke_families(FamilyFilter::Subject("alice"), "t", 901)
            .await
            .unwrap(),
        2
    );
    assert!(!s.family_active("f1").await.unwrap() && !s.family_active("f2").await.unwrap());
    assert!(s.family_active("f3").await.unwrap());
    // Already revoked families are not counted again.
    assert_eq!(
        s.revoke_families(FamilyFilter::Client("c1"), "t", 902)
            .await
            .unwrap(),
        1
    );
    assert!(!s.family_active("f3").await.unwrap());
    assert!(s.family_active("f4").await.unwrap());
}

#[tokio::test]
async fn purge_deletes_dead_rows_only() {
    let (_d, s) = store().await;
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    s.redeem_code("h1", "old", 900).await.unwrap();
    s.add_refresh("old", "r-old", 2_000).await.unwrap();
    s.insert_code("h2", &grant(200_000)).await.unwrap();
    s.redeem_code("h2", "live", 199_000).await.unwrap();
    s.add_refresh("live", "r-live", 300_000).await.unwrap();
    // Within the day of grace nothing goes.
    assert_eq!(s.purge(87_000).await.unwrap(), 0);
    // Then: the old code, its refresh token and its family.
    assert_eq!(s.purge(200_000).await.unwrap(), 3);
    assert_eq!(s.family_of_refresh("r-old").await.unwrap(), None);
    assert!(!s.family_active("old").await.unwrap());
    assert!(s.family_active("live").await.unwrap());
    assert!(matches!(
        s.rotate_refresh(&rot("r-live", "r2", "c1", 200_001))
            .await
            .unwrap(),
        Rotate::Rotated(_)
    ));
}
