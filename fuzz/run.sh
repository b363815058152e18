#!/usr/bin/env bash
# Runs each cargo-fuzz target for FUZZ_SECONDS (default 60) seconds, growing
# the corpus in fuzz/corpus/<target>/, then prints the executions per target.
# Needs a nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz
# if it is missing. Usage: fuzz/run.sh [target...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(control stream records)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzzing needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

mkdir -p logs
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"logs/$target.log" 2>&1 || {
    tail -40 "logs/$target.log" >&2
    echo "$target: the fuzzer found a failure (input in fuzz/artifacts/$target/)" >&2
    exit 1
  }
done
for target in "${targets[@]}"; do
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | grep -o '[0-9]*$')
  cover=$(grep -o 'cov: [0-9]*' "logs/$target.log" | tail -1)
  echo "$target: $runs executions in ${seconds}s, $cover, corpus $(find "corpus/$target" -type f | wc -l) inputs"
done
