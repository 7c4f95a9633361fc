#![no_main]
#![deny(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfu_core::fuzzing::rtp_packet(data));
