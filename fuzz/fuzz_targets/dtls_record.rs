#![no_main]
#![deny(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mooyaho_net::dtls::fuzz_dtls(data));
