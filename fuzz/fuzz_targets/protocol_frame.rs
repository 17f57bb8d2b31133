//! Fuzzes a byte stream of protocol frames: headers, then each body through the decoder its flags and opcode select.
//! The body and its checks: `tessera_tests::fuzz::protocol_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::protocol_frame(data));
