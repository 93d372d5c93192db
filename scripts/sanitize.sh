#!/usr/bin/env bash
# Builds native/ with sanitizers and -Werror, then runs native tests under
# them.
#   scripts/sanitize.sh           AddressSanitizer + UBSan, every native test
#                                 (build/sanitize)
#   scripts/sanitize.sh thread    ThreadSanitizer, the threading tests: the
#                                 handle table, devices, pools and streams
#                                 from many threads (test_l1_threads); one
#                                 trainer, engine and executable shared by
#                                 six (test_l3_threads); the CPU thread pool
#                                 under both (build/tsan)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-address}"

if ! command -v cmake >/dev/null 2>&1; then
    echo "cmake not found; installing it with pip" >&2
    python3 -m pip install cmake
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi

case "$mode" in
    address)
        build="$root/build/sanitize"
        cmake -S "$root/native" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DFM_SANITIZE=ON -DFM_WERROR=ON -DFM_BUILD_TESTS=ON
        cmake --build "$build" --parallel 2
        cd "$build" && ctest --output-on-failure
        ;;
    thread)
        build="$root/build/tsan"
        cmake -S "$root/native" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DFM_TSAN=ON -DFM_WERROR=ON -DFM_BUILD_TESTS=ON
        cmake --build "$build" --parallel 2 --target test_l1_threads test_l3_threads
        export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
        for t in test_l1_threads test_l3_threads; do
            "$build/tests/$t"
            FERROMETAL_NUM_THREADS=1 "$build/tests/$t" >/dev/null
        done
        ;;
    *)
        echo "usage: scripts/sanitize.sh [address|thread]" >&2
        exit 2
        ;;
esac
