#!/usr/bin/env bash
# What a GPU session of the `device` tool runs, from a tree that carries
# .device/ (packed here with ../shared/tools/device-pack.sh --features cudnn):
#   bench/cuda_session.sh tests     # every packed test binary (logs under $OUT)
#   bench/cuda_session.sh bench     # the three models twice, then the variants:
#                                   # no cuDNN, the interpreter, one chain, branches
#   bench/cuda_session.sh profile   # FERROMETAL_PROFILE of each model (under $OUT)
#   bench/compare_cuda.sh           # with BENCH=.device/examples/bench: the table
# Several may be given; they run in order.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
built=$(cat .device/built-in)
if [ "$built" != "$PWD" ] && [ ! -e "$built" ]; then mkdir -p "$(dirname "$built")"; ln -s "$PWD" "$built"; fi
# cuDNN: the copy PyTorch's wheels bring, when the system has none on the loader's path.
dnn=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH=${dnn:+$dnn:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bench=.device/examples/bench
steps() { case $1 in cifar) echo 300 ;; *) echo 3000 ;; esac; }
run() { "$@" 2>&1 | grep -E "steps/s|rror|panic" | head -3; }
models() { for m in cifar cnn64 mlp; do run "$bench" --model "$m" --backend cuda --steps "$(steps "$m")" --warmup 20; done; }
for what in "$@"; do
  case $what in
    tests)
      for t in .device/tests/*; do
        timeout 300 "$t" > "$out/$(basename "$t").log" 2>&1
        echo "$(basename "$t"): $(grep 'test result' "$out/$(basename "$t").log" || echo FAILED)"
      done ;;
    bench)
      models; models
      echo "-- without cuDNN"; FERROMETAL_CUDNN=0 models
      echo "-- the interpreter"; FERROMETAL_CUDA_JIT=0 models
      echo "-- one chain"; FERROMETAL_CUDA_BRANCHES=0 models
      echo "-- branches"; FERROMETAL_CUDA_BRANCHES=1 models ;;
    profile)
      for m in cifar cnn64 mlp; do
        FERROMETAL_PROFILE=1 "$bench" --model "$m" --backend cuda --steps 100 --warmup 5 > "$out/profile_$m.txt" 2>&1
      done ;;
    *) echo "unknown: $what" >&2; exit 2 ;;
  esac
done
