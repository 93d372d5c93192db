#!/usr/bin/env bash
# Instruction count of a fixed small training run (mlp, batch 32, 20 steps,
# one thread) under valgrind's callgrind: unlike seconds, it does not vary
# with machine load, so it tracks CPU-side regressions run to run.
#   scripts/callgrind.sh [bench arguments...]
# Valgrind emulates no AVX-512, so the AVX2 kernels are the ones counted.
# 2026-11-23: 208.3 M instructions after issue 8 (441.2 M before); the
# count varies by a few thousand between runs (address-dependent code), so
# compare to about 0.01 %. BENCHMARKS.md keeps the history.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet --example bench
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--model mlp --batch 32 --steps 20 --warmup 1)
out=$(mktemp -d)
FERROMETAL_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  target/release/examples/bench "${args[@]}" >/dev/null 2>"$out/log"
total=$(grep -E '^(summary|totals):' "$out/callgrind.out" | head -1 | awk '{print $2}')
echo "instructions: $total (${args[*]})"
rm -rf "$out"
