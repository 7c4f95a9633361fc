#!/usr/bin/env bash
# Same-run before/after: the SFU of two revisions under the same load, interleaved (A B A B …)
# so drift on this shared machine hits both alike. Each revision's `mooyaho` is built in a git
# worktree ($COMPARE_DIR/before and /after, checked out at the revision each time, so a rerun
# rebuilds only what changed; release, one target dir per role: cargo names a workspace
# member's artifacts by its path inside the workspace, so two checkouts sharing one target dir
# overwrite each other's crates and a build can link the other revision's); every run is a fresh
# `mooyaho dev --workers 1` pinned to CPU 0, driven by the AFTER revision's load generator
# pinned to CPU 1 (one generator for both, so only the server differs).
#
#   benches/compare.sh BEFORE AFTER                  fanout 1×250 and audio 2×500, 3 rounds
#   REPEATS=5 DURATION=10 benches/compare.sh b4bfbc5 HEAD
#   benches/compare.sh BEFORE AFTER audio            one of: fanout audio
#
# Reports: benches/results/compare/<rev>-<scenario>-r<N>.json; prints, per scenario and
# revision, the median (min–max) of out-packets per SFU CPU-second, loss and latency p99, and
# AFTER/BEFORE. Paste that table into BENCHMARKS.md with the commands.
set -euo pipefail

(($# >= 2)) || { sed -n '2,14p' "$0"; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
before=$(git rev-parse --short "$1")
after=$(git rev-parse --short "$2")
shift 2
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(fanout audio)
repeats=${REPEATS:-3}
duration=${DURATION:-8}
compare_dir=${COMPARE_DIR:-$root/target/compare}
target_root=${COMPARE_TARGET_DIR:-$compare_dir/target}
out=benches/results/compare
mkdir -p "$out" "$compare_dir/bin"

build() {
    local rev=$1 tree="$compare_dir/$2"
    # A revision's binary never changes: built once, kept in $compare_dir/bin.
    if [[ -x "$compare_dir/bin/mooyaho-$rev" ]]; then
        echo "== $rev: built before ($compare_dir/bin/mooyaho-$rev)"
        return
    fi
    if [[ -d "$tree" ]]; then
        git -C "$tree" checkout --quiet --detach "$rev"
    else
        git worktree add --detach "$tree" "$rev" >/dev/null
    fi
    echo "== building $rev"
    (cd "$tree" && CARGO_TARGET_DIR="$target_root/$2" cargo build --release --bin mooyaho --quiet)
    cp "$target_root/$2/release/mooyaho" "$compare_dir/bin/mooyaho-$rev"
}
build "$before" before
build "$after" after
generator="$compare_dir/bin/mooyaho-$after"

# shellcheck source=benches/lib.sh
source benches/lib.sh
port=18700

# One run: `run <rev> <scenario> <repeat>`.
run() {
    local rev=$1 scenario=$2 repeat=$3 args
    case "$scenario" in
    fanout) args=(--scenario fanout --subscribers 250 --pps 500 --size 1200 --join-rate 200) ;;
    audio) args=(--scenario audio --publishers 2 --subscribers 500 --join-rate 200) ;;
    *) echo "compare.sh: unknown scenario $scenario (fanout, audio)" >&2; exit 2 ;;
    esac
    stop_server
    port=$((port + 1))
    start_dev "$compare_dir/bin/mooyaho-$rev" "$port" "$rev-$scenario-$repeat"
    local report="$out/$rev-$scenario-r$repeat.json"
    echo "== $scenario $rev ($repeat/$repeats)"
    if ! taskset -c 1 "$generator" loadgen --url "http://127.0.0.1:$port" --api-key "$key" \
        --sfu-pid "$server_pid" --duration "$duration" --report "$report" --quiet "${args[@]}"; then
        rm -f "$report"
        echo "!! $scenario against $rev failed; stopping" >&2
        exit 1
    fi
    stop_server
}

for scenario in "${scenarios[@]}"; do
    rm -f "$out/$before-$scenario"-r*.json "$out/$after-$scenario"-r*.json
    for ((i = 1; i <= repeats; i++)); do
        run "$before" "$scenario" "$i"
        run "$after" "$scenario" "$i"
    done
done

python3 - "$out" "$before" "$after" "${scenarios[@]}" <<'PY'
import json, pathlib, statistics, sys
out, before, after, scenarios = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

def figures(rev, scenario):
    reports = [json.loads(p.read_text()) for p in sorted(out.glob(f"{rev}-{scenario}-r*.json"))]
    pick = lambda f: [f(r) for r in reports if f(r) is not None]
    return (pick(lambda r: r.get("outPacketsPerSfuCpuSecond")), pick(lambda r: r["lossPercent"]),
            pick(lambda r: r["latencyMs"]["p99"]))

def spread(values, digits=0):
    if not values:
        return "–"
    m = statistics.median(values)
    return f"{m:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"

print("| scenario | revision | out per SFU CPU-s | loss % | p99 ms |")
print("|---|---|---|---|---|")
for scenario in scenarios:
    medians = {}
    for rev in (before, after):
        per_cpu, loss, p99 = figures(rev, scenario)
        medians[rev] = statistics.median(per_cpu) if per_cpu else None
        print(f"| {scenario} | {rev} | {spread(per_cpu)} | {spread(loss, 2)} | {spread(p99, 2)} |")
    if medians[before] and medians[after]:
        print(f"| {scenario} | {after}/{before} | **{medians[after] / medians[before]:.3f}×** | | |")
PY
