#![no_main]
#![deny(unsafe_code)]

use sfu_core::fuzzing::{Op, worker_ops};

libfuzzer_sys::fuzz_target!(|ops: Vec<Op>| worker_ops(std::time::Instant::now(), &ops));
