#![no_main]
#![deny(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mooyaho_media::fuzz_media_worker(data));
