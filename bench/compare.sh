#!/usr/bin/env bash
# Runs examples/bench and bench/pytorch_bench.py on the same models, same
# machine, same run, and prints a table of steps/s and ratios.
#   bench/compare.sh [cpu|cuda] [threads]
# Needs PyTorch (python3 -m pip install --index-url https://download.pytorch.org/whl/cpu torch).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-cpu}
threads=${2:-2}
features=()
[ "$backend" = cuda ] && features=(--features cuda)
cargo build --release --quiet "${features[@]}" --example bench
printf '| model | ferrometal steps/s | PyTorch steps/s | ratio |\n|---|---|---|---|\n'
for model in cnn64 mlp cifar; do
  ours=$(FERROMETAL_NUM_THREADS=$threads target/release/examples/bench --model "$model" --backend "$backend" | sed -E 's/.*: ([0-9.]+) steps\/s.*/\1/')
  theirs=$(python3 bench/pytorch_bench.py --model "$model" --device "$backend" --threads "$threads" 2>/dev/null | sed -E 's/.*: ([0-9.]+) steps\/s.*/\1/')
  ratio=$(python3 -c "print(f'{$ours / $theirs:.2f}')")
  printf '| %s | %s | %s | %s |\n' "$model" "$ours" "$theirs" "$ratio"
done
