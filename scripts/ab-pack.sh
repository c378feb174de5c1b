#!/usr/bin/env bash
# Builds libencore once per variant of one source file HERE (a CUDA build with sm_90 code, no GPU
# needed) and packs the libraries with the benchmark and test binaries into build-carry/ab.tar.xz,
# for scripts/gpu-ab-carried.sh on the GPU machine. Compiling the variants there would cost minutes of
# device time per variant; here it costs about two minutes each for the attention kernel.
#
# Usage: scripts/ab-pack.sh FILE [VARIANT...]      (paths relative to the repository root)
#   FILE     a source file of the library (e.g. kernels/cuda/attention_hopper.cu, not a header the
#            binaries include too); the tree's version is variant A
#   VARIANT  a file to build in FILE's place, or REV:PATH (git show), e.g. next/x:kernels/cuda/a.cu;
#            they become variants B, C, ... in order
# Environment: ENCORE_AB_BUILD_DIR (build-lead; configured with CUDA if it does not exist),
# ENCORE_AB_TARGETS (bench_cuda_attention cuda_test_cuda_attention), ENCORE_BUILD_JOBS (nproc).
# FILE is restored at the end, also on failure. Two uncompressed libraries would exceed the run
# tool's 64 MiB carry; packed, each adds about 4 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then sed -n '2,16p' "$0" | grep -v '^set '; exit 2; fi
file=$1
shift
build=${ENCORE_AB_BUILD_DIR:-build-lead}
targets=${ENCORE_AB_TARGETS:-bench_cuda_attention cuda_test_cuda_attention}
jobs=${ENCORE_BUILD_JOBS:-$(nproc)}
[ -f "$file" ] || { echo "ab-pack: FILE $file does not exist" >&2; exit 2; }
[ $# -le 25 ] || { echo "ab-pack: at most 25 variants besides A" >&2; exit 2; }

stage=$(mktemp -d)
saved=$(mktemp)
cp "$file" "$saved"
# (Restored only if it differs, so that an unchanged FILE keeps its mtime and is not recompiled.)
cleanup() { cmp -s "$saved" "$file" || cp "$saved" "$file"; rm -rf "$saved" "$stage"; }
trap cleanup EXIT

# The variants' sources, resolved before anything is built (a REV:PATH that does not exist fails here).
sources=("$saved")
for v in "$@"; do
  src=$(mktemp -p "$stage")
  if [ -f "$v" ]; then cp "$v" "$src"
  elif ! git show "$v" >"$src" 2>/dev/null; then echo "ab-pack: $v is neither a file nor REV:PATH" >&2; exit 2
  fi
  sources+=("$src")
done

if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DENCORE_WITH_CUDA=ON >"$stage/configure.log" ||
    { cat "$stage/configure.log" >&2; exit 1; }
fi
# (The sm_90a kernels' object library exists only in a CUDA build.)
ninja -C "$build" -t targets all 2>/dev/null | grep -q '^encore_cuda_sm90a' ||
  { echo "ab-pack: $build is not a CUDA build with sm_90 code" >&2; exit 1; }
letters=(A B C D E F G H I J K L M N O P Q R S T U V W X Y Z)
mkdir -p "$stage/pack/bin"
for i in "${!sources[@]}"; do
  name=${letters[$i]}
  cmp -s "${sources[$i]}" "$file" || cp "${sources[$i]}" "$file"
  echo "ab-pack: variant $name: building"
  # shellcheck disable=SC2086
  cmake --build "$build" -j "$jobs" --target encore $targets >"$stage/build-$name.log" 2>&1 ||
    { grep -m5 -E 'error' "$stage/build-$name.log" >&2 || true; echo "ab-pack: variant $name does not build" >&2; exit 1; }
  mkdir -p "$stage/pack/lib/$name"
  cp -L "$build/src/libencore.so.0" "$stage/pack/lib/$name/"
done
for t in $targets; do
  bin=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  [ -n "$bin" ] || { echo "ab-pack: no binary for target $t" >&2; exit 1; }
  cp "$bin" "$stage/pack/bin/"
done
mkdir -p build-carry
tar -C "$stage/pack" -cJf build-carry/ab.tar.xz lib bin
echo "ab-pack: build-carry/ab.tar.xz ($(du -h build-carry/ab.tar.xz | cut -f1)): variants ${letters[*]:0:${#sources[@]}}," \
  "binaries: $targets"
