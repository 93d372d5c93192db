#!/usr/bin/env bash
# Builds the Rust fuzz targets of fuzz/ (model specs in JSON, the MNIST,
# CSV and image-folder readers) with libFuzzer on stable Rust, passing the
# coverage instrumentation cargo-fuzz would (no nightly, no cargo-fuzz),
# and runs each from its committed corpus (fuzz/corpus/<target>) for
# SECONDS seconds (default 60). A panic, a crash or a timeout fails.
# Usage: scripts/fuzz-readers.sh [SECONDS] [TARGET...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_json data_files)
host="$(rustc -vV | sed -n 's/^host: //p')"
# --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --manifest-path "$root/fuzz/Cargo.toml" --target "$host" \
    --target-dir "$root/target/fuzz" --bins
work="$root/target/fuzz/runs"
mkdir -p "$work/findings"
status=0
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    log="$work/$target.log"
    echo "== $target: $seconds s"
    if ! (cd "$work/findings" && "$root/target/fuzz/$host/release/$target" -max_total_time="$seconds" \
            -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 "$corpus" "$root/fuzz/corpus/$target" \
            >"$log" 2>&1); then
        status=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 >&2 || true
        echo "$target FAILED (log: $log)" >&2
    fi
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$log" || true
done
exit $status
