//! Replays the structured `worker_ops` fuzz inputs — crashes kept in
//! `fuzz/regressions/worker_ops/` and the committed seeds in `fuzz/corpus/worker_ops/` — decoded
//! exactly as libFuzzer's `fuzz_target!` decodes them. Needs the `arbitrary` feature:
//! `cargo test -p sfu-core --features arbitrary --test fuzz_regressions` (the test command runs it).

use std::path::Path;
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use sfu_core::fuzzing::{Op, worker_ops};

#[test]
fn worker_ops_inputs_replay_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["regressions/worker_ops", "corpus/worker_ops"] {
        let mut inputs: Vec<_> = std::fs::read_dir(fuzz.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        inputs.sort();
        for input in inputs.iter().take(2000) {
            // A running `scripts/fuzz.sh --grow` may remove a file between listing and reading.
            let Ok(data) = std::fs::read(input) else {
                continue;
            };
            let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(&data)) else {
                continue;
            };
            worker_ops(Instant::now(), &ops);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no worker_ops corpus under fuzz/");
}
