#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), then runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages the tests start as real processes.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The JS SDK's browser tests drive Debian's Chromium (playwright-core downloads no browser).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# tests/loadgen_smoke.rs runs `mooyaho loadgen --target janus` against a real Janus VideoRoom.
command -v janus >/dev/null 2>&1 || missing+=(janus)
# sdk/js/test/turn.test.mjs relays Chromium through a real coturn.
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
# sdk/js/test/network-failure.test.mjs cuts a page's UDP for real with an nftables rule (as root).
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# sdk/js/test/firefox.test.mjs drives a stock Firefox ESR over WebDriver BiDi.
[ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
# The aiortc interop test's venv needs venv + pip.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p sfu-core --features arbitrary --all-targets -- -D warnings

# aiortc (PyPI) peers for media/tests/interop_aiortc.rs, in the gitignored .venv.
if ! .venv/bin/python -c 'import aiortc' >/dev/null 2>&1; then
  echo "== creating .venv with aiortc"
  python3 -m venv .venv
  .venv/bin/pip install -q -r test-support/aiortc/requirements.txt
fi

echo "== cargo test"
cargo test --workspace --no-fail-fast

# Schema fuzzing of the REST API (issue 7): schemathesis (pinned) against a real `mooyaho server`,
# with and without the API key; zero failures allowed.
st_pin=$(sed -n 's/^schemathesis==//p' scripts/requirements-test.txt)
if [ "$(.venv/bin/schemathesis --version 2>/dev/null | awk '{print $NF}')" != "$st_pin" ]; then
  echo "== installing schemathesis $st_pin into .venv"
  .venv/bin/pip install -q -r scripts/requirements-test.txt
fi
echo "== schemathesis (REST API)"
cargo build --bin mooyaho
scripts/schemathesis.sh

echo "== benches/render.py (BENCHMARKS.md tables)"
python3 -m unittest benches/test_render.py

echo "== fuzz: structured worker_ops inputs replay"
cargo test -p sfu-core --features arbitrary --test fuzz_regressions --quiet

# Every cargo-fuzz target for a short budget (MOOYAHO_FUZZ_SECONDS, default 10; 0 skips):
# catches a regression the seeds do not. Hours-long runs are by hand (docs/fuzzing.md).
fuzz_seconds="${MOOYAHO_FUZZ_SECONDS:-10}"
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz: every target for ${fuzz_seconds}s"
  scripts/fuzz.sh -t "$fuzz_seconds"
fi

echo "== JS SDK (sdk/js): install, build, freshness of the committed bundle, browser tests"
(
  cd sdk/js
  # npm ci only when node_modules is missing or was installed from another lockfile.
  lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat node_modules/.mooyaho-lock-sha256 2>/dev/null)" != "$lock_sum" ]; then
    npm ci --no-audit --no-fund
    echo "$lock_sum" > node_modules/.mooyaho-lock-sha256
  fi
  npm run --silent typecheck
  npm run --silent build
  # The binary embeds dist/mooyaho.js (include_str!) so cargo builds without node; a source
  # change must come with its rebuilt, committed bundle.
  if [ -n "$(git status --porcelain -- dist)" ]; then
    git status --short -- dist
    echo "sdk/js/dist is stale: run 'npm run build' in sdk/js and commit dist/" >&2
    exit 1
  fi
)
cargo build --bin mooyaho
# Headless Chromium against real `mooyaho dev` processes; one file at a time so pages decoding
# fake video do not starve each other. The real-node SFU tests (test/sfu.test.mjs) run by default;
# MOOYAHO_SFU_E2E=0 skips them.
(cd sdk/js && node --test --test-concurrency=1 test/*.test.mjs)
