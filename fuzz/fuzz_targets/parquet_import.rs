//! Fuzzes `tessera import`'s Parquet reader on arbitrary (mostly malformed) files.
//! The body and its checks: `tessera_tests::fuzz::parquet_import`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::parquet_import(data));
