//! `cargo +nightly fuzz run uri_template`: see ../README.md and `stockade::fuzzing::uri_template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockade::fuzzing::uri_template(data));
