#!/usr/bin/env bash
# Soak test: the real weir binary under steady load for minutes, with a
# config reload every few seconds and one endpoint flapping; fails if
# weir's memory or open file descriptors grow beyond a bound, or if
# requests stay in flight (tests/soak.rs has the details).
#
# Usage: scripts/soak.sh [--short] [--release]
#   --short    a 20-second smoke run (5 s warm-up)
#   --release  test the release binary (a much longer first build)
# Env: SOAK_SECONDS (default 180), SOAK_WARMUP_SECONDS (10), SOAK_RATE (200
# requests/s), SOAK_RELOAD_SECONDS (3), SOAK_FLAP_SECONDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
for arg in "$@"; do
  case $arg in
    --short)
      export SOAK_SECONDS=${SOAK_SECONDS:-20}
      export SOAK_WARMUP_SECONDS=${SOAK_WARMUP_SECONDS:-5}
      ;;
    --release) profile=(--release) ;;
    *) echo "usage: $0 [--short] [--release]" >&2; exit 2 ;;
  esac
done

exec cargo test --locked "${profile[@]}" --test soak -- --ignored --nocapture
