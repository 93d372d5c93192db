#!/usr/bin/env bash
# The Metal backend's checks that run on Linux (no Apple GPU, no macOS SDK):
#
#   lowering  the platform-independent lowering (native/metal/lowering.cpp)
#             against a recording builder: native/tests/test_metal_lowering
#   syntax    clang++-16 -fsyntax-only -fobjc-arc -x objective-c++ -Werror of
#             every native/metal/*.mm for x86_64-apple-macos13, against the
#             declaration headers of native/metal/sdk (installs clang-16 when
#             missing, as root or through sudo)
#   decls     those declaration headers against Apple's API as generated in the
#             pinned objc2-* crates (fetched from crates.io into cargo's registry)
#   selftest  the checker's own tests: a misspelled selector in a header or in
#             a .mm file fails naming it (plus fmt and clippy of the tool)
#   all       every one of the above (the default)
#
# Usage: scripts/metal-check.sh [lowering|syntax|decls|selftest|all]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tool="$root/tools/metal-api-check"
tool_target="$root/target/metal-api-check"
what="${1:-all}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_clang() {
    if [ -n "${CLANG:-}" ] || [ -x /usr/lib/llvm-16/bin/clang++ ] || [ -x /usr/bin/clang++-16 ]; then
        return
    fi
    echo "metal-check: installing clang-16 (Debian) for the Objective-C++ syntax check" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-16
}

tool_cargo() {
    local command="$1"
    shift
    (cd "$tool" && cargo "$command" --target-dir "$tool_target" "$@")
}

build_tool() {
    # The objc2 crates are macOS-only dependencies: fetched, never built.
    (cd "$tool" && cargo fetch --locked)
    tool_cargo build --release --locked
}

run_lowering() {
    # scripts/sanitize.sh builds and runs it (under ASan/UBSan) with every
    # native test; reuse that build when it exists, else make a plain one.
    # (rebuilt either way: a stale binary would check yesterday's lowering).
    local build="$root/build/sanitize"
    if [ ! -x "$build/tests/test_metal_lowering" ]; then
        build="$root/build/metal-lowering"
        cmake -S "$root/native" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFM_WERROR=ON \
            -DFM_BUILD_TESTS=ON >/dev/null
    fi
    cmake --build "$build" --target test_metal_lowering --parallel 2
    (cd "$build" && ctest --output-on-failure -R '^test_metal_lowering$')
}

run_syntax() {
    need_clang
    build_tool
    "$tool_target/release/metal-api-check" syntax "$root/native/metal"
}

run_decls() {
    build_tool
    "$tool_target/release/metal-api-check" decls "$root/native/metal/sdk"
}

run_selftest() {
    need_clang
    build_tool
    (cd "$tool" && cargo fmt -- --check)
    tool_cargo clippy --release --locked --all-targets -- -D warnings
    FM_REQUIRE_CLANG=1 tool_cargo test --release --locked
}

case "$what" in
    lowering) run_lowering ;;
    syntax) run_syntax ;;
    decls) run_decls ;;
    selftest) run_selftest ;;
    all)
        run_lowering
        run_syntax
        run_decls
        run_selftest
        ;;
    *)
        echo "usage: $0 [lowering|syntax|decls|selftest|all]" >&2
        exit 2
        ;;
esac
