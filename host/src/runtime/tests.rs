use super::*;

#[test]
fn failures_read_well() {
    assert_eq!(
        CallFailure::Timeout(Duration::from_secs(10)).to_string(),
        "timed out after 10 s"
    );
    assert_eq!(
        CallFailure::Memory(64).to_string(),
        "memory limit 64 MiB exceeded"
    );
    assert_eq!(CallFailure::FuelExhausted(5).limit_name(), Some("fuel"));
    assert_eq!(CallFailure::Trap("x".into()).limit_name(), None);
}

#[test]
fn panic_message_is_extracted() {
    let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom\nnote: run with RUST_BACKTRACE=1\n";
    assert_eq!(
        panic_message(stderr).as_deref(),
        Some("panicked at src/lib.rs:10:5:: boom")
    );
    assert_eq!(panic_message("nothing here"), None);
}

#[test]
fn core_modules_are_told_apart() {
    assert!(wasmparser_is_core_module(b"\0asm\x01\0\0\0"));
    assert!(!wasmparser_is_core_module(b"\0asm\x0d\0\x01\0"));
}

#[tokio::test]
async fn gate_bounds_queue() {
    let gate = Arc::new(Gate::new(1, 1));
    let first = gate.enter().await.unwrap();
    let g = gate.clone();
    let waiter = tokio::spawn(async move { g.enter().await.map(drop).is_ok() });
    while gate.waiting.load(Ordering::Acquire) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(gate.enter().await.is_err(), "a queue of one is full");
    drop(first);
    assert!(waiter.await.unwrap(), "the queued caller gets the slot");
}
