#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang-16, ASan + UBSan) and runs each on its seed
# corpus (tests/fuzz/corpus/TARGET, copied: the committed corpus is not changed) for its share of
# MOEBENCH_FUZZ_SECONDS (default 60 in total). Fails on any crash, leak, timeout or sanitizer
# report, keeping the input that caused it under build/fuzz/findings/. Prints executions per target.
#   tests/fuzz/run_fuzz.sh [--no-build]
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ "${1:-}" != --no-build ]; then
  cmake --preset fuzz > build-fuzz-configure.log 2>&1 || { cat build-fuzz-configure.log; exit 1; }
  rm -f build-fuzz-configure.log
  cmake --build --preset fuzz -j "$(nproc)" || exit 1
fi
bin=$root/build/fuzz/tests/fuzz
findings=$root/build/fuzz/findings
mkdir -p "$findings"
targets=(import_csv import_jsonl import_megatron import_npy trace_reader config)
total=${MOEBENCH_FUZZ_SECONDS:-60}
per=$(( total / ${#targets[@]} )); [ "$per" -ge 2 ] || per=2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export HDF5_USE_FILE_LOCKING=FALSE
failed=0
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  cp "$root/tests/fuzz/corpus/$t/"* "$work/"
  log=$findings/$t.log
  "$bin/fuzz_$t" -max_total_time="$per" -seed=1 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/$t-" "$work" > "$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions; input: $(ls "$findings/$t-"* 2>/dev/null | head -1)"
    grep -E "ERROR|SUMMARY|runtime error|#[0-9]+ 0x" "$log" | head -20
  else
    echo "fuzz $t: ${execs:-?} executions in ${per}s, no crash (corpus $(ls "$work" | wc -l) inputs)"
  fi
  rm -rf "$work"
done
[ "$failed" -eq 0 ]
