use super::*;

fn obs<'a>(
    target: &'a str,
    subject: Option<&'a str>,
    outcome: &'a str,
    ms: u64,
) -> Observation<'a> {
    Observation {
        kind: "tool",
        plugin: "template",
        target,
        subject,
        outcome,
        limit: (outcome == "failed").then_some("fuel"),
        denials: u32::from(outcome == "tool_error"),
        duration: Duration::from_millis(ms),
    }
}

#[test]
fn usage_and_performance_count_every_outcome() {
    let m = Metrics::in_memory();
    for i in 0..98 {
        m.observe(&obs(
            "greet",
            Some(if i % 2 == 0 { "ana" } else { "bo" }),
            "ok",
            1,
        ));
    }
    m.observe(&obs("greet", Some("ana"), "failed", 400));
    m.observe(&obs("greet", Some("bo"), "cancelled", 2));
    m.observe(&obs("add", None, "tool_error", 3));

    let r = m.report(Window::Hour).unwrap();
    let greet = &r.performance[0];
    assert_eq!((greet.target.as_str(), greet.calls), ("greet", 100));
    assert_eq!((greet.errors, greet.limit_hits, greet.cancelled), (1, 1, 1));
    assert!((0.8..=1.25).contains(&greet.p50_ms), "p50 {}", greet.p50_ms);
    assert!(
        greet.p99_ms >= 1.0 && greet.p99_ms <= 2.5,
        "p99 {}",
        greet.p99_ms
    );
    assert_eq!(greet.max_ms, 400.0);
    let add = &r.performance[1];
    assert_eq!(
        (add.target.as_str(), add.calls, add.errors, add.denials),
        ("add", 1, 1, 1)
    );

    let ana = r
        .usage
        .iter()
        .find(|u| u.subject.as_deref() == Some("ana"))
        .unwrap();
    assert_eq!((ana.calls, ana.errors), (50, 1));
    let anonymous = r.usage.iter().find(|u| u.subject.is_none()).unwrap();
    assert_eq!(anonymous.target, "add");
    assert!(r.data_since_ms.unwrap() >= r.since_ms);
}

#[test]
fn flushed_buckets_survive_a_restart_and_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::open(dir.path()).unwrap();
    m.observe(&obs("greet", Some("ana"), "ok", 5));
    m.flush().unwrap();
    m.observe(&obs("greet", Some("ana"), "ok", 7));
    // Pending and flushed counts are read together.
    assert_eq!(m.report(Window::Day).unwrap().usage[0].calls, 2);
    m.flush().unwrap();
    drop(m);

    let m = Metrics::open(dir.path()).unwrap();
    let r = m.report(Window::Month).unwrap();
    assert_eq!(r.usage[0].calls, 2);
    assert_eq!(r.performance[0].max_ms, 7.0);
    let mode = std::fs::metadata(dir.path().join("metrics.db")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn buckets_past_retention_are_dropped_and_windows_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::open(dir.path()).unwrap();
    let now = now_secs();
    let old = |age: u64| Key {
        bucket: bucket_of(now - age as i64),
        kind: "tool".into(),
        plugin: "p".into(),
        target: format!("t{age}"),
        subject: String::new(),
    };
    let one = Counts {
        calls: 1,
        ..Default::default()
    };
    let mut pending = HashMap::new();
    pending.insert(old(2 * 3600), one.clone());
    pending.insert(old(3 * 24 * 3600), one.clone());
    pending.insert(old(31 * 24 * 3600), one.clone());
    m.inner.store.lock().unwrap().merge(&pending, 0).unwrap();
    m.flush().unwrap();

    let targets = |w| -> Vec<String> {
        let mut t: Vec<String> = m
            .report(w)
            .unwrap()
            .performance
            .into_iter()
            .map(|p| p.target)
            .collect();
        t.sort();
        t
    };
    assert!(targets(Window::Hour).is_empty());
    assert_eq!(targets(Window::Day), ["t7200"]);
    assert_eq!(targets(Window::Week), ["t259200", "t7200"]);
    assert_eq!(targets(Window::Month), ["t259200", "t7200"]);
    // The window above hides a 31-day-old bucket whether or not it was
    // pruned: count the rows on disk (issue 23.3).
    let rows: i64 = rusqlite::Connection::open(dir.path().join("metrics.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM op_buckets WHERE target = 't2678400'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0, "31 days old is pruned");
    let kept: i64 = rusqlite::Connection::open(dir.path().join("metrics.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM op_buckets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 2, "the younger buckets stay");
}

#[test]
fn histogram_quantiles_stay_within_a_bucket() {
    let mut h = Histogram::default();
    for us in 1..=10_000u64 {
        h.record(us * 10); // 10 µs .. 100 ms, uniform
    }
    for (q, exact) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
        let got = h.quantile(q, 100_000);
        assert!((got / exact - 1.0).abs() < 0.2, "q{q}: {got} vs {exact}");
    }
    assert_eq!(h.quantile(1.0, 100_000), 100_000.0);
    let back = Histogram::from_text(&h.to_text()).unwrap();
    assert_eq!(back, h);
    assert_eq!(Histogram::from_text("1,x"), None);
    assert_eq!(Histogram::default().quantile(0.5, 0), 0.0);
}
