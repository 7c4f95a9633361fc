# Shared by benches/run.sh and benches/compare.sh (sourced): the server under test, one at a time.
# Sets `scratch` (removed on exit with the server stopped), `server_pid` and, after `start_dev`,
# `key` (the dev server's API key).

scratch=$(mktemp -d)
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "$scratch"' EXIT

# `start_dev <binary> <port> <name>`: a fresh `mooyaho dev --workers 1` pinned to CPU 0 with its
# own data dir; waits for its API key (in `key`).
start_dev() {
    local bin=$1 port=$2 name=$3
    mkdir -p "$scratch/$name"
    taskset -c 0 "$bin" dev --listen "127.0.0.1:$port" --workers 1 --data-dir "$scratch/$name" \
        >"$scratch/$name.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do grep -q "API key:" "$scratch/$name.log" 2>/dev/null && break; sleep 0.1; done
    key=$(sed -n 's/.*API key: *//p' "$scratch/$name.log")
    [[ -n "$key" ]] || { cat "$scratch/$name.log"; echo "mooyaho dev ($bin) did not start" >&2; exit 1; }
}
