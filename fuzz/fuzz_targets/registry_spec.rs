//! Fuzzes the registry spec parser, planner and apply, on TOML spec files.
//! The body and its checks: `tessera_tests::fuzz::registry_spec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::registry_spec(data));
