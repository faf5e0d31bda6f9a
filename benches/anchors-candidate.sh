#!/usr/bin/env bash
# Candidate wrapper for the side-by-side proxy benchmark (anchors.sh):
# writes a weir config from the BENCH_* variables and execs weir on it.
#
#   cargo build --release
#   CANDIDATE_CMD="$PWD/benches/anchors-candidate.sh" CANDIDATE_PORT=8080 path/to/anchors.sh
#
# BENCH_LISTEN (ip:port), BENCH_BACKENDS (comma list), BENCH_THREADS and
# BENCH_TMP come from the benchmark script. The access log is off, as it is
# for nginx and HAProxy there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${WEIR_BIN:-$here/target/release/weir}
cfg=${BENCH_TMP:-/tmp}/weir-bench.yaml
"$here/benches/weir-config.sh" "${BENCH_LISTEN:-127.0.0.1:8080}" "${BENCH_BACKENDS:-127.0.0.1:9001}" >"$cfg"
exec "$bin" --log-level warn --threads "${BENCH_THREADS:-1}" run --config "$cfg"
