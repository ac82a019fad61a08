use super::*;
use wasmtime::component::Component;

#[test]
fn failures_read_well() {
    assert_eq!(
        CallFailure::Timeout(Duration::from_secs(10)).to_string(),
        "timed out after 10 s (the operator's `limits.timeout_ms`); ask for less work or try again"
    );
    assert_eq!(
        CallFailure::Memory(64).to_string(),
        "memory limit 64 MiB exceeded (the operator's `limits.memory_mib`); ask for less data at once"
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

/// A component of `n` core instances of one module with a 1-page memory that
/// exports `grow`; each instance's `grow` is lifted as `grow-<i>`.
fn many_memories_component(n: usize) -> String {
    let mut wat = String::from(
        "(component\n (core module $m (memory 1) (func (export \"grow\") (param i32) (result i32) local.get 0 memory.grow))\n",
    );
    for i in 0..n {
        wat.push_str(&format!(" (core instance $i{i} (instantiate $m))\n"));
        wat.push_str(&format!(
            " (func (export \"grow-{i}\") (param \"pages\" u32) (result s32) (canon lift (core func $i{i} \"grow\")))\n"
        ));
    }
    wat.push(')');
    wat
}

fn test_limits(memory_mib: u32) -> Limits {
    Limits {
        memory_mib,
        ..Limits::default()
    }
}

/// Issue 11.5: the memory limit is the total of every linear memory of the
/// call, not a cap per memory: six core instances may not take 6 × 60 MiB.
#[tokio::test]
async fn the_memory_limit_is_per_call_not_per_memory() {
    let runtime = Runtime::new().unwrap();
    let component = Component::new(runtime.engine(), many_memories_component(6)).unwrap();
    let pre = runtime.linker.instantiate_pre(&component).unwrap();
    let limits = test_limits(64);
    let mut store = runtime.store(CallContext::internal("multi"), &limits);
    let instance = pre.instantiate_async(&mut store).await.unwrap();
    let pages_60_mib = 60 * 16;
    let grow0 = instance
        .get_typed_func::<(u32,), (i32,)>(&mut store, "grow-0")
        .unwrap();
    let (old,) = grow0.call_async(&mut store, (pages_60_mib,)).await.unwrap();
    assert_eq!(old, 1, "the first memory grows to 61 MiB");
    let grow1 = instance
        .get_typed_func::<(u32,), (i32,)>(&mut store, "grow-1")
        .unwrap();
    let e = grow1
        .call_async(&mut store, (pages_60_mib,))
        .await
        .expect_err("a second 60 MiB memory is over the 64 MiB budget");
    assert_eq!(store.data().limiter.hit, Some(LimitHit::Memory));
    assert_eq!(classify(&e, &store, &limits), CallFailure::Memory(64));
    assert!(store.data().limiter.memory_used() <= 64 << 20);
}

/// Issue 11.5: one component may hold only a small share of the instance pool.
#[tokio::test]
async fn a_component_may_not_take_the_whole_pool() {
    let runtime = Runtime::new().unwrap();
    let limits = test_limits(64);
    let small = Component::new(
        runtime.engine(),
        many_memories_component(MAX_MEMORIES_PER_COMPONENT as usize),
    )
    .unwrap();
    let pre = runtime.linker.instantiate_pre(&small).unwrap();
    let mut store = runtime.store(CallContext::internal("ok"), &limits);
    assert!(pre.instantiate_async(&mut store).await.is_ok());
    // Refused when compiled, so such a plugin never loads.
    let e = Component::new(
        runtime.engine(),
        many_memories_component(MAX_MEMORIES_PER_COMPONENT as usize + 1),
    )
    .expect_err("refused");
    assert!(
        format!("{e:#}").contains("exceeds the configured maximum"),
        "{e:#}"
    );
}

/// Issue 11.5: one plugin running its maximum of calls, each instance as large
/// as a component may be, leaves room in the pool for every other plugin.
#[tokio::test]
async fn one_plugin_at_its_limits_cannot_drain_the_pool() {
    let runtime = Runtime::new().unwrap();
    let limits = test_limits(64);
    let mut wat = String::from(
        "(component\n (core module $m (memory 1))\n (core module $e (func (export \"f\")))\n",
    );
    for i in 0..MAX_MEMORIES_PER_COMPONENT {
        wat.push_str(&format!(" (core instance $m{i} (instantiate $m))\n"));
    }
    for i in MAX_MEMORIES_PER_COMPONENT..MAX_CORE_INSTANCES_PER_COMPONENT {
        wat.push_str(&format!(" (core instance $e{i} (instantiate $e))\n"));
    }
    wat.push(')');
    let greedy = Component::new(runtime.engine(), wat).unwrap();
    let greedy = runtime.linker.instantiate_pre(&greedy).unwrap();
    // The most one plugin may run at once, all held alive.
    let mut held = Vec::new();
    for _ in 0..crate::config::MAX_CONCURRENT {
        let permit = runtime
            .live_instance(Duration::from_secs(1))
            .await
            .expect("a live-instance permit");
        let mut store = runtime.store(CallContext::internal("greedy"), &limits);
        greedy.instantiate_async(&mut store).await.unwrap();
        held.push((store, permit));
    }
    // Another plugin still gets an instance.
    let other = Component::new(runtime.engine(), many_memories_component(1)).unwrap();
    let other = runtime.linker.instantiate_pre(&other).unwrap();
    let _permit = runtime
        .live_instance(Duration::from_secs(1))
        .await
        .expect("room for another plugin");
    let mut store = runtime.store(CallContext::internal("other"), &limits);
    other.instantiate_async(&mut store).await.unwrap();
}
