use super::*;

#[test]
fn forms_are_single_use() {
    let p = PendingForms::<u32>::default();
    let csrf = p.insert("10.0.0.1", 7);
    assert_eq!(p.take(&csrf), Some(7));
    assert_eq!(p.take(&csrf), None);
    assert_eq!(p.take("forged"), None);
    assert!(p.is_empty());
}

#[test]
fn one_address_only_evicts_its_own_forms() {
    let p = PendingForms::<u32>::with_limits(100, 3);
    let victim = p.insert("10.0.0.2", 0);
    let flood: Vec<String> = (1..=50).map(|i| p.insert("10.0.0.1", i)).collect();
    assert_eq!(p.len(), 4, "three of the flooder's and the victim's");
    assert_eq!(p.take(&flood[0]), None, "the flooder's oldest went");
    assert_eq!(p.take(&flood[49]), Some(50));
    assert_eq!(p.take(&victim), Some(0));
}

#[test]
fn a_full_table_evicts_from_the_busiest_address() {
    let p = PendingForms::<u32>::with_limits(4, 3);
    let a: Vec<String> = (0..3).map(|i| p.insert("a", i)).collect();
    let b = p.insert("b", 10);
    // Full: the next form (from a third address) costs `a` its oldest form.
    let c = p.insert("c", 20);
    assert_eq!(p.len(), 4);
    assert_eq!(p.take(&a[0]), None);
    assert_eq!(p.take(&a[1]), Some(1));
    assert_eq!(p.take(&b), Some(10));
    assert_eq!(p.take(&c), Some(20));
}

#[test]
fn sweeping_drops_only_expired_forms() {
    // The clock is the sweep's argument: no dependence on how long ago the
    // machine booted (issue 23.4).
    let p = PendingForms::<u32>::default();
    let fresh = p.insert("a", 1);
    let stale = p.insert("a", 2);
    let start = p.table.lock().unwrap().forms[&stale].created;
    p.table
        .lock()
        .unwrap()
        .forms
        .get_mut(&fresh)
        .unwrap()
        .created = start + FORM_TTL;
    // Just before the stale form expires nothing goes; just after, it alone.
    assert_eq!(
        p.table
            .lock()
            .unwrap()
            .sweep(start + FORM_TTL - Duration::from_secs(1)),
        0
    );
    assert_eq!(p.table.lock().unwrap().sweep(start + FORM_TTL), 1);
    assert_eq!(p.take(&stale), None);
    assert_eq!(p.take(&fresh), Some(1));
    assert!(p.table.lock().unwrap().by_addr.is_empty());
}
