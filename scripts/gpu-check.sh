#!/usr/bin/env bash
# One command on the GPU machine: builds encore with CUDA (Release, Ninja) into build-gpu, runs the
# CUDA tests and the whole suite, compute-sanitizer memcheck and racecheck on the CUDA test binaries
# (tests/backends/cuda/cuda_test_* and the fused decoder step's tests/models/test_vit_gpt2_fused),
# the GPU benchmarks (bench_cuda_*), the captioning benchmark beside Hugging Face eager
# (encore-bench caption, tools/bench/caption_peers.py), and prints a summary table last. Logs go to $OUT/gpu-check when
# OUT is set, else to build-gpu/gpu-check-logs.
#
# Dependencies: the system's, or the tree made by scripts/gpu-deps.sh: ENCORE_DEPS_PREFIX=<dir>
# (an unpacked .gpu-deps or a .gpu-deps.tar.xz); without it, a .gpu-deps.tar.xz or .gpu-deps/ in the
# repository root is used when present. Needs cmake, a C++20 compiler and the CUDA toolkit
# (nvcc on PATH or in /usr/local/cuda/bin).
#
# Environment: ENCORE_BUILD_JOBS (16), ENCORE_GPU_BUILD_DIR (build-gpu), ENCORE_GPU_CHECK_STEPS
# (default "build test sanitize bench caption"; "configure" alone only configures), ENCORE_SANITIZER_FILTER (gtest filter for the sanitizer
# runs), ENCORE_SANITIZER_SHARDS (gtest shards run at once per binary and tool, 10; `per-test`: one
# per test, at most 16),
# ENCORE_SANITIZER_TIMEOUT (seconds per shard, 900), ENCORE_SANITIZER_TOOLS
# ("memcheck racecheck"), ENCORE_SANITIZER_BINARIES (name substrings; default all), ENCORE_BENCH_MIN_TIME
# (0.05), ENCORE_BENCH_FILTER (regex of bench_cuda_* names to run; default all), ENCORE_CAPTION_ITERS (10),
# ENCORE_TEST_LABELS ("cuda all": the ctest runs, `cuda` = the CUDA-labelled tests, `all` = everything),
# ENCORE_CAPTION_PEERS (1: also time Hugging Face eager; 0: encore only).
# Exit status: 0 when the build, every test and every sanitizer run are clean.
set -uo pipefail  # not -e: every step runs and is reported
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)
build=${ENCORE_GPU_BUILD_DIR:-build-gpu}
jobs=${ENCORE_BUILD_JOBS:-16}
steps=${ENCORE_GPU_CHECK_STEPS:-build test sanitize bench caption}
san_timeout=${ENCORE_SANITIZER_TIMEOUT:-900}
# Some tests provoke a CUDA error on purpose, which the sanitizer would report: failing cudaMallocs
# (*OutOfMemory*) and cooperative launches too large to be co-resident (*GridCannotLaunch*: lean's
# fallback to split, the fused decoder step's fallback to the graph).
# Decode attention's LongContexts runs the accuracy cases' kernels over caches of up to 300k tokens,
# hours under either tool.
san_filter=${ENCORE_SANITIZER_FILTER:--*OutOfMemory*:*GridCannotLaunch*:*LongContexts*}
san_shards=${ENCORE_SANITIZER_SHARDS:-10}
per_test=0  # "per-test": one shard per test of the binary (at most 16), for binaries of few long tests
if [ "$san_shards" = per-test ]; then per_test=1 san_shards=1
else
  case $san_shards in '' | *[!0-9]*) san_shards=0 ;; *) san_shards=$((10#$san_shards)) ;; esac
  [ "$san_shards" -ge 1 ] || { echo "gpu-check: ENCORE_SANITIZER_SHARDS must be a positive integer or per-test, got '${ENCORE_SANITIZER_SHARDS:-}'"; exit 2; }
fi
pids=()  # running sanitizer shards, stopped if the script is interrupted
trap '[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null' EXIT
trap 'exit 130' INT TERM
san_tools=${ENCORE_SANITIZER_TOOLS:-memcheck racecheck}
san_binaries=${ENCORE_SANITIZER_BINARIES:-}  # e.g. "attention decode": test binaries whose names contain one
bench_min_time=${ENCORE_BENCH_MIN_TIME:-0.05}
if [ -n "${OUT:-}" ]; then logs=$OUT/gpu-check; else logs=$root/$build/gpu-check-logs; fi
mkdir -p "$logs"

summary=()  # "step|result|detail" rows for the final table
add() { summary+=("$1|$2|$3"); }
has_step() { case " $steps " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
log() { echo "gpu-check: $*" | tee -a "$logs/gpu-check.log"; }
failed=0

# ---- dependencies -----------------------------------------------------------------------------------
deps=${ENCORE_DEPS_PREFIX:-}
if [ -z "$deps" ]; then
  if [ -f "$root/.gpu-deps.tar.xz" ]; then deps=$root/.gpu-deps.tar.xz
  elif [ -d "$root/.gpu-deps" ]; then deps=$root/.gpu-deps
  fi
fi
if [ -n "$deps" ] && [ -f "$deps" ]; then  # a tarball: unpack once into /tmp
  unpack=/tmp/encore-gpu-deps
  stamp=$(cksum <"$deps" | cut -d' ' -f1)
  if [ "$(cat "$unpack/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$unpack" && mkdir -p "$unpack"
    tar -C "$unpack" -xJf "$deps" || { log "cannot unpack $deps"; exit 2; }
    echo "$stamp" >"$unpack/.stamp"
  fi
  deps=$unpack/.gpu-deps
fi
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DENCORE_WITH_CUDA=ON)
if [ -n "$deps" ]; then
  [ -d "$deps/usr" ] || { log "ENCORE_DEPS_PREFIX=$deps has no usr/ (not a gpu-deps tree)"; exit 2; }
  deps=$(cd "$deps" && pwd)
  lib=$deps/usr/lib/x86_64-linux-gnu
  # Explicit package dirs: a non-Debian host does not search lib/<multiarch>/cmake by itself.
  cmake_args+=("-DCMAKE_PREFIX_PATH=$deps/usr;$lib" "-DCMAKE_LIBRARY_PATH=$lib" "-DCMAKE_INCLUDE_PATH=$deps/usr/include"
    "-DOpenCL_LIBRARY=$lib/libOpenCL.so" "-DOpenCL_INCLUDE_DIR=$deps/usr/include")
  for pkg in dnnl fmt GTest benchmark nlohmann_json Eigen3; do
    cfg=$(find "$deps/usr" \( -name "${pkg}Config.cmake" -o -name "${pkg}-config.cmake" \) 2>/dev/null | head -n 1)
    [ -n "$cfg" ] && cmake_args+=("-D${pkg}_DIR=$(dirname "$cfg")")
  done
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$deps/usr/bin:$PATH"
  log "dependencies from $deps (needs $(cat "$deps/GLIBC_REQUIRED" 2>/dev/null || echo '?'); this host has $(ldd --version 2>/dev/null | head -n 1 | grep -o '[0-9.]*$'))"
fi
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
generator=Ninja
command -v ninja >/dev/null || generator="Unix Makefiles"
for tool in cmake nvcc; do command -v "$tool" >/dev/null || { log "$tool not found"; exit 2; }; done

{
  echo "== host"; uname -a; ldd --version 2>/dev/null | head -n 1
  echo "== nvidia-smi"; nvidia-smi 2>&1 || true
  echo "== nvcc"; nvcc --version
  echo "== cmake"; cmake --version | head -n 1
} >"$logs/environment.log" 2>&1
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
log "GPU: ${gpu:-none found by nvidia-smi}; logs in $logs"

# ---- (a) configure and build ----------------------------------------------------------------------
built=1
if has_step configure && ! has_step build; then
  log "configure only ($generator) into $build"
  if cmake -S . -B "$build" -G "$generator" "${cmake_args[@]}" >"$logs/configure.log" 2>&1; then add configure ok "$build"
  else failed=1; add configure FAILED "see configure.log"; fi
fi
if has_step build; then
  log "configure + build ($generator, -j$jobs) into $build"
  if cmake -S . -B "$build" -G "$generator" "${cmake_args[@]}" >"$logs/configure.log" 2>&1 &&
     cmake --build "$build" -j "$jobs" >"$logs/build.log" 2>&1; then
    add build ok "$(grep -c 'Building' "$logs/build.log") compile steps"
  else
    built=0 failed=1
    add build FAILED "see build.log / configure.log: $(grep -m1 -E 'error|Error' "$logs/build.log" "$logs/configure.log" 2>/dev/null | cut -c1-120)"
  fi
fi

# ---- (b) tests ------------------------------------------------------------------------------------
# "X% tests passed, F tests failed out of T" plus the skipped count, from a ctest log.
ctest_counts() {
  local total failed skipped
  # "100% tests passed, 0 tests failed out of N" (older ctest) or "100% tests passed out of N".
  total=$(grep -oE 'tests (passed|failed) out of [0-9]+' "$1" | grep -oE '[0-9]+$' | tail -n 1)
  failed=$(grep -oE '[0-9]+ tests failed out of' "$1" | grep -oE '^[0-9]+' | tail -n 1)
  skipped=$(grep -cE '\*\*\*Skipped|Skipped +[0-9.]+ sec' "$1")
  echo "${total:-0} ${failed:-0} ${skipped:-0}"
}
if has_step test && [ "$built" -eq 1 ]; then
  for label in ${ENCORE_TEST_LABELS:-cuda all}; do
    log "ctest ($label)"
    if [ "$label" = cuda ]; then args=(-L cuda -j 4); else args=(-j 8); fi
    ctest --test-dir "$build" --output-on-failure "${args[@]}" >"$logs/ctest-$label.log" 2>&1
    rc=$?
    read -r total nfail skipped < <(ctest_counts "$logs/ctest-$label.log")
    detail="$((total - nfail - skipped)) passed, $nfail failed, $skipped skipped of $total"
    if [ "$rc" -eq 0 ] && [ "$total" -gt 0 ]; then add "tests ($label)" ok "$detail"
    else failed=1; add "tests ($label)" FAILED "$detail (ctest-$label.log)"; fi
  done
fi

# ---- (c) compute-sanitizer ----------------------------------------------------------------------
if has_step sanitize && [ "$built" -eq 1 ]; then
  sanitizer=$(command -v compute-sanitizer || true)
  [ -n "$sanitizer" ] || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && sanitizer=/usr/local/cuda/bin/compute-sanitizer; }
  if [ -z "$sanitizer" ]; then
    add sanitizer skipped "compute-sanitizer not found"
  else
    for bin in "$build"/tests/backends/cuda/cuda_test_* "$build"/tests/models/test_vit_gpt2_fused; do
      [ -x "$bin" ] || continue
      name=$(basename "$bin")
      if [ -n "$san_binaries" ]; then  # only the named binaries (substrings)
        pick=0
        for want in $san_binaries; do case "$name" in *"$want"*) pick=1 ;; esac; done
        [ "$pick" -eq 1 ] || continue
      fi
      if [ "$per_test" -eq 1 ]; then
        san_shards=$("$bin" --gtest_list_tests "--gtest_filter=$san_filter" 2>/dev/null | grep -c '^  ')
        [ "$san_shards" -ge 1 ] || san_shards=1
        [ "$san_shards" -le 16 ] || san_shards=16
      fi
      for tool in $san_tools; do
        # The binary's tests are cut into gtest shards, one sanitizer process each, all at once:
        # the tools are bound by the host CPU, so shards finish what one process could not.
        log "compute-sanitizer --tool $tool $name ($san_shards shards)"
        # memcheck: caching off, so that every buffer has its own allocation and overruns are caught.
        nocache=0
        [ "$tool" = memcheck ] && nocache=1
        pids=()
        for ((i = 0; i < san_shards; ++i)); do
          GTEST_TOTAL_SHARDS=$san_shards GTEST_SHARD_INDEX=$i ENCORE_CUDA_NO_CACHING=$nocache \
            timeout -k 30 "$san_timeout" "$sanitizer" --tool "$tool" --error-exitcode 99 \
            "$bin" --gtest_brief=1 "--gtest_filter=$san_filter" >"$logs/sanitizer-$tool-$name-$i.log" 2>&1 &
          pids+=($!)
        done
        errors=0 dirty="" timeouts="" failures="" host_only=0
        for ((i = 0; i < san_shards; ++i)); do
          wait "${pids[$i]}"
          rc=$?
          out="$logs/sanitizer-$tool-$name-$i.log"
          e=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$out" | grep -oE '[0-9]+$' | tail -n 1)
          # A shard that never touched the GPU (no test in it, or host-only tests) ends with exit
          # 255 and no summary; it counts as clean only if none of its tests failed (gtest's brief
          # output prints the PASSED line even when some failed).
          if [ "$rc" -eq 255 ] && [ -z "$e" ] && grep -q '^\[  PASSED  \]' "$out" &&
             ! grep -q '^\[  FAILED  \]' "$out"; then
            rc=0 host_only=$((host_only + 1))
          fi
          [ -n "$e" ] && errors=$((errors + e))
          case "$rc" in
            0) ;;
            99) dirty+=" $i" ;;
            124 | 137) timeouts+=" $i" ;;
            *) failures+=" $i(exit $rc)" ;;
          esac
        done
        pids=()
        detail=""
        [ -n "$failures" ] && detail+="failed shards$failures; "
        [ -n "$timeouts" ] && detail+="shards$timeouts over ${san_timeout}s; "
        [ -n "$dirty" ] && detail+="errors in shards$dirty; "
        detail+="$errors errors"
        [ "$host_only" -gt 0 ] && detail+=", $host_only of $san_shards shards never used the GPU"
        detail+=" (sanitizer-$tool-$name-*.log)"
        if [ -n "$failures" ]; then failed=1; add "$tool $name" FAILED "$detail"
        elif [ -n "$timeouts" ]; then failed=1; add "$tool $name" TIMEOUT "$detail"
        elif [ -n "$dirty" ]; then failed=1; add "$tool $name" DIRTY "$detail"
        else add "$tool $name" clean "$detail"; fi
      done
    done
  fi
fi

# ---- (d) GPU benchmarks ------------------------------------------------------------------------
if has_step bench && [ "$built" -eq 1 ]; then
  for bin in "$build"/benchmarks/bench_cuda_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    [[ "$name" =~ ${ENCORE_BENCH_FILTER:-.} ]] || continue
    log "benchmark $name"
    if "$bin" "--benchmark_min_time=$bench_min_time" "--benchmark_out=$logs/$name.json" \
         --benchmark_out_format=json >"$logs/$name.log" 2>&1; then
      key=$(grep -m1 'worst encore/cublasLt ratio' "$logs/$name.log")
      vit=$(grep -m1 '^f16 M=197 K=768 N=2304 ' "$logs/$name.log" | awk '{printf "ViT qkv f16: %s us (cublasLt %s)", $5, $6}')
      # bench_cuda_fused_step: the batch-1 step, fused and as a graph
      [ -n "$key$vit" ] || key=$(grep -E 'BM_DecodeStep/fused:[01]/images:1/beams:1/' "$logs/$name.log" |
        awk '{printf "%s%s %s us", (NR > 1 ? ", " : "step b1: "), $NF, $2}')
      add "bench $name" ok "${key:-see $name.log}${vit:+; $vit}"
    else
      add "bench $name" FAILED "see $name.log"
    fi
  done
fi

# ---- (e) captioning end to end: encore-bench vs Hugging Face eager, same weights -------------------
# Needs python3 with torch + transformers (the GPU machine has them); the random ViT-B/16 + GPT-2
# small is made by the peer script (save_pretrained) so both load identical weights.
if has_step caption && [ "$built" -eq 1 ]; then
  model=${ENCORE_CAPTION_MODEL:-/tmp/encore-bench-models/vit-b16-gpt2-base}
  bench=$build/benchmarks/cli/encore-bench
  iters=${ENCORE_CAPTION_ITERS:-10}
  if ! python3 -c 'import torch, transformers' 2>/dev/null; then
    add caption skipped "python3 without torch/transformers"
  elif [ ! -x "$bench" ]; then
    failed=1; add caption FAILED "no $bench"
  else
    [ -f "$model/config.json" ] ||
      python3 tools/bench/caption_peers.py --make-model "$model" --size base >"$logs/caption-make-model.log" 2>&1
    ok=1
    for dt in f32 f16; do
      for shape in "1 1" "1 4" "8 1" "8 4"; do
        read -r b k <<<"$shape"
        tag=$dt-b$b-k$k
        log "caption $tag"
        "$bench" caption --model "$model" --device cuda --dtype "$dt" --batch "$b" --beams "$k" --new-tokens 16 \
          --warmup 2 --iters "$iters" --json "$logs/caption-encore-$tag.json" >"$logs/caption-encore-$tag.log" 2>&1 || ok=0
        hf_dt=fp32; [ "$dt" = f16 ] && hf_dt=fp16
        [ "${ENCORE_CAPTION_PEERS:-1}" = 1 ] || continue
        python3 tools/bench/caption_peers.py --model "$model" --engine torch --device cuda --dtype "$hf_dt" --batch "$b" \
          --beams "$k" --new-tokens 16 --iters "$iters" --json "$logs/caption-hf-$tag.json" >"$logs/caption-hf-$tag.log" 2>&1 || ok=0
      done
    done
    python3 tools/bench/caption_table.py "$logs"/caption-*.json >"$logs/caption-table.md" 2>&1 || ok=0
    if [ "$ok" -eq 1 ]; then add caption ok "see caption-table.md"
    else failed=1; add caption FAILED "see caption-*.log"; fi
  fi
fi

# ---- (f) summary ----------------------------------------------------------------------------------
{
  echo
  echo "==================== gpu-check summary (${gpu:-no GPU}) ===================="
  printf '%-44s %-8s %s\n' "step" "result" "detail"
  for row in "${summary[@]}"; do
    IFS='|' read -r step result detail <<<"$row"
    printf '%-44s %-8s %s\n' "$step" "$result" "$detail"
  done
  echo "logs: $logs"
  if [ "$failed" -eq 0 ]; then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
} | tee "$logs/summary.txt"
exit "$failed"
