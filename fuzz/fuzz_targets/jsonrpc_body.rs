//! `cargo +nightly fuzz run jsonrpc_body`: see ../README.md and `stockade::fuzzing::jsonrpc_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockade::fuzzing::jsonrpc_body(data));
