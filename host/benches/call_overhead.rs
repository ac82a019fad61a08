//! Per-call overhead of running a plugin: instantiation alone, and a trivial tool
//! call through the runtime with and without the fuel and epoch limits.
//!
//! Run: `scripts/build-plugins --bundled-only && cargo bench -p stockade --bench call_overhead`
//! (results go in BENCHMARKS.md). Not a test: it asserts nothing about speed.

use std::time::{Duration, Instant};

use stockade::bindings::guest_tools::Caller;
use stockade::capabilities::CallContext;
use stockade::config::{Grants, Limits};
use stockade::runtime::{Op, OpOutput, Policy, Runtime, RuntimeOptions};

const WARMUP: usize = 500;
const ITERS: usize = 20_000;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
    let mean = v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64;
    (mean, us(v[v.len() / 2]), us(v[v.len() * 99 / 100]))
}

async fn measure(label: &str, options: RuntimeOptions, wasm: &[u8]) {
    let runtime = Runtime::with_options(options).expect("runtime");
    let limits = Limits::default();
    let code = runtime
        .load("template", wasm, "", limits)
        .await
        .expect("load");
    let policy = Policy::new(
        limits,
        Grants::default(),
        Default::default(),
        None,
        runtime.gate("bench", &limits),
    );
    let caller = Caller {
        subject: None,
        client_id: None,
    };
    let args = r#"{"name":"bench"}"#;

    let mut call_times = Vec::with_capacity(ITERS);
    for i in 0..WARMUP + ITERS {
        let op = Op::CallTool {
            tool: "greet",
            arguments: args,
            caller: &caller,
        };
        let start = Instant::now();
        let report = runtime
            .invoke(&code, &policy, op, CallContext::internal("template"))
            .await;
        let elapsed = start.elapsed();
        assert!(
            matches!(report.outcome, Ok(OpOutput::Tool(Ok(_)))),
            "call failed"
        );
        if i >= WARMUP {
            call_times.push(elapsed);
        }
    }
    let mut inst_times = Vec::with_capacity(ITERS);
    for i in 0..WARMUP + ITERS {
        let start = Instant::now();
        runtime
            .instantiate_only(&code, &limits)
            .await
            .expect("instantiate");
        if i >= WARMUP {
            inst_times.push(start.elapsed());
        }
    }
    let (cm, c50, c99) = stats(call_times);
    let (im, i50, i99) = stats(inst_times);
    println!(
        "{label:<22} instantiate: mean {im:7.1} µs  p50 {i50:7.1}  p99 {i99:7.1} | greet call: mean {cm:7.1} µs  p50 {c50:7.1}  p99 {c99:7.1}"
    );
}

fn main() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/template.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build-plugins --bundled-only first",
            path.display()
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "{ITERS} sequential calls of template.greet after {WARMUP} warm-up calls, one thread"
        );
        measure(
            "fuel + epoch (default)",
            RuntimeOptions {
                fuel: true,
                epoch: true,
            },
            &wasm,
        )
        .await;
        measure(
            "epoch only",
            RuntimeOptions {
                fuel: false,
                epoch: true,
            },
            &wasm,
        )
        .await;
        measure(
            "fuel only",
            RuntimeOptions {
                fuel: true,
                epoch: false,
            },
            &wasm,
        )
        .await;
        measure(
            "no limits",
            RuntimeOptions {
                fuel: false,
                epoch: false,
            },
            &wasm,
        )
        .await;
    });
}
