//! Test plugin: guests that misbehave, for the host's isolation and limit tests.

use std::hint::black_box;

use stockade_sdk::prelude::*;

fn panic(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    panic!("boom")
}

fn unreachable(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn spin(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn alloc_bomb(_: NoArgs, _: &Call) -> Result<Output, ToolError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![1u8; 1 << 20]));
        black_box(&hoard);
    }
}

stockade_sdk::plugin! {
    description: "Test plugin whose tools panic, trap, spin forever or exhaust memory",
    tools: [
        Tool::new("panic", "Panics with the message `boom`", panic),
        Tool::new("unreachable", "Executes a WebAssembly `unreachable` instruction", unreachable),
        Tool::new("spin", "Loops forever", spin),
        Tool::new("alloc_bomb", "Allocates memory until it runs out", alloc_bomb),
    ],
}
