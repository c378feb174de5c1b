#!/usr/bin/env bash
# On the GPU machine: tests and times the variants that scripts/ab-pack.sh built and packed into
# build-carry/ab.tar.xz, in one run (the only fair comparison: clocks and neighbours change between
# runs). Carry `.gpu-deps.tar.xz` and `build-carry` (run tool: carry [".gpu-deps.tar.xz", "build-carry"]).
#
#   1. the attention tests (the packed test binary) against every variant but A (all of them with
#      ENCORE_AB_TEST_A=1), and with ENCORE_AB_SANITIZE=1 compute-sanitizer memcheck and racecheck
#      on those same variants (ENCORE_AB_SANITIZER_FILTER, default the Hopper kernel's tests but
#      ManyBlocks);
#   2. ENCORE_AB_ROUNDS rounds (3): each variant's benchmark in turn, each round starting one
#      variant later, then, with ENCORE_AB_SDPA=1, tools/bench/sdpa_prefill.py (torch SDPA at the
#      same shapes);
#   3. (steps 1 and 2 are bounded by ENCORE_AB_TIMEOUT seconds per command, 240)
#   4. a summary, printed last so that the end of the output holds every verdict: the tests and
#      sanitizers, the median per case and variant with each variant / A and the runs, SDPA medians.
# Environment: ENCORE_AB_FILTER (--benchmark_filter; default the f16 graph replays of the
# automatic path), ENCORE_AB_TEST_FILTER (gtest filter). Logs go to $OUT/gpu-ab (or /tmp/gpu-ab).
# Exit status: 1 when a test or sanitizer run of a variant failed, else 0.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
logs=${OUT:-/tmp}/gpu-ab
mkdir -p "$logs"
[ -f build-carry/ab.tar.xz ] || { echo "gpu-ab-carried: no build-carry/ab.tar.xz (scripts/ab-pack.sh)"; exit 2; }
deps=/tmp/encore-gpu-deps
if [ -f .gpu-deps.tar.xz ] && [ ! -d "$deps/.gpu-deps" ]; then
  if ! { mkdir -p "$deps" && tar -C "$deps" -xJf .gpu-deps.tar.xz; }; then
    echo "gpu-ab-carried: cannot unpack .gpu-deps.tar.xz"
    exit 2
  fi
fi
ab=/tmp/encore-ab
rm -rf "$ab"
if ! { mkdir -p "$ab" && tar -C "$ab" -xJf build-carry/ab.tar.xz; }; then
  echo "gpu-ab-carried: cannot unpack build-carry/ab.tar.xz"
  exit 2
fi
libs=$deps/.gpu-deps/usr/lib/x86_64-linux-gnu:/usr/local/cuda/lib64
variants=$(ls "$ab/lib")
bench="" test_bin=""
for f in "$ab"/bin/*; do  # one benchmark binary and at most one test binary (ab-pack.sh's targets)
  case ${f##*/} in bench_*) bench=${f##*/} ;; *) test_bin=${f##*/} ;; esac
done
[ -n "$bench" ] || { echo "gpu-ab-carried: no bench_* binary in the pack"; exit 2; }
filter=${ENCORE_AB_FILTER:-'BM_CudaAttention/B:(1|32)/T:(197|1024)/bf16:0/path:0/graph:1/D:(64|128)'}
verdicts=()
failed=0

run_with() {  # VARIANT CMD...: CMD with that variant's library first on the search path
  local v=$1
  shift
  LD_LIBRARY_PATH=$ab/lib/$v:$libs "$@"
}

limit=${ENCORE_AB_TIMEOUT:-240}
if [ -n "$test_bin" ]; then
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for v in $variants; do
    [ "$v" = A ] && [ -z "${ENCORE_AB_TEST_A:-}" ] && continue
    run_with "$v" timeout "$limit" "$ab/bin/$test_bin" ${ENCORE_AB_TEST_FILTER:+"--gtest_filter=$ENCORE_AB_TEST_FILTER"} \
      >"$logs/test-$v.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || failed=1
    verdicts+=("test $v ($test_bin): rc $rc, $(grep -E '^\[  (PASSED|SKIPPED) *\] [0-9]+ test|^\[  FAILED  \] ' "$logs/test-$v.log" | tr '\n' ' ')")
    [ -n "${ENCORE_AB_SANITIZE:-}" ] || continue
    for tool in memcheck racecheck; do
      run_with "$v" timeout "$limit" "$san" --tool "$tool" --error-exitcode 9 "$ab/bin/$test_bin" \
        --gtest_filter="${ENCORE_AB_SANITIZER_FILTER:-CudaAttentionHopper.*-*ManyBlocks*}" >"$logs/sanitize-$tool-$v.log" 2>&1
      rc=$?
      [ $rc -eq 0 ] || failed=1
      verdicts+=("$tool $v: rc $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) ' "$logs/sanitize-$tool-$v.log" | tr '\n' ' ')")
    done
  done
fi

rounds=${ENCORE_AB_ROUNDS:-3}
mapfile -t order < <(ls "$ab/lib")
for ((r = 1; r <= rounds; ++r)); do
  for ((i = 0; i < ${#order[@]}; ++i)); do  # round r starts with variant r - 1 (drift shows as order)
    v=${order[$(((i + r - 1) % ${#order[@]}))]}
    run_with "$v" timeout "$limit" "$ab/bin/$bench" --benchmark_filter="$filter" --benchmark_format=csv \
      >"$logs/round$r-$v.csv" 2>"$logs/round$r-$v.err" || verdicts+=("bench $v round $r failed")
  done
  if [ -n "${ENCORE_AB_SDPA:-}" ]; then
    timeout "$limit" python3 tools/bench/sdpa_prefill.py >"$logs/sdpa$r.jsonl" 2>"$logs/sdpa$r.err" ||
      verdicts+=("sdpa round $r failed")
  fi
done

python3 tools/bench/ab_table.py "$logs"
for v in "${verdicts[@]}"; do echo "$v"; done
exit $failed
