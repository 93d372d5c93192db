#!/usr/bin/env bash
# Builds the libFuzzer targets of native/fuzz with clang (ASan + UBSan and
# coverage in the library too) into build/fuzz and runs each one from its
# committed corpus (native/fuzz/corpus/<target>) for SECONDS seconds
# (default 60). Any crash, sanitizer report, leak, timeout or out-of-memory
# fails the run; the input that caused it is left in build/fuzz/findings.
# New inputs that add coverage go to build/fuzz/corpus, not into the
# committed corpus (merge them with -merge=1 by hand when worth keeping).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (needs clang-14 and
# libclang-rt-14-dev on Debian 12; .ci/run installs them)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_abi fuzz_checkpoint)

if ! command -v cmake >/dev/null 2>&1; then
    python3 -m pip install cmake
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi
clang="$(command -v clang-14 || command -v clang)"
clangxx="$(command -v clang++-14 || command -v clang++)"
CC="$clang" CXX="$clangxx" cmake -S "$root/native" -B "$build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFM_FUZZ=ON -DFM_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --parallel 2 --target "${targets[@]}"

# allocator_may_return_null: a refused huge allocation must come back as
# FM_ERR_OUT_OF_MEMORY, as it does without ASan.
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p "$build/findings"
status=0
for target in "${targets[@]}"; do
    corpus="$build/corpus/$target"
    mkdir -p "$corpus"
    log="$build/$target.log"
    echo "== $target: $seconds s"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb bounds memory.
    if ! (cd "$build/findings" && "$build/fuzz/$target" -max_total_time="$seconds" -timeout=10 \
            -rss_limit_mb=4096 -print_final_stats=1 "$corpus" "$root/native/fuzz/corpus/$target" \
            >"$log" 2>&1); then
        status=1
        grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -20 >&2 || true
        echo "$target FAILED (log: $log)" >&2
    fi
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added" "$log" || true
done
exit $status
