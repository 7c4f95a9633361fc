#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a time budget each and reports executions.
#
#   scripts/fuzz.sh                   every target, 30 s each (what the test command runs)
#   scripts/fuzz.sh -t 3600 stun_binding sdp_offer
#   scripts/fuzz.sh -t 600 --grow     add what the runs discover to the committed corpora
#   scripts/fuzz.sh -n 10000000 -t 7200   stop each target at 10 M executions (or 2 h)
#   scripts/fuzz.sh --cmin            minimise the committed corpora (fuzz/corpus/<target>):
#                                     libFuzzer's merge, then the smallest inputs up to 300 kB;
#                                     hand-named seeds (not a 40-hex libFuzzer name) always stay
#
# Each run starts from the committed seeds in fuzz/corpus/<target> and, unless --grow, writes
# new inputs to a scratch directory so the tree stays clean. A crash is minimised with
# `cargo fuzz tmin` into fuzz/regressions/<target>/ (replayed by `cargo test`, see
# tests/fuzz_regressions.rs) and makes the script fail. cargo-fuzz needs nightly flags; on the
# stable toolchain RUSTC_BOOTSTRAP=1 unlocks them. No sanitizer: the fuzzed code has no
# `unsafe`, and without ASan the same budget buys ~3× the executions. Overflow checks and debug
# assertions stay on (cargo-fuzz's default profile).
set -euo pipefail

seconds=30
runs_limit=-1
grow=0
cmin=0
targets=()
while (($#)); do
    case "$1" in
    -t | --time) seconds="$2"; shift 2 ;;
    -n | --runs) runs_limit="$2"; shift 2 ;;
    --grow) grow=1; shift ;;
    --cmin) cmin=1; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
flags=(-s none)
echo "== building fuzz targets"
cargo fuzz build "${flags[@]}" 2>&1 | grep -vE '^\s+(Compiling|Blocking)' || true
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi

# Per-target libFuzzer options: structured or slow targets need longer inputs or a bigger timeout.
options() {
    case "$1" in
    worker_ops | media_worker) echo "-max_len=4096" ;;
    sdp_offer | rest_body | ws_client_message | control_frame) echo "-max_len=8192" ;;
    dtls_record) echo "-max_len=2048" ;;
    *) echo "-max_len=1500" ;;
    esac
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
budget=300000

# The committed corpus of one target: the smallest set with the same coverage, then its
# smallest inputs up to $budget bytes, plus every hand-written seed.
minimise() {
    local target=$1 seeds="corpus/$1" merged="$scratch/merged-$1" kept="$scratch/kept-$1"
    mkdir -p "$merged" "$kept"
    cargo fuzz run "${flags[@]}" "$target" "$merged" "$seeds" -- -merge=1 $(options "$target") \
        >"$scratch/merge-$target.log" 2>&1 || { tail -n 20 "$scratch/merge-$target.log"; return 1; }
    find "$seeds" -type f -regextype posix-extended ! -regex '.*/[0-9a-f]{40}' -exec cp {} "$kept/" \;
    local total=0 size path
    while read -r size path; do
        ((total + size > budget)) && break
        cp "$path" "$kept/"
        total=$((total + size))
    done < <(find "$merged" -type f -printf '%s %p\n' | sort -n)
    rm -rf "$seeds"
    mv "$kept" "$seeds"
    echo "   $target: $(find "$seeds" -type f | wc -l) inputs, $(du -sb "$seeds" | cut -f1) bytes"
}
failed=()
printf '\n| target | seconds | executions | exec/s | corpus |\n|---|---|---|---|---|\n' >"$scratch/summary"
for target in "${targets[@]}"; do
    seeds="corpus/$target"
    mkdir -p "$seeds" "$scratch/$target" "$scratch/artifacts/$target"
    if ((cmin)); then
        echo "== minimising $seeds"
        minimise "$target" || failed+=("$target")
        continue
    fi
    if ((grow)); then dirs=("$seeds"); else dirs=("$scratch/$target" "$seeds"); fi
    echo "== $target for ${seconds}s"
    log="$scratch/$target.log"
    status=0
    started=$(date +%s)
    cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -runs="$runs_limit" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$scratch/artifacts/$target/" $(options "$target") >"$log" 2>&1 || status=$?
    runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    took=$(($(date +%s) - started))
    corpus=$(find "${dirs[@]}" -type f | wc -l)
    rate=$((runs / (took > 0 ? took : 1)))
    printf '| `%s` | %s | %s | %s | %s |\n' "$target" "$took" "$runs" "$rate" "$corpus" >>"$scratch/summary"
    if ((status != 0)); then
        tail -n 40 "$log"
        crash=$(find "$scratch/artifacts/$target" -type f | head -n 1)
        if [[ -n "$crash" ]]; then
            mkdir -p "regressions/$target"
            kept="regressions/$target/$(basename "$crash")"
            cargo fuzz tmin "${flags[@]}" "$target" "$crash" -- -runs=20000 >"$scratch/tmin.log" 2>&1 || true
            minimized=$(find "$scratch/artifacts/$target" -name 'minimized-from-*' | head -n 1)
            cp "${minimized:-$crash}" "$kept"
            echo "!! $target crashed: input kept as fuzz/$kept (commit it; cargo test replays it)"
        else
            echo "!! $target failed (exit $status) without a crash input; log above"
        fi
        failed+=("$target")
    else
        echo "   $runs executions, no crash"
    fi
done
if ((cmin == 0)); then cat "$scratch/summary"; fi
if ((${#failed[@]})); then
    echo "fuzz.sh: failures in ${failed[*]}" >&2
    exit 1
fi
