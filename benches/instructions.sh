#!/usr/bin/env bash
# instructions.sh — user-space instructions weir executes per proxied
# request, counted by valgrind's callgrind. Unlike timings, the count does
# not move with the load of a shared machine, so it shows small hot-path
# changes that wall-clock benchmarks cannot (kernel time is not counted).
#
#   cargo build --release && benches/instructions.sh [path/to/weir]
#
# Setup: one nginx worker serving 13 B on four loopback ports (BACKEND_PORT
# and the next three), weir round-robin in front of them on PORT with one
# worker thread. weir runs under callgrind twice, serving N1 and then N2
# keep-alive GETs (h2load --h1, 8 connections); the difference of the two
# totals divided by N2 - N1 cancels start-up and shutdown.
# Needs valgrind, nginx and h2load (Debian: valgrind nginx-light
# nghttp2-client; installed when run as root).
set -euo pipefail

WEIR=${1:-target/release/weir}
N1=${N1:-1000}
N2=${N2:-6000}
PORT=${PORT:-19410}
BACKEND_PORT=${BACKEND_PORT:-19401}

need() { command -v "$1" >/dev/null || { [[ $(id -u) == 0 ]] && apt-get install -y "$2" >/dev/null; } || { echo "missing $1 (apt-get install $2)" >&2; exit 1; }; }
need valgrind valgrind
need nginx nginx-light
need h2load nghttp2-client
[[ -x $WEIR ]] || { echo "no weir binary at $WEIR (cargo build --release)" >&2; exit 1; }

T=$(mktemp -d /tmp/weir-instructions.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f $T/nginx.pid ]] && kill "$(cat "$T/nginx.pid")" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

listen="" backends=""
for p in $(seq "$BACKEND_PORT" $((BACKEND_PORT + 3))); do
  listen+="    listen 127.0.0.1:$p;"$'\n'
  backends+="127.0.0.1:$p,"
done
mkdir -p "$T/tmp"
cat >"$T/nginx.conf" <<EOF
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
$(for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $T/tmp/$t;"; done)
  server {
$listen
    location = / { return 200 "hello, world\n"; }
  }
}
EOF
nginx -c "$T/nginx.conf"

"$(dirname "$0")/weir-config.sh" "127.0.0.1:$PORT" "${backends%,}" >"$T/weir.yaml"

# Total instructions of one weir run that serves $1 requests.
count() {
  local n=$1 out=$T/callgrind.$1 pid i
  valgrind --tool=callgrind --callgrind-out-file="$out" "$WEIR" run -c "$T/weir.yaml" --threads 1 \
    >/dev/null 2>"$T/valgrind.$n.err" &
  pid=$!; PIDS+=("$pid")
  for i in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    kill -0 "$pid" 2>/dev/null || { cat "$T/valgrind.$n.err" >&2; exit 1; }
    sleep 0.2
  done
  timeout 300 h2load --h1 -n"$n" -c8 -m1 "http://127.0.0.1:$PORT/" >"$T/h2load.$n" 2>&1
  grep -q "$n succeeded" "$T/h2load.$n" || { echo "h2load did not complete $n requests:" >&2; cat "$T/h2load.$n" >&2; exit 1; }
  kill -INT "$pid"; wait "$pid" || true
  awk '/^summary:/ { print $2; exit }' "$out"
}

a=$(count "$N1")
b=$(count "$N2")
echo "weir $("$WEIR" --version | awk '{print $2}'): $(( (b - a) / (N2 - N1) )) user-space instructions per request (callgrind; $N1 vs $N2 requests)"
