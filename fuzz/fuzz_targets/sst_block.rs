//! Fuzzes the SST data block decoder.
//! The body and its checks: `tessera_tests::fuzz::sst_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::sst_block(data));
