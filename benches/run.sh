#!/usr/bin/env bash
# The standard benchmark set behind BENCHMARKS.md: every scenario against `mooyaho dev` (one
# worker, pinned to CPU 0 with taskset) and the comparable ones against Janus (pinned the same
# way), with `mooyaho loadgen` pinned to CPU 1. Writes one JSON report per run into
# benches/results/, SVG charts into docs/bench/, and regenerates the generated part of
# BENCHMARKS.md (benches/render.py).
#
#   benches/run.sh              the standard set (~15 min)
#   benches/run.sh --quick      a few small runs (~3 min), e.g. to try the pipeline
#   benches/run.sh --no-janus   skip Janus
#   DURATION=20 benches/run.sh  longer measurement windows (default 8 s)
#   REPEATS=1 benches/run.sh    runs per configuration (default 3; the tables show the median
#                               and min–max; --quick runs each once)
#   benches/run.sh meeting      only the named scenarios (others' reports are kept)
#   benches/run.sh signaling    idle WebSocket sessions against `mooyaho server` (19,000)
#   benches/run.sh many-rooms join-storm soak
#                               opt-in (never in the default set): 200 meetings of 5; 1,000
#                               listeners joining in 10 s; a 10-minute mixed run (RSS slope)
#   benches/run.sh churn        opt-in: 1 × 50 steady while 10 subscribers a second join and
#                               leave after 3 s, for 60 s (mover join p50/p99, failures, steady
#                               loss, SFU RSS slope)
#   benches/run.sh simulcast    opt-in: 1 simulcast publisher (q/h/f) × 100 and × 200 viewers,
#                               3 in 10 asking `low`, every viewer sending TWCC feedback (per-layer
#                               out-packets, receivers per layer, CPU); reports in
#                               benches/results/simulcast/ (not in the generated tables)
#   benches/run.sh failover     opt-in: 1 publisher × 50 subscribers on a fleet of `mooyaho
#                               server` + 2 `mooyaho sfu` that loadgen starts; the room's node is
#                               SIGKILLed 2 s into the window (media gap p50/p99/max, recovered);
#                               reports in benches/results/failover/ (not in the generated tables)
#
# A failed run removes its report (no stale figure survives) and stops the script.
# Needs 2 CPUs (taskset -c 0 and -c 1); Janus from Debian (`apt-get install -y janus`).
set -euo pipefail

quick=0
janus=1
only=()
for arg in "$@"; do
    case "$arg" in
    --quick) quick=1 ;;
    --no-janus) janus=0 ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    fanout | livestream | audio | meeting | signaling | many-rooms | join-storm | soak | churn | simulcast | failover) only+=("$arg") ;;
    *) echo "run.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
# Whether a scenario is in this run (all of the standard set unless some were named).
wanted() { ((${#only[@]} == 0)) || [[ " ${only[*]} " == *" $1 "* ]]; }
# Opt-in scenarios run only when named.
named() { [[ " ${only[*]} " == *" $1 "* ]]; }
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
duration=${DURATION:-8}
repeats=${REPEATS:-3}
((quick)) && repeats=1
results=benches/results
mkdir -p "$results" docs/bench
((janus)) && ! command -v janus >/dev/null && { echo "janus missing: apt-get install -y janus, or --no-janus" >&2; exit 1; }

echo "== cargo build --release --bin mooyaho"
cargo build --release --bin mooyaho --quiet
bin="$root/target/release/mooyaho"
# shellcheck source=benches/lib.sh
source benches/lib.sh
port=18400

# One measured configuration: `run <name> <target> <loadgen args…>`, $repeats times, each run
# against a fresh server (no run inherits another's state), reports <name>.r<N>.json.
run() {
    local name=$1
    rm -f "$results/$name.json" "$results/$name".r*.json
    for ((i = 1; i <= repeats; i++)); do
        run_once "$name" "$i" "${@:2}"
    done
}

run_once() {
    local name=$1 repeat=$2 target=$3
    shift 3
    stop_server
    port=$((port + 1))
    local report="$results/$name.r$repeat.json"
    local args=(--target "$target" --duration "$duration" --ceiling --report "$report" --quiet)
    if [[ "$target" == mooyaho ]]; then
        start_dev "$bin" "$port" "$name.$repeat"
        args+=(--url "http://127.0.0.1:$port" --api-key "$key" --sfu-pid "$server_pid")
    else
        server_pid=$(taskset -c 0 benches/janus/start.sh "$port" 20000-29999 2>"$scratch/$name.janus")
        args+=(--janus-url "http://127.0.0.1:$port/janus" --sfu-pid "$server_pid")
    fi
    echo "== $name ($repeat/$repeats)"
    if ! taskset -c 1 "$bin" loadgen "${args[@]}" "$@"; then
        rm -f "$results/$name".r*.json
        echo "!! $name failed: its reports are removed; stopping" >&2
        exit 1
    fi
    stop_server
}

# Idle WebSocket sessions against `mooyaho server` on CPU 0: its memory per session and idle
# CPU. Sessions come from many loopback source addresses (the per-IP limit is 64).
run_signaling() {
    local name=$1 sessions=$2
    stop_server
    port=$((port + 1))
    echo "== $name"
    rm -f "$results/$name.json"
    taskset -c 0 "$bin" server --listen "127.0.0.1:$port" --api-key "bench-signaling-key-0123456789" \
        >"$scratch/$name.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do grep -q "WebSocket" "$scratch/$name.log" 2>/dev/null && break; sleep 0.1; done
    if ! taskset -c 1 "$bin" loadgen --scenario signaling --url "http://127.0.0.1:$port" \
        --subscribers "$sessions" --duration "$duration" --server-pid "$server_pid" \
        --report "$results/$name.json" --quiet; then
        rm -f "$results/$name.json"
        echo "!! $name failed: its report is removed; stopping" >&2
        exit 1
    fi
    stop_server
}

# The failover scenario: loadgen starts its own fleet (signaling and two nodes, which inherit
# its CPU set, so it is not pinned: one core would hold the whole fleet) and kills the room's
# node; `REPEATS` runs, each a fresh fleet.
run_failover() {
    local name=$1
    shift
    stop_server
    mkdir -p "$results/failover"
    rm -f "$results/failover/$name".r*.json
    for ((i = 1; i <= repeats; i++)); do
        echo "== $name ($i/$repeats)"
        if ! "$bin" loadgen --scenario failover --report "$results/failover/$name.r$i.json" --quiet "$@"; then
            rm -f "$results/failover/$name".r*.json
            echo "!! $name failed: its reports are removed; stopping" >&2
            exit 1
        fi
    done
}

if ((quick)); then
    run fanout-mooyaho-50 mooyaho --scenario fanout --subscribers 50 --pps 500 --size 1200 --join-rate 200
    if ((janus)); then run fanout-janus-50 janus --scenario fanout --subscribers 50 --pps 500 --size 1200 --join-rate 50; fi
    run audio-mooyaho-100 mooyaho --scenario audio --publishers 2 --subscribers 100 --join-rate 200
else
    wanted fanout && for n in 50 100 250 500; do
        run "fanout-mooyaho-$n" mooyaho --scenario fanout --subscribers "$n" --pps 500 --size 1200 --join-rate 200
        if ((janus)); then run "fanout-janus-$n" janus --scenario fanout --subscribers "$n" --pps 500 --size 1200 --join-rate 50; fi
    done
    wanted livestream && for n in 250 500 1000; do
        run "livestream-mooyaho-$n" mooyaho --scenario livestream --subscribers "$n" --join-rate 200
    done
    if wanted livestream && ((janus)); then run livestream-janus-250 janus --scenario livestream --subscribers 250 --join-rate 50; fi
    wanted audio && for n in 100 250 500; do
        run "audio-mooyaho-$n" mooyaho --scenario audio --publishers 2 --subscribers "$n" --join-rate 200
        if ((janus)); then run "audio-janus-$n" janus --scenario audio --publishers 2 --subscribers "$n" --join-rate 50; fi
    done
    wanted meeting && for n in 5 10 20; do
        run "meeting-mooyaho-$n" mooyaho --scenario meeting --publishers "$n" --pps 100 --size 1000 --join-rate 50
    done
    # The open-file hard limit here is 20,000 per process (both ends hold one per session).
    wanted signaling && run_signaling signaling-mooyaho-19000 19000
    # Many small rooms at once: 200 meetings of 5 (everyone publishes and receives the others).
    named many-rooms && run many-rooms-mooyaho-200x5 mooyaho --scenario meeting --publishers 5 \
        --rooms 200 --pps 50 --size 1000 --join-rate 100
    # A join storm: 1,000 listeners of 2 audio publishers joining in 10 s (join p50/p99, failures).
    named join-storm && run join-storm-mooyaho-1000 mooyaho --scenario audio --publishers 2 \
        --subscribers 1000 --join-rate 100
    # A 10-minute mixed run: 50 meetings of 4 with 2 % downlink loss; RSS per second and its slope.
    named soak && duration=600 run soak-mooyaho-50x4 mooyaho --scenario meeting --publishers 4 \
        --rooms 50 --pps 50 --size 1000 --join-rate 50 --loss 2
    # Churn: 10 joins a second (each leaving 3 s later) beside a steady 1 × 50, for a minute.
    named churn && duration=60 run churn-mooyaho-1x50-10ps mooyaho --scenario churn --publishers 1 \
        --subscribers 50 --pps 100 --size 1200 --join-rate 100 --churn-per-sec 10 --churn-stay 3
    # Simulcast: 1 publisher of three layers, 30 % of the viewers asking `low`.
    if named simulcast; then
        mkdir -p "$results/simulcast"
        for n in 100 200; do
            results="$results/simulcast" run "simulcast-mooyaho-$n" mooyaho --scenario simulcast \
                --publishers 1 --subscribers "$n" --join-rate 200
        done
    fi
    # Failover: 1 × 50 on a 2-node fleet, the room's node SIGKILLed 2 s into a 12 s window.
    named failover && run_failover failover-mooyaho-1x50 --publishers 1 --subscribers 50 \
        --pps 200 --size 1200 --join-rate 200 --duration 12 --kill-after 2
fi

echo "== charts"
for scenario in fanout livestream audio meeting; do
    reports=("$results/$scenario"-*.json)
    [[ -e "${reports[0]}" ]] || continue
    "$bin" loadgen --chart-from "${reports[@]}" --plot "docs/bench/$scenario.svg" >/dev/null
done
python3 benches/render.py "$results" BENCHMARKS.md
echo "== BENCHMARKS.md regenerated from $results"
