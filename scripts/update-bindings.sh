#!/usr/bin/env bash
# Regenerates src/sys/bindings.rs from native/include/ferrometal.h with the
# pinned configuration in build_support/bindings.rs. Needs libclang
# (Debian: apt-get install libclang-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
# Pinned to libclang 14 (see build_support/bindings.rs), also where newer ones exist.
if [ -z "${LIBCLANG_PATH:-}" ] && [ -d /usr/lib/llvm-14/lib ]; then export LIBCLANG_PATH=/usr/lib/llvm-14/lib; fi
# The build generates bindings the crate compiles against; the freshness
# test then writes them in the form it checks (bindgen formats the two
# runs' output slightly differently).
cargo build --features bindgen
FERROMETAL_UPDATE_BINDINGS=1 cargo test --release --test bindings_fresh
git diff --stat -- src/sys/bindings.rs
