#!/usr/bin/env bash
# TLS side by side: weir, nginx and HAProxy terminating TLS with the same
# ECDSA P-256 certificate in front of the same nginx backend, one worker
# each, pinned to core 0 (load generator and backend on core 1).
#
#   cargo build --release && benches/tls-compare.sh
#
# Two figures per proxy, from wrk over HTTPS:
#   - keep-alive: requests/s and requests per proxy CPU-second, 64 connections;
#   - new handshake per request (`Connection: close`, no session reuse):
#     handshakes/s and handshakes per proxy CPU-second.
# Compare ratios only: absolute numbers on shared machines are noise.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
weir=${WEIR_BIN:-$here/target/release/weir}
dur=${DURATION:-5}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
for bin in nginx haproxy wrk openssl taskset; do
  command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install nginx-light haproxy wrk openssl util-linux)" >&2; exit 1; }
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/both.pem"

cat >"$tmp/backend.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/backend.pid; error_log $tmp/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19101; location / { return 200 "hello, world\n"; } } }
EOC
cat >"$tmp/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/nginx.pid; error_log $tmp/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream b { server 127.0.0.1:19101; keepalive 64; }
  server { listen 127.0.0.1:19443 ssl; ssl_certificate $tmp/cert.pem; ssl_certificate_key $tmp/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOC
cat >"$tmp/haproxy.cfg" <<EOC
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:19444 ssl crt $tmp/both.pem
  default_backend b
backend b
  server s1 127.0.0.1:19101
EOC
cat >"$tmp/weir.yaml" <<EOC
listeners:
  - name: tls
    bind: "127.0.0.1:19445"
    tls: {certificates: [{cert: "$tmp/cert.pem", key: "$tmp/key.pem"}]}
admin: {bind: "127.0.0.1:0"}
access_log: {enabled: false}
routes: [{pool: b}]
pools: [{name: b, endpoints: [{address: "127.0.0.1:19101"}]}]
EOC

taskset -c 1 nginx -c "$tmp/backend.conf" & pids+=($!)
taskset -c 0 nginx -c "$tmp/nginx.conf" & pids+=($!); nginx_pid=$!
taskset -c 0 haproxy -f "$tmp/haproxy.cfg" & pids+=($!); haproxy_pid=$!
taskset -c 0 "$weir" --threads 1 --log-level warn run -c "$tmp/weir.yaml" & pids+=($!); weir_pid=$!
sleep 1

ticks() { # utime+stime of a process tree, in clock ticks
  local t=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    read -r -a f < <(sed "s/^.*) //" "/proc/$p/stat" 2>/dev/null) && t=$((t + f[11] + f[12])) || true
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
run() { # name pid port extra-wrk-args...
  local name=$1 pid=$2 port=$3; shift 3
  local t0 t1 out rps
  t0=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -d"${dur}s" "$@" "https://127.0.0.1:$port/" 2>&1)
  t1=$(ticks "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  awk -v n="$name" -v r="$rps" -v c="$(( t1 - t0 ))" -v hz="$hz" -v d="$dur" \
    'BEGIN { cpu = c / hz; printf "%-8s %10.0f req/s %10.0f req per proxy CPU-s\n", n, r, (cpu > 0 ? r * d / cpu : 0) }'
}
for round in 1 2 3; do
  echo "== round $round: keep-alive (64 connections)"
  run nginx "$nginx_pid" 19443 -c64
  run haproxy "$haproxy_pid" 19444 -c64
  run weir "$weir_pid" 19445 -c64
  echo "== round $round: new TLS handshake per request (16 connections, Connection: close)"
  run nginx "$nginx_pid" 19443 -c16 -H "Connection: close"
  run haproxy "$haproxy_pid" 19444 -c16 -H "Connection: close"
  run weir "$weir_pid" 19445 -c16 -H "Connection: close"
done
