//! Fuzzes the SST index block decoder.
//! The body and its checks: `tessera_tests::fuzz::sst_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::sst_index(data));
