#!/usr/bin/env bash
# Memory per idle keep-alive client connection, plain and TLS.
#
#   cargo build --release && benches/idle-memory.sh [N]
#
# Starts one nginx backend and weir (one worker thread) with a cleartext
# and a TLS listener, then, for each case, opens N client connections
# (default 1000) that each make one request and stay open, and prints the
# growth of weir's RSS divided by N:
#   - plain, sequential: each connection's request is answered before the
#     next connection opens (what an idle connection itself costs);
#   - plain, burst: all N requests are in flight at once before any is read
#     (the anchors.sh way; adds what the allocator keeps after the burst);
#   - TLS, sequential: the same over TLS 1.3 (rustls session state).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
weir=${WEIR_BIN:-$here/target/release/weir}
n=${1:-1000}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
for bin in nginx openssl python3; do
  command -v "$bin" >/dev/null || { echo "missing $bin" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || true

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat >"$tmp/backend.conf" <<EOC
worker_processes 1; daemon off; pid $tmp/backend.pid; error_log $tmp/backend.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19201; location / { return 200 "hello, world\n"; } } }
EOC
nginx -c "$tmp/backend.conf" -p "$tmp" & pids+=($!)
cat >"$tmp/weir.yaml" <<EOC
listeners:
  - name: plain
    bind: "127.0.0.1:19202"
  - name: tls
    bind: "127.0.0.1:19203"
    tls:
      certificates:
        - cert: "$tmp/cert.pem"
          key: "$tmp/key.pem"
admin:
  bind: "127.0.0.1:0"
access_log:
  enabled: false
routes:
  - pool: backends
pools:
  - name: backends
    endpoints:
      - address: "127.0.0.1:19201"
EOC
"$weir" --log-level warn --threads 1 run --config "$tmp/weir.yaml" & pids+=($!)
wpid=$!
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/19202) 2>/dev/null && break
  sleep 0.1
done

cat >"$tmp/idle.py" <<'EOF'
import socket, ssl, sys, time
port, n, pid, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def answer(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c: return False
        buf += c
    head, _, body = buf.partition(b"\r\n\r\n")
    cl = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length": cl = int(v)
    while len(body) < cl:
        body += s.recv(65536)
    return head.startswith(b"HTTP/1.1 200")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
time.sleep(0.5)
r0, socks, ok = rss(), [], 0
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "tls": s = ctx.wrap_socket(s, server_hostname="bench.test")
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    if mode != "burst": ok += answer(s)
    socks.append(s)
if mode == "burst":
    ok = sum(answer(s) for s in socks)
time.sleep(1.5)
r1 = rss()
print(f"{mode:>10}: {ok}/{n} ok, RSS {r0} KiB -> {r1} KiB, {(r1 - r0) / n:.2f} KiB per idle connection")
EOF
# Warm the upstream pool and the allocator first, as anchors.sh does.
python3 "$tmp/idle.py" 19202 64 "$wpid" burst >/dev/null
python3 "$tmp/idle.py" 19202 "$n" "$wpid" sequential
python3 "$tmp/idle.py" 19202 "$n" "$wpid" burst
python3 "$tmp/idle.py" 19203 "$n" "$wpid" tls
