#!/usr/bin/env bash
# Runs examples/bench and bench/pytorch_bench.py on the same models, same
# machine, same run, and prints a table of steps/s and ratios.
#   [QUIET=1] [MODELS="cnn64 mlp"] bench/compare.sh [cpu|cuda] [threads] [rounds]
# Each round runs every model once with ferrometal and once with PyTorch,
# back to back (interleaved, so a change in machine load hits both); the
# table gives the median over the rounds of each side's steps/s, and the
# median of the per-round ratios. Every single measurement is printed too.
# Needs PyTorch (python3 -m pip install --index-url https://download.pytorch.org/whl/cpu torch).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-cpu}
threads=${2:-2}
rounds=${3:-3}
models=(${MODELS:-cnn64 mlp cifar})
features=()
[ "$backend" = cuda ] && features=(--features cuda)
cargo build --release --quiet "${features[@]}" --example bench
steps_per_second() { sed -nE 's/.*: ([0-9.]+) steps\/s.*/\1/p'; }
# On a shared machine (QUIET=1): before each pair, wait (up to 2 minutes)
# for a second in which the CPUs were less than 15 % busy.
cpu_busy_percent() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
  local total=$(( busy + (b[4]+b[5]) - (a[4]+a[5]) ))
  echo $(( total > 0 ? 100 * busy / total : 0 ))
}
wait_quiet() {
  [ "${QUIET:-0}" = 1 ] || return 0
  for _ in $(seq 120); do [ "$(cpu_busy_percent)" -lt 15 ] && return 0; done
  echo "(machine still busy; measuring anyway)" >&2
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for round in $(seq "$rounds"); do
  for model in "${models[@]}"; do
    wait_quiet
    ours=$(FERROMETAL_NUM_THREADS=$threads target/release/examples/bench --model "$model" --backend "$backend" | steps_per_second)
    theirs=$(python3 bench/pytorch_bench.py --model "$model" --device "$backend" --threads "$threads" 2>/dev/null | steps_per_second)
    echo "round $round $model: ferrometal $ours, PyTorch $theirs" >&2
    echo "$model $ours $theirs" >>"$log"
  done
done
python3 - "$log" "${models[@]}" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"| model | ferrometal steps/s | PyTorch steps/s | ratio | rounds |\n|---|---|---|---|---|")
for model in sys.argv[2:]:
    ours = [float(r[1]) for r in rows if r[0] == model]
    theirs = [float(r[2]) for r in rows if r[0] == model]
    ratio = statistics.median(o / t for o, t in zip(ours, theirs))
    print(f"| {model} | {statistics.median(ours):.1f} | {statistics.median(theirs):.1f} | {ratio:.2f} | {len(ours)} |")
EOF
