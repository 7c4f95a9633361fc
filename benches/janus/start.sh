#!/usr/bin/env bash
# Starts a Janus (VideoRoom only, HTTP API on 127.0.0.1:<http-port> only) for
# `mooyaho loadgen --target janus`. Prints Janus's PID once `GET /janus/info` answers; stop it
# with `kill <pid>`. Config and log go to a fresh temp dir (printed on stderr).
#
#   benches/janus/start.sh <http-port> [rtp-port-range, default 20000-20999]
#
# ICE address: Janus 1.1 never gathers loopback candidates (ice.c skips IFF_LOOPBACK interfaces
# whatever ice_enforce_list says), so its candidates are on this host's first global IPv4
# address (override with JANUS_ICE_IP). The media still never leaves the machine: the kernel
# delivers traffic between local addresses through lo.
set -euo pipefail

port=${1:?usage: start.sh <http-port> [rtp-min-max]}
rtp=${2:-20000-20999}
command -v janus >/dev/null || { echo "janus is not installed (apt-get install -y janus)" >&2; exit 1; }

# The Debian package keeps its modules under /usr/lib/<triplet>/janus.
lib=${JANUS_LIB_DIR:-$(dirname "$(ls -d /usr/lib/*/janus/plugins /usr/lib/janus/plugins 2>/dev/null | head -n1)")}
[ -e "$lib/plugins/libjanus_videoroom.so" ] || { echo "no libjanus_videoroom.so under $lib/plugins" >&2; exit 1; }

ice_ip=${JANUS_ICE_IP:-$(ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')}
[ -n "$ice_ip" ] || ice_ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -m1 -E '^[0-9]+\.' || true)
[ -n "$ice_ip" ] || { echo "no global IPv4 address for Janus's ICE candidates (Janus skips loopback); set JANUS_ICE_IP" >&2; exit 1; }

dir=$(mktemp -d -t mooyaho-janus.XXXXXX)
# Janus loads every module in its folders: private folders with only what the benchmark needs
# keep the other plugins' demo ports and the WebSocket transport closed.
mkdir -p "$dir/plugins" "$dir/transports" "$dir/events" "$dir/loggers"
ln -s "$lib/plugins/libjanus_videoroom.so" "$dir/plugins/"
ln -s "$lib/transports/libjanus_http.so" "$dir/transports/"

cat > "$dir/janus.jcfg" <<JCFG
general: {
	configs_folder = "$dir"
	plugins_folder = "$dir/plugins"
	transports_folder = "$dir/transports"
	events_folder = "$dir/events"
	loggers_folder = "$dir/loggers"
	debug_level = ${JANUS_DEBUG_LEVEL:-2}
	session_timeout = 60
	# One event loop thread for every handle (the default, 0, is a thread per handle): Janus
	# is pinned to one core like Mooyaho's one worker, so hundreds of threads only add switches.
	event_loops = ${JANUS_EVENT_LOOPS:-1}
	server_name = "mooyaho-loadgen-janus"
}
certificates: {
}
media: {
	rtp_port_range = "$rtp"
}
nat: {
	nice_debug = false
	ice_enforce_list = "$ice_ip"
}
plugins: {
}
transports: {
}
loggers: {
}
events: {
	broadcast = false
}
JCFG

cat > "$dir/janus.transport.http.jcfg" <<JCFG
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = $port
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
cors: {
}
JCFG

cat > "$dir/janus.plugin.videoroom.jcfg" <<JCFG
general: {
}
JCFG

janus --configs-folder="$dir" --config="$dir/janus.jcfg" --interface="$ice_ip" \
	--disable-colors --log-file="$dir/janus.log" --disable-stdout </dev/null >/dev/null 2>&1 &
pid=$!
echo "janus config and log: $dir (ICE on $ice_ip)" >&2
for _ in $(seq 1 100); do
	if curl -sf "http://127.0.0.1:$port/janus/info" >/dev/null 2>&1; then
		echo "$pid"
		exit 0
	fi
	kill -0 "$pid" 2>/dev/null || { echo "janus exited; log:" >&2; cat "$dir/janus.log" >&2; exit 1; }
	sleep 0.1
done
echo "janus did not answer on port $port within 10 s; log: $dir/janus.log" >&2
kill "$pid"
exit 1
