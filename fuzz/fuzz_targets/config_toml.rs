//! `cargo +nightly fuzz run config_toml`: see ../README.md and `stockade::fuzzing::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockade::fuzzing::config_toml(data));
