#!/usr/bin/env bash
# Builds native/ with AddressSanitizer + UBSan and -Werror into
# build/sanitize, then runs every native test under them.
# Usage (from anywhere): scripts/sanitize.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/sanitize"

if ! command -v cmake >/dev/null 2>&1; then
    echo "cmake not found; installing it with pip" >&2
    python3 -m pip install cmake
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi

cmake -S "$root/native" -B "$build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFM_SANITIZE=ON \
    -DFM_WERROR=ON \
    -DFM_BUILD_TESTS=ON
cmake --build "$build" --parallel 2
cd "$build" && ctest --output-on-failure
