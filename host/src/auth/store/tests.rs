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
        code_challenge: "x".repeat(43),
        resource: "http://h/mcp".into(),
        scope: "mcp".into(),
        subject: "operator".into(),
        expires_at,
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
    let Rotate::Rotated(f) = s
        .rotate_refresh("r1", "r2", "c1", 901, 5_000)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (f.id.as_str(), f.subject.as_str(), f.scope.as_str()),
        ("fam", "operator", "mcp")
    );
    let Rotate::Rotated(_) = s
        .rotate_refresh("r2", "r3", "c1", 902, 5_000)
        .await
        .unwrap()
    else {
        panic!()
    };
    // Another client presenting r3 changes nothing.
    assert!(matches!(
        s.rotate_refresh("r3", "rx", "c2", 903, 5_000)
            .await
            .unwrap(),
        Rotate::WrongClient(_)
    ));
    // Reuse of the spent r1 revokes everything, including the live r3.
    assert!(matches!(
        s.rotate_refresh("r1", "r9", "c1", 904, 5_000)
            .await
            .unwrap(),
        Rotate::Reused(_)
    ));
    assert!(!s.family_active("fam").await.unwrap());
    assert!(matches!(
        s.rotate_refresh("r3", "r4", "c1", 905, 5_000)
            .await
            .unwrap(),
        Rotate::Revoked(_)
    ));
    assert_eq!(
        s.rotate_refresh("zzz", "r5", "c1", 905, 5_000)
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
        s.rotate_refresh("r1", "r2", "c1", 951, 5_000)
            .await
            .unwrap(),
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
