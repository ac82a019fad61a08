//! `cargo +nightly fuzz run sql_statement`: see ../README.md and `stockade::fuzzing::sql_statement`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stockade::fuzzing::sql_statement(data));
