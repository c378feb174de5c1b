#!/usr/bin/env bash
# A/B of one source file on the GPU machine, in one run (the only fair comparison there: clocks and
# neighbours change between runs). Builds a benchmark target with the tree's version of FILE (A),
# then with OTHER in its place (B), and times them in the order A B A B ... A, one benchmark process
# each, so that drift shows up as A against A. FILE is restored at the end (also on failure), and a
# table of the median time per case of A and of B, and B / A, is printed last (tools/bench/ab_table.py).
#
# Usage: scripts/gpu-ab.sh FILE OTHER TARGET [FILTER] [PAIRS]
#   FILE    a source file of the tree, e.g. kernels/cuda/attention_hopper.cu
#   OTHER   the variant, a file copied into the tree before the run (untracked, not ignored, so
#           that it travels), e.g. `git show main:kernels/cuda/attention_hopper.cu > ab-other.cu`
#   TARGET  a benchmark target, e.g. bench_cuda_attention
#   FILTER  --benchmark_filter regex (default: every case)
#   PAIRS   how many B runs, each followed by an A run (default 1: A B A)
# Configuration and dependencies as scripts/gpu-check.sh (it is called with
# ENCORE_GPU_CHECK_STEPS=configure); logs go to $OUT/gpu-ab when OUT is set, else build-gpu/gpu-ab.
# Each swap rebuilds FILE's object and relinks (about a minute for the attention kernel).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ $# -lt 3 ]; then sed -n '2,19p' "$0"; exit 2; fi
file=$1 other=$2 target=$3 filter=${4:-.} pairs=${5:-1}
build=${ENCORE_GPU_BUILD_DIR:-build-gpu}
[ -f "$file" ] || { echo "gpu-ab: FILE $file does not exist"; exit 2; }
[ -f "$other" ] || { echo "gpu-ab: OTHER $other does not exist"; exit 2; }
case $pairs in '' | *[!0-9]*) echo "gpu-ab: PAIRS must be a positive integer, got '$pairs'"; exit 2 ;; esac
[ "$pairs" -ge 1 ] || { echo "gpu-ab: PAIRS must be at least 1"; exit 2; }
if [ -n "${OUT:-}" ]; then logs=$OUT/gpu-ab; else logs=$build/gpu-ab; fi
mkdir -p "$logs"

saved=$(mktemp)
cp "$file" "$saved"
restore() { cp "$saved" "$file"; rm -f "$saved"; }
trap restore EXIT

ENCORE_GPU_BUILD_DIR=$build ENCORE_GPU_CHECK_STEPS=configure bash scripts/gpu-check.sh >"$logs/configure.log" 2>&1 ||
  { echo "gpu-ab: configure failed (see $logs/configure.log)"; exit 1; }
# gpu-check.sh exports its dependency paths only to itself; the libraries of a .gpu-deps tree
# (given, unpacked from the tarball into /tmp, or in the tree) are needed at run time too.
for d in "${ENCORE_DEPS_PREFIX:-}" /tmp/encore-gpu-deps/.gpu-deps .gpu-deps; do
  if [ -n "$d" ] && [ -d "$d/usr/lib/x86_64-linux-gnu" ]; then
    export LD_LIBRARY_PATH=$d/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    break
  fi
done
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH

# build VARIANT: put A or B in place and rebuild the target.
current=""
build_variant() {
  [ "$current" = "$1" ] && return 0
  if [ "$1" = A ]; then cp "$saved" "$file"; else cp "$other" "$file"; fi
  if ! cmake --build "$build" -j "${ENCORE_BUILD_JOBS:-16}" --target "$target" >"$logs/build-$1.log" 2>&1; then
    echo "gpu-ab: building $target with variant $1 failed (see $logs/build-$1.log):"
    grep -m3 -E 'error' "$logs/build-$1.log"
    exit 1
  fi
  current=$1
}

order=(A)
for ((i = 0; i < pairs; ++i)); do order+=(B A); done
n=0
for v in "${order[@]}"; do
  build_variant "$v"
  n=$((n + 1))
  echo "gpu-ab: run $n/${#order[@]}: $v"
  "$build/benchmarks/$target" --benchmark_filter="$filter" --benchmark_format=csv >"$logs/run-$n-$v.csv" 2>"$logs/run-$n-$v.err" ||
    { echo "gpu-ab: $target failed on variant $v (see $logs/run-$n-$v.err)"; exit 1; }
done

python3 tools/bench/ab_table.py "$logs"
