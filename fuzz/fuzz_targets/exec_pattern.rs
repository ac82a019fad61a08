//! `cargo +nightly fuzz run exec_pattern`: see ../README.md and `stockade::fuzzing::exec_pattern`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockade::fuzzing::exec_pattern(data));
