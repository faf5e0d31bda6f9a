#!/usr/bin/env bash
# Runs every fuzz target for a bounded time.
#
# Usage: fuzz/run.sh [target...]      (default: every target)
# Env:   FUZZ_SECONDS  seconds per target (default 60)
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers); on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them. Each target starts from the
# seeds in fuzz/corpus/<target>/; what a run adds there is scratch and is
# not committed (see fuzz/.gitignore). A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

seconds=${FUZZ_SECONDS:-60}
if (($#)); then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

cargo fuzz build
status=0
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  # Scratch corpus: seeds are read from the committed directory, new
  # inputs go to a temporary one, so runs never grow the repository.
  scratch=$(mktemp -d)
  if ! cargo fuzz run "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "/tmp/weir-fuzz-$t.log" | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Test unit written)' ; then
    :
  fi
  if grep -qE 'Test unit written|SUMMARY: ' "/tmp/weir-fuzz-$t.log"; then
    echo "!! $t crashed; input in fuzz/artifacts/$t/, log /tmp/weir-fuzz-$t.log"
    status=1
  fi
  rm -rf "$scratch"
done
exit $status
