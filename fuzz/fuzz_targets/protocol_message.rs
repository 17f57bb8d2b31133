//! Fuzzes one protocol message body; the first byte picks the request, reply or error decoder and the opcode.
//! The body and its checks: `tessera_tests::fuzz::protocol_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_tests::fuzz::protocol_message(data));
