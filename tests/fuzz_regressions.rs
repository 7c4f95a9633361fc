//! Replays, through the fuzz target bodies, every input kept in `fuzz/regressions/<target>/`
//! (crashes found by `scripts/fuzz.sh`, minimised) and the committed seed corpora in
//! `fuzz/corpus/<target>/`, so a fixed crash stays fixed in the normal test suite even where
//! cargo-fuzz is not installed. `worker_ops` (structured input) is replayed by sfu-core's own
//! `fuzz_regressions` test, built with its `arbitrary` feature.

use std::path::{Path, PathBuf};
use std::time::Instant;

type Body = fn(&[u8]);

/// Every byte-input target and its body: the same functions `fuzz/fuzz_targets/*.rs` wrap.
fn targets() -> Vec<(&'static str, Body)> {
    vec![
        ("rtp_packet", sfu_core::fuzzing::rtp_packet),
        ("rtcp_compound", |d| {
            sfu_core::fuzzing::rtcp_compound(Instant::now(), d)
        }),
        ("rtp_extensions", |d| {
            sfu_core::fuzzing::rtp_extensions(Instant::now(), d);
        }),
        ("sdp_offer", mooyaho_media::sdp::fuzz_sdp),
        ("srtp_unprotect", mooyaho_net::srtp_fast::fuzz_srtp),
        ("stun_binding", mooyaho_net::stun::fuzz_stun),
        ("media_worker", mooyaho_media::fuzz_media_worker),
        ("dtls_record", mooyaho_net::dtls::fuzz_dtls),
        ("control_frame", mooyaho_control::fuzz_frame),
        (
            "ws_client_message",
            mooyaho_signaling::protocol::fuzz_client_frame,
        ),
        ("rest_body", mooyaho_signaling::api::fuzzing::fuzz_rest_body),
    ]
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_fuzz_target_is_replayed() {
    let listed: Vec<&str> = targets().iter().map(|(name, _)| *name).collect();
    for file in files(&fuzz_dir().join("fuzz_targets")) {
        let name = file.file_stem().unwrap().to_str().unwrap().to_owned();
        assert!(
            listed.contains(&name.as_str()) || name == "worker_ops",
            "fuzz target {name} has no replay entry here"
        );
    }
}

#[test]
fn kept_crashes_and_seed_corpora_replay_cleanly() {
    let mut replayed = 0;
    for (target, body) in targets() {
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        // Seeds are bounded per target so the debug-build replay stays a few seconds.
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        for input in regressions.iter().chain(seeds.iter().take(3000)) {
            // A running `scripts/fuzz.sh --grow` may remove a file between listing and reading.
            let Ok(data) = std::fs::read(input) else {
                continue;
            };
            body(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no committed corpus found under fuzz/");
}
