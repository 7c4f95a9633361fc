#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), then runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages the tests start as real processes.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

if [ -f fuzz/Cargo.toml ]; then
  echo "== fuzz targets compile"
  RUSTC_BOOTSTRAP=1 cargo check --manifest-path fuzz/Cargo.toml --quiet
fi
