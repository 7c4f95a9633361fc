#![no_main]
#![deny(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mooyaho_net::stun::fuzz_stun(data));
