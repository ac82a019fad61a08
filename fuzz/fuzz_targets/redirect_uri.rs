//! `cargo +nightly fuzz run redirect_uri`: see ../README.md and `stockade::fuzzing::redirect_uri`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockade::fuzzing::redirect_uri(data));
