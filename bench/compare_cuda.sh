#!/usr/bin/env bash
# The CUDA side-by-side of issue 6: examples/bench against PyTorch eager, the
# whole PyTorch step in a CUDA graph, and torch.compile plus a CUDA graph, on
# the three reference models, in one run on one GPU. Prints a markdown table
# (steps/s; ratio = ferrometal over PyTorch's fastest mode) and the versions.
#   bench/compare_cuda.sh                  # after cargo build --release --features cuda --example bench
#   BENCH=.device/examples/bench bench/compare_cuda.sh   # on the GPU machine, from device-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${BENCH:-target/release/examples/bench}
modes=${MODES:-eager graph compile}
steps() { case $1 in mlp) echo 4000 ;; cnn64) echo 3000 ;; cifar) echo 300 ;; esac; }
rate() { sed -nE 's/.*: ([0-9.]+) steps\/s.*/\1/p' | tail -1; }

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda)'
header="| model | ferrometal"
rule="|---|---"
for mode in $modes; do header+=" | PyTorch $mode"; rule+="|---"; done
printf '%s | ratio to fastest |\n%s|---|\n' "$header" "$rule"
for model in cnn64 mlp cifar; do
  n=$(steps "$model")
  ours=$("$bench" --model "$model" --backend cuda --steps "$n" --warmup 20 | rate)
  row="| $model | $ours"
  best=0
  for mode in $modes; do
    theirs=$(timeout 900 python3 bench/pytorch_bench.py --model "$model" --device cuda --mode "$mode" \
               --steps "$n" --warmup 20 2>/dev/null | rate || true)
    row+=" | ${theirs:-failed}"
    [ -n "$theirs" ] && best=$(python3 -c "print(max($best, $theirs))")
  done
  ratio=$(python3 -c "print(f'{$ours / $best:.2f}' if $best else 'n/a')")
  printf '%s | %s |\n' "$row" "$ratio"
done
