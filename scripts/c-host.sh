#!/usr/bin/env bash
# Builds the C host examples (examples/c, which builds native/ through
# add_subdirectory) into build/c-host, runs device_tour, and trains the MLP
# through level 3 for 2 epochs on a 10,000-image subset of MNIST (it must
# reach 90% test accuracy).
# Usage (from anywhere): scripts/c-host.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/c-host"

if ! command -v cmake >/dev/null 2>&1; then
    echo "cmake not found; installing it with pip" >&2
    python3 -m pip install cmake
    export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi

cmake -S "$root/examples/c" -B "$build" -DFM_WERROR=ON
cmake --build "$build" --parallel 2
"$build/device_tour"
"$build/mnist_mlp" "$root/data/mnist" 2 10000 0.90
