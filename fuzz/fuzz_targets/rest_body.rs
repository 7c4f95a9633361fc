#![no_main]
#![deny(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mooyaho_signaling::api::fuzzing::fuzz_rest_body(data));
