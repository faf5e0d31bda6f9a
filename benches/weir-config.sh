#!/usr/bin/env bash
# weir-config.sh LISTEN BACKENDS — prints the weir config every end-to-end
# benchmark here runs: one listener on LISTEN (ip:port), the admin listener
# on an ephemeral port, no access log (as for nginx and HAProxy in the
# benchmarks), and one round-robin pool over BACKENDS (comma-separated
# ip:port list) with weir's default keep-alive settings.
set -euo pipefail
listen=$1
backends=$2
cat <<EOC
listeners:
  - name: bench
    bind: "$listen"
admin:
  bind: "127.0.0.1:0"
access_log:
  enabled: false
routes:
  - pool: backends
pools:
  - name: backends
    balance: round_robin
    endpoints:
EOC
IFS=, read -ra eps <<<"$backends"
for e in "${eps[@]}"; do echo "      - address: \"$e\""; done
