#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mooyaho_signaling::protocol::fuzz_client_frame(data));
