#!/usr/bin/env bash
# Schema fuzzing of the REST API (issue 7): schemathesis against a real `mooyaho server`.
#   1. with the API key, every check (`--checks all`): zero failures;
#   2. without the key, also `--checks all`: zero failures (so zero 5xx and every response, 401s
#      included, as documented), then a sweep asserting every protected operation answers 401 with
#      the JSON error body.
# Needs target/debug/mooyaho (cargo build --bin mooyaho) and schemathesis (scripts/test.sh installs
# scripts/requirements-test.txt into .venv). Env: SCHEMATHESIS (the CLI), ST_MAX_EXAMPLES, ST_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."

st=${SCHEMATHESIS:-$PWD/.venv/bin/schemathesis}
bin=target/debug/mooyaho
config=$PWD/scripts/schemathesis.toml
max_examples=${ST_MAX_EXAMPLES:-30}
seed=${ST_SEED:-20261128}
key="schemathesis-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"

[ -x "$bin" ] || { echo "schemathesis.sh: $bin is missing (cargo build --bin mooyaho)" >&2; exit 1; }
[ -x "$st" ] || { echo "schemathesis.sh: $st is missing (pip install -r scripts/requirements-test.txt)" >&2; exit 1; }

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

RUST_LOG=warn "$bin" server --listen 127.0.0.1:0 --api-key "$key" --data-dir "$tmp/data" \
  >"$tmp/server.out" 2>"$tmp/server.err" &
pid=$!
base=""
for _ in $(seq 100); do
  base=$(sed -n 's|^mooyaho listening on \(http://[^ ]*\)$|\1|p' "$tmp/server.out" | head -n1)
  [ -n "$base" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.err" >&2; echo "mooyaho server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "mooyaho server did not start" >&2; exit 1; }

python3 - "$base/openapi.json" "$key" "$tmp/openapi.json" <<'PY'
import sys, urllib.request
url, key, out = sys.argv[1:]
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
with urllib.request.urlopen(request, timeout=10) as response, open(out, "wb") as f:
    f.write(response.read())
PY

common=(--url "$base" --seed "$seed" --max-examples "$max_examples" --workers 1
  --request-timeout 10 --no-color --suppress-health-check all --generation-database none
  --report junit --report-dir "$tmp/report")

status=0
echo "== schemathesis with the API key (--checks all)"
# Run from the temp dir: schemathesis keeps a `.schemathesis/` cache in its working directory.
(cd "$tmp" && "$st" --config-file "$config" run openapi.json "${common[@]}" --checks all \
  -H "Authorization: Bearer $key") || status=1

echo "== schemathesis without the API key (--checks all: no 5xx; documented 401 bodies)"
(cd "$tmp" && "$st" --config-file "$config" run openapi.json "${common[@]}" --checks all) || status=1

# Every protected operation without a key: 401 and the JSON error body.
python3 - "$tmp/openapi.json" "$base" <<'PY' || status=1
import json, sys, urllib.request, urllib.error
spec, base = json.load(open(sys.argv[1])), sys.argv[2]
bad = 0
for path, ops in spec["paths"].items():
    for method, op in ops.items():
        if not op.get("security"):
            continue
        url = base + path.replace("{id}", "1")
        req = urllib.request.Request(url, method=method.upper(), data=b"{}" if method in ("post", "patch") else None,
                                     headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)
            code, body = 200, b""
        except urllib.error.HTTPError as e:
            code, body = e.code, e.read()
        try:
            ok = code == 401 and json.loads(body)["statusCode"] == 401
        except Exception:
            ok = False
        if not ok:
            bad += 1
            print(f"FAIL {method.upper()} {path} without key: {code} {body[:200]!r}")
print(f"unauthenticated sweep: {bad} failure(s)")
sys.exit(1 if bad else 0)
PY

if ! kill -0 "$pid" 2>/dev/null; then
  echo "mooyaho server died during the run" >&2
  cat "$tmp/server.err" >&2
  status=1
fi
exit $status
