#!/usr/bin/env bash
# `make fuzz`: coverage-guided fuzzing of every parser (the targets of tests/src/fuzz.rs) with
# cargo-fuzz: libFuzzer + AddressSanitizer, 1 GiB RSS and malloc limits, 10 s per input.
# Seeds: the committed fixtures and regression cases (fuzz-seeds). A crash, leak, timeout or
# over-allocation is copied into tests/data/fuzz/<target>/, where `make test` replays it.
# Prints executions per target into target/fuzz-report/summary.txt.
# FUZZ_SECONDS (default 300) per target; FUZZ_RUNS: also stop a target after this many
# executions (e.g. 1000000, the count asked of each parser); FUZZ_TARGETS (default all).
set -uo pipefail
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-300}
RUNS=${FUZZ_RUNS:--1}
TARGETS=${FUZZ_TARGETS:-"pth pickle npz smpl body_safetensors tflite pw3d solve_json"}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2 </dev/null || exit 1
# cargo-fuzz passes unstable -Z flags (sanitizer, coverage passes); this lets the one stable
# toolchain accept them.
export RUSTC_BOOTSTRAP=1
OUT=target/fuzz-report
mkdir -p "$OUT"
: > "$OUT/summary.txt"
failed=0
for t in $TARGETS; do
    corpus=target/fuzz-corpus/$t
    cargo run -q --release -p ikol-tests --bin fuzz-seeds -- "$t" "$corpus" </dev/null || exit 1
    cargo fuzz run --fuzz-dir tests/fuzz -O "$t" "$corpus" </dev/null -- \
        -max_total_time="$SECS" -runs="$RUNS" -rss_limit_mb=1024 -malloc_limit_mb=1024 -timeout=10 \
        -print_final_stats=1 > "$OUT/$t.log" 2>&1
    status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log" | tail -1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$OUT/$t.log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$OUT/$t.log" | tail -1)
    found=0
    if [ -d "tests/fuzz/artifacts/$t" ]; then
        mkdir -p "tests/data/fuzz/$t"
        for f in tests/fuzz/artifacts/"$t"/*; do
            [ -f "$f" ] || continue
            cp "$f" "tests/data/fuzz/$t/" && found=$((found + 1))
        done
    fi
    [ "$status" -ne 0 ] && failed=1
    echo "$t: ${execs:-0} executions in ${took:-$SECS} s, peak RSS ${rss:-?} MB, $found new failing input(s), exit $status" \
        | tee -a "$OUT/summary.txt"
done
exit $failed
