//! Every behaviour test runs on both engines: on SQLite in its own
//! `#[tokio::test]`, and on PostgreSQL in `postgres_passes_every_store_test`,
//! which starts one throwaway cluster (Debian's packages, as
//! `tests/common/postgres.rs` explains) and gives each test a fresh database.

use super::*;

#[path = "../../../../tests/common/postgres.rs"]
#[allow(dead_code)]
mod pg;

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

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("stockade.db"))
        .await
        .unwrap();
    (dir, s)
}

#[tokio::test]
async fn clients_round_trip_and_survive_reopen() {
    let (dir, s) = sqlite().await;
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

async fn codes_are_single_use_and_replay_revokes_the_family(s: &dyn AuthStore) {
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    assert_eq!(
        s.redeem_code("h1", "fam1", 900).await.unwrap(),
        Redeem::Fresh(grant(1_000))
    );
    assert!(s.family_active("fam1", "operator", "c1").await.unwrap());
    match s.redeem_code("h1", "fam2", 901).await.unwrap() {
        Redeem::Replayed { family, client_id } => {
            assert_eq!(family.as_deref(), Some("fam1"));
            assert_eq!(client_id, "c1");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !s.family_active("fam1", "operator", "c1").await.unwrap(),
        "replay revokes what the code issued"
    );
    assert!(
        !s.family_active("fam2", "operator", "c1").await.unwrap(),
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

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(s: &dyn AuthStore) {
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
    assert!(!s.family_active("fam", "operator", "c1").await.unwrap());
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

async fn expired_refresh_and_explicit_revocation(s: &dyn AuthStore) {
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

async fn concurrent_redemptions_issue_one_family(s: &dyn AuthStore) {
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

async fn a_declined_rotation_leaves_the_token_unspent(s: &dyn AuthStore) {
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
    assert!(s.family_active("fam", "operator", "c1").await.unwrap());
}

async fn a_family_ends_at_its_absolute_lifetime(s: &dyn AuthStore) {
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

async fn families_are_revoked_by_subject_or_client(s: &dyn AuthStore) {
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
    assert!(
        !s.family_active("f1", "alice", "c1").await.unwrap()
            && !s.family_active("f2", "alice", "c2").await.unwrap()
    );
    assert!(s.family_active("f3", "bob", "c1").await.unwrap());
    // A family is active only for its own user and client.
    assert!(!s.family_active("f3", "alice", "c1").await.unwrap());
    assert!(!s.family_active("f3", "bob", "c3").await.unwrap());
    // Already revoked families are not counted again.
    assert_eq!(
        s.revoke_families(FamilyFilter::Client("c1"), "t", 902)
            .await
            .unwrap(),
        1
    );
    assert!(!s.family_active("f3", "bob", "c1").await.unwrap());
    assert!(s.family_active("f4", "bob", "c3").await.unwrap());
}

async fn purge_deletes_dead_rows_only(s: &dyn AuthStore) {
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
    assert!(!s.family_active("old", "operator", "c1").await.unwrap());
    assert!(s.family_active("live", "operator", "c1").await.unwrap());
    assert!(matches!(
        s.rotate_refresh(&rot("r-live", "r2", "c1", 200_001))
            .await
            .unwrap(),
        Rotate::Rotated(_)
    ));
}

async fn clients_round_trip(s: &dyn AuthStore) {
    let c = Client {
        client_id: "c1".into(),
        client_name: None,
        redirect_uris: vec![
            "http://127.0.0.1:9/cb".into(),
            "https://b.example/cb".into(),
        ],
        token_endpoint_auth_method: "client_secret_post".into(),
        secret_hash: Some("ab".repeat(32)),
        created_at: 9,
    };
    s.insert_client(&c).await.unwrap();
    assert_eq!(s.client("c1").await.unwrap(), Some(c));
    assert!(
        s.insert_client(&Client {
            client_name: Some("again".into()),
            ..s.client("c1").await.unwrap().unwrap()
        })
        .await
        .is_err(),
        "ids are unique"
    );
}

async fn concurrent_rotations_spend_the_token_once(s: &dyn AuthStore) {
    s.insert_code("h1", &grant(1_000)).await.unwrap();
    s.redeem_code("h1", "fam", 900).await.unwrap();
    s.add_refresh("fam", "r1", 5_000).await.unwrap();
    let (ra, rb) = (rot("r1", "ra", "c1", 901), rot("r1", "rb", "c1", 901));
    let (a, b) = tokio::join!(s.rotate_refresh(&ra), s.rotate_refresh(&rb));
    let outcomes = [a.unwrap(), b.unwrap()];
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, Rotate::Rotated(_)))
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, Rotate::Reused(_)))
        .count();
    assert_eq!((rotated, reused), (1, 1), "{outcomes:?}");
    assert!(
        !s.family_active("fam", "operator", "c1").await.unwrap(),
        "reuse revokes the family"
    );
}

async fn signing_keys_are_added_and_retired(s: &dyn AuthStore) {
    assert!(s.signing_keys().await.unwrap().is_empty());
    let k = |kid: &str, at: i64| StoredKey {
        kid: kid.into(),
        pem: format!("pem-{kid}"),
        created_at: at,
        retire_at: None,
    };
    s.add_signing_key(&k("a", 10), None).await.unwrap();
    s.add_signing_key(&k("b", 20), Some(1_000)).await.unwrap();
    // Adding the same key again changes nothing.
    s.add_signing_key(&k("b", 30), None).await.unwrap();
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].kid.as_str(), keys[0].retire_at),
        ("a", Some(1_000))
    );
    assert_eq!(
        (keys[1].kid.as_str(), keys[1].retire_at, keys[1].created_at),
        ("b", None, 20)
    );
    // A later rotation never postpones an earlier retirement.
    s.add_signing_key(&k("c", 40), Some(5_000)).await.unwrap();
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys[0].retire_at, Some(1_000));
    assert_eq!(keys[1].retire_at, Some(5_000));
    // Purged a day after retiring.
    s.purge(1_000 + 86_401).await.unwrap();
    let kids: Vec<String> = s
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["b", "c"]);
}

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_d, s) = super::sqlite().await;
                    super::$name(&s).await;
                }
            )*
        }
    };
}

/// Calls `$m!` with every test that runs on both engines.
macro_rules! every_store_test {
    ($m:ident) => {
        $m! {
            codes_are_single_use_and_replay_revokes_the_family,
            refresh_tokens_rotate_and_reuse_revokes_the_family,
            expired_refresh_and_explicit_revocation,
            concurrent_redemptions_issue_one_family,
            a_declined_rotation_leaves_the_token_unspent,
            a_family_ends_at_its_absolute_lifetime,
            families_are_revoked_by_subject_or_client,
            purge_deletes_dead_rows_only,
            concurrent_rotations_spend_the_token_once,
            signing_keys_are_added_and_retired,
            clients_round_trip,
        }
    };
}

every_store_test!(on_sqlite);

/// The PostgreSQL engine, through every test above and the shared state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_every_store_test() {
    let server = pg::Postgres::start();
    server.run(
        "postgres",
        "CREATE ROLE stockade LOGIN PASSWORD 'store-test-pw'",
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "store-test-pw\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-store-secret-of-forty-characters-long!!\n").unwrap();
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        let db = format!("t{n}");
        server.run("postgres", &format!("CREATE DATABASE {db} OWNER stockade"));
        crate::config::StoreSettings {
            url: Some(format!(
                "postgres://stockade@127.0.0.1:{}/{db}",
                server.port
            )),
            password_file: Some(pw.clone()),
            secret_file: Some(secret.clone()),
            ..Default::default()
        }
    };
    macro_rules! run {
        ($($name:ident),* $(,)?) => {
            $(
                let s = PostgresStore::connect(&fresh()).await.unwrap();
                $name(&s).await;
            )*
        };
    }
    every_store_test!(run);

    // Two hosts migrating one database at once: one applies, one waits.
    let settings = fresh();
    let (a, b) = tokio::join!(
        PostgresStore::connect(&settings),
        PostgresStore::connect(&settings)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let version = server.run(
        settings.url.as_ref().unwrap().rsplit('/').next().unwrap(),
        "SELECT count(*) FROM stockade_schema",
    );
    assert_eq!(version.trim(), "4", "every migration applied once");

    // Shared state, seen by both.
    assert_eq!(a.hit("mcp:alice", 60).await.unwrap(), 1);
    assert_eq!(b.hit("mcp:alice", 60).await.unwrap(), 2);
    assert_eq!(b.hit("mcp:alice", 120).await.unwrap(), 1, "a new window");
    assert_eq!(a.hit("mcp:bob", 60).await.unwrap(), 1);

    a.put_form("f1", "1.2.3.4", "{\"x\":1}", 100, 600, 2)
        .await
        .unwrap();
    assert_eq!(
        b.take_form("f1", 101).await.unwrap().as_deref(),
        Some("{\"x\":1}")
    );
    assert_eq!(a.take_form("f1", 101).await.unwrap(), None, "single use");
    a.put_form("old", "9.9.9.9", "{}", 100, 600, 2)
        .await
        .unwrap();
    assert_eq!(b.take_form("old", 700).await.unwrap(), None, "expired");
    for (i, f) in ["p1", "p2", "p3"].iter().enumerate() {
        a.put_form(f, "5.5.5.5", "{}", 200 + i as i64, 600, 2)
            .await
            .unwrap();
    }
    assert_eq!(
        b.take_form("p1", 203).await.unwrap(),
        None,
        "an address keeps its newest two"
    );
    assert!(b.take_form("p3", 203).await.unwrap().is_some());

    let lf = |count, first_at| LoginFailures {
        count,
        first_at,
        locked_until: None,
    };
    assert_eq!(a.login_failures("1.1.1.1").await.unwrap(), None);
    let bump = |old: Option<LoginFailures>| Some(lf(old.map_or(0, |f| f.count) + 1, 5));
    let (x, y) = tokio::join!(
        a.update_login_failures("1.1.1.1", &bump),
        b.update_login_failures("1.1.1.1", &bump)
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(
        b.login_failures("1.1.1.1").await.unwrap(),
        Some(lf(2, 5)),
        "serialized, none lost"
    );
    a.update_login_failures("1.1.1.1", &|_| None).await.unwrap();
    assert_eq!(b.login_failures("1.1.1.1").await.unwrap(), None);

    // rmcp saves a handshake before the gate binds the owner: the owner is
    // filled in once and never overwritten.
    a.save_session_state("s1", "{\"init\":true}", 10)
        .await
        .unwrap();
    assert_eq!(
        b.session_owner("s1").await.unwrap().unwrap().subject,
        "",
        "nobody's yet"
    );
    let alice = SessionOwner {
        subject: "alice".into(),
        client_id: Some("c".into()),
    };
    let mallory = SessionOwner {
        subject: "mallory".into(),
        client_id: None,
    };
    a.bind_session("s1", &alice, "host-a", 10).await.unwrap();
    b.bind_session("s1", &mallory, "host-b", 11).await.unwrap();
    assert_eq!(b.session_owner("s1").await.unwrap(), Some(alice.clone()));
    assert_eq!(
        b.load_session_state("s1").await.unwrap().as_deref(),
        Some("{\"init\":true}")
    );
    // A session in use is not purged as abandoned (issue 18.6).
    b.touch_session("s1", 200_000).await.unwrap();
    a.save_session_state("s-idle", "{}", 10).await.unwrap();
    a.purge(200_000).await.unwrap();
    assert!(a.session_owner("s1").await.unwrap().is_some(), "used: kept");
    assert_eq!(
        a.session_owner("s-idle").await.unwrap(),
        None,
        "unseen for a day: purged"
    );
    b.end_session("s1").await.unwrap();
    assert_eq!(a.session_owner("s1").await.unwrap(), None);

    // A revocation on one host is heard by the other's change counter.
    let before = b.change_generation().expect("listening");
    a.revoke_family("nope", "t", 1).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.change_generation() == Some(before) {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Issue 18.1: signing keys are stored sealed (nothing a reader of the
    // database or its traffic could sign with), and open on every host.
    let db = settings
        .url
        .as_ref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let key = crate::auth::keys::SigningKey::generate_pem();
    let kid = "kid-sealed";
    a.add_signing_key(
        &StoredKey {
            kid: kid.into(),
            pem: key.clone(),
            created_at: 5,
            retire_at: None,
        },
        None,
    )
    .await
    .unwrap();
    let stored = server.run(&db, "SELECT pem FROM signing_keys");
    assert!(stored.starts_with("sealed-v1:"), "{stored}");
    assert!(!stored.contains("PRIVATE KEY"), "{stored}");
    let read = b.signing_keys().await.unwrap();
    assert_eq!(
        (read[0].kid.as_str(), read[0].pem.as_str()),
        (kid, key.as_str())
    );
    // A key someone put there in plaintext is not used.
    server.run(
        &db,
        "INSERT INTO signing_keys (kid, pem, created_at) VALUES ('planted', '-----BEGIN PRIVATE KEY-----', 6)",
    );
    let read = b.signing_keys().await.unwrap();
    assert_eq!(read.len(), 1, "the planted key is ignored");
    // A host with another secret cannot open them.
    let other_secret = dir.path().join("other-secret");
    std::fs::write(&other_secret, "another-secret-of-forty-characters-long!!\n").unwrap();
    let other = PostgresStore::connect(&crate::config::StoreSettings {
        secret_file: Some(other_secret),
        ..settings.clone()
    })
    .await
    .unwrap();
    let e = other.signing_keys().await.unwrap_err().to_string();
    assert!(e.contains("same secret"), "{e}");

    // Issue 18.6: events are authenticated: a NOTIFY from any role that may
    // connect is ignored, the hosts' own are heard.
    let mut heard = b.events();
    server.run(&db, "NOTIFY stockade_events, 'host-x tools'");
    server.run(&db, "NOTIFY stockade_events, '1 00 host-x tools'");
    a.publish("host-a", "tools").await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
        .await
        .expect("the signed event arrives")
        .unwrap();
    assert_eq!(
        got,
        ("host-a".to_owned(), "tools".to_owned()),
        "spoofed events come first and are dropped"
    );

    // Issue 18.3: only a reply to a request another host waits for is relayed,
    // once, to that host.
    assert_eq!(
        b.relay_reply("host-b", "s9", "7", "{}").await.unwrap(),
        Relay::NotPending
    );
    a.expect_reply("s9", "7", "host-a", 100).await.unwrap();
    assert_eq!(
        a.relay_reply("host-a", "s9", "7", "{}").await.unwrap(),
        Relay::Local,
        "the waiting host takes it itself"
    );
    let mut heard = a.events();
    assert_eq!(
        b.relay_reply("host-b", "s9", "7", "{\"id\":7}")
            .await
            .unwrap(),
        Relay::Relayed
    );
    assert_eq!(
        b.relay_reply("host-b", "s9", "7", "{\"id\":7}")
            .await
            .unwrap(),
        Relay::NotPending,
        "a second copy finds nothing pending"
    );
    let (from, what) = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, "host-b");
    let id: i64 = what.strip_prefix("reply ").unwrap().parse().unwrap();
    assert_eq!(
        b.take_relayed_reply(id, "host-b").await.unwrap(),
        None,
        "not b's"
    );
    assert_eq!(
        a.take_relayed_reply(id, "host-a").await.unwrap(),
        Some(("s9".to_owned(), "{\"id\":7}".to_owned()))
    );
    assert_eq!(
        a.take_relayed_reply(id, "host-a").await.unwrap(),
        None,
        "delivered once"
    );
    a.expect_reply("s9", "8", "host-a", 100).await.unwrap();
    a.reply_settled("s9", "8").await.unwrap();
    assert_eq!(
        b.relay_reply("host-b", "s9", "8", "{}").await.unwrap(),
        Relay::NotPending,
        "settled requests take no replies"
    );
}
