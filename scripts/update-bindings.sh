#!/usr/bin/env bash
# Regenerates src/sys/bindings.rs from native/include/ferrometal.h with the
# pinned configuration in build_support/bindings.rs. Needs libclang
# (Debian: apt-get install libclang-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --features bindgen
git diff --stat -- src/sys/bindings.rs
