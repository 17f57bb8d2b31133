//! Fuzzes WAL replay: the bytes as a WAL segment of an engine directory, then `Engine::open`.
//! The body and its checks: `tessera_tests::fuzz::wal_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::wal_replay(data));
