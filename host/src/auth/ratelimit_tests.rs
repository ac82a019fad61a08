use super::*;

#[test]
fn subject_limiter_counts_down_then_refuses() {
    let l = SubjectLimiter::new(NonZeroU32::new(3).unwrap());
    let d1 = l.check("alice");
    assert!(d1.allowed);
    assert_eq!(d1.remaining, 2);
    assert!(l.check("alice").allowed);
    let d3 = l.check("alice");
    assert!(d3.allowed);
    assert_eq!(d3.remaining, 0);
    let d4 = l.check("alice");
    assert!(!d4.allowed);
    assert!(d4.reset_secs >= 1 && d4.reset_secs <= 20, "{d4:?}");
    // Keys are independent.
    assert!(l.check("bob").allowed);

    let mut h = HeaderMap::new();
    d4.apply(&mut h);
    assert_eq!(h["ratelimit-policy"], "\"mcp\";q=3;w=60");
    assert!(
        h["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"mcp\";r=0;t=")
    );
    assert!(h.contains_key("retry-after"));
    let mut h = HeaderMap::new();
    d1.apply(&mut h);
    assert!(!h.contains_key("retry-after"));
}

#[test]
fn login_throttle_locks_out_with_growing_delays() {
    let t = LoginThrottle::default();
    let now = Instant::now();
    for _ in 0..FREE_FAILURES - 1 {
        assert_eq!(t.failed_at("1.2.3.4", now), None);
        assert_eq!(t.locked_at("1.2.3.4", now), None);
    }
    let first = t
        .failed_at("1.2.3.4", now)
        .expect("the fifth failure locks");
    assert_eq!(first, Duration::from_secs(30));
    assert!(
        t.locked_at("1.2.3.4", now + Duration::from_secs(10))
            .is_some()
    );
    assert_eq!(
        t.locked_at("5.6.7.8", now),
        None,
        "other addresses unaffected"
    );
    let later = now + Duration::from_secs(31);
    assert_eq!(t.locked_at("1.2.3.4", later), None);
    let second = t.failed_at("1.2.3.4", later).unwrap();
    assert_eq!(
        second,
        Duration::from_secs(60),
        "the next failure doubles the lockout"
    );
    let third = t
        .failed_at("1.2.3.4", later + Duration::from_secs(61))
        .unwrap();
    assert_eq!(third, Duration::from_secs(120));
    t.succeeded("1.2.3.4");
    assert_eq!(t.locked_at("1.2.3.4", later), None);
    assert_eq!(t.failed_at("1.2.3.4", later), None, "a success starts over");
}

#[test]
fn login_throttle_forgets_old_failures() {
    let t = LoginThrottle::default();
    let now = Instant::now();
    for _ in 0..FREE_FAILURES - 1 {
        t.failed_at("a", now);
    }
    assert_eq!(
        t.failed_at("a", now + WINDOW + Duration::from_secs(1)),
        None
    );
}

#[test]
fn login_throttle_sweep_keeps_only_what_still_matters() {
    let t = LoginThrottle::default();
    let now = Instant::now();
    t.failed_at("old", now);
    for _ in 0..FREE_FAILURES {
        t.failed_at("locked", now);
    }
    let later = now + WINDOW + Duration::from_secs(1);
    t.failed_at("recent", later);
    t.sweep_at(later);
    let map = t.by_addr.lock().unwrap();
    assert!(!map.contains_key("old"));
    assert!(map.contains_key("recent"));
    // Locked out at `now` for 30 s, and its window restarted then: gone too.
    assert!(!map.contains_key("locked"));
}
