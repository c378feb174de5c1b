#!/usr/bin/env bash
# Prepares encore's third-party build dependencies for a GPU machine that has a compiler, CMake and
# the CUDA toolkit but none of the Debian packages (oneDNN, fmt, nlohmann-json, GoogleTest, Google
# Benchmark, Eigen, stb, OpenCL ICD loader, ninja). Runs HERE, on a Debian 12 machine with apt:
# downloads the .deb files (apt-get download: no root, nothing installed), extracts them with
# dpkg -x into .gpu-deps/ and packs that into .gpu-deps.tar.xz (both git-ignored). Carry the
# tarball to the GPU machine; scripts/gpu-check.sh finds it in the repository root and unpacks it
# into /tmp (or set ENCORE_DEPS_PREFIX to an unpacked tree).
#
# Usage: scripts/gpu-deps.sh            (prints the size of the tree and of the tarball)
set -euo pipefail
cd "$(dirname "$0")/.."

out=.gpu-deps
tarball=.gpu-deps.tar.xz
arch=x86_64-linux-gnu

# Runtime and -dev packages. libgmock-dev: GTest's CMake package also imports gmock. The OpenCL
# headers/loader: Debian's oneDNN is built with the OpenCL GPU runtime, so its CMake package asks
# for OpenCL.
packages=(
  libdnnl2 libdnnl-dev
  libfmt9 libfmt-dev
  nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libbenchmark1debian libbenchmark-dev
  libeigen3-dev
  libstb0 libstb-dev
  ocl-icd-libopencl1 ocl-icd-opencl-dev opencl-c-headers opencl-clhpp-headers
  ninja-build
)

if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "gpu-deps: needs apt-get and dpkg (a Debian 12 machine)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "gpu-deps: downloading ${#packages[@]} packages"
if ! (cd "$tmp" && apt-get download -q "${packages[@]}" >"$tmp/download.log" 2>&1); then
  cat "$tmp/download.log" >&2
  echo "gpu-deps: apt-get download failed (run 'apt-get update' first if the package lists are empty)" >&2
  exit 1
fi

rm -rf "$out" "$tarball"
mkdir -p "$out"
for deb in "$tmp"/*.deb; do
  dpkg -x "$deb" "$out"
  basename "$deb" >>"$out/PACKAGES"
done

# Documentation is not needed to build; absolute symlinks would point into the GPU machine's /usr,
# so they are rewritten relative to the tree.
rm -rf "$out/usr/share/doc" "$out/usr/share/man" "$out/usr/share/lintian" "$out/usr/share/bug"
while IFS= read -r link; do
  target=$(readlink "$link")
  case "$target" in
    /*)
      if [ -e "$out$target" ]; then
        ln -sfn "$(realpath --relative-to="$(dirname "$link")" "$out$target")" "$link"
      else
        echo "gpu-deps: warning: $link -> $target points outside the tree" >&2
      fi
      ;;
  esac
done < <(find "$out" -type l)

# The files encore's CMake looks for.
required=(
  "usr/include/oneapi/dnnl/dnnl.hpp"
  "usr/lib/$arch/libdnnl.so"
  "usr/lib/$arch/cmake/dnnl/dnnl-config.cmake"
  "usr/include/fmt/format.h"
  "usr/lib/$arch/libfmt.so"
  "usr/lib/$arch/cmake/fmt/fmt-config.cmake"
  "usr/include/nlohmann/json.hpp"
  "usr/include/gtest/gtest.h"
  "usr/lib/$arch/libgtest.a"
  "usr/lib/$arch/libgmock.a"
  "usr/lib/$arch/cmake/GTest/GTestConfig.cmake"
  "usr/include/benchmark/benchmark.h"
  "usr/lib/$arch/libbenchmark.so"
  "usr/lib/$arch/libbenchmark_main.a"
  "usr/include/eigen3/Eigen/Core"
  "usr/include/stb/stb_image.h"
  "usr/include/CL/cl.h"
  "usr/lib/$arch/libOpenCL.so"
  "usr/bin/ninja"
)
missing=0
for f in "${required[@]}"; do
  if [ ! -e "$out/$f" ]; then
    echo "gpu-deps: missing $f" >&2
    missing=1
  fi
done
nlohmann_cfg=$(find "$out/usr" -name 'nlohmann_jsonConfig.cmake' | head -n 1)
eigen_cfg=$(find "$out/usr" -name 'Eigen3Config.cmake' | head -n 1)
benchmark_cfg=$(find "$out/usr" -name 'benchmarkConfig.cmake' | head -n 1)
[ -n "$nlohmann_cfg" ] || { echo "gpu-deps: missing nlohmann_jsonConfig.cmake" >&2; missing=1; }
[ -n "$eigen_cfg" ] || { echo "gpu-deps: missing Eigen3Config.cmake" >&2; missing=1; }
[ -n "$benchmark_cfg" ] || { echo "gpu-deps: missing benchmarkConfig.cmake" >&2; missing=1; }
[ "$missing" -eq 0 ] || exit 1

# What the carried shared libraries need from the GPU machine's C library.
glibc_needed=$(find "$out/usr/lib/$arch" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null |
  grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -n 1 || true)
echo "${glibc_needed:-unknown}" >"$out/GLIBC_REQUIRED"

tar -C . -cJf "$tarball" "$out"
echo "gpu-deps: $(wc -l <"$out/PACKAGES") packages in $out ($(du -sh "$out" | cut -f1)), packed into $tarball ($(du -h "$tarball" | cut -f1))"
echo "gpu-deps: the shared libraries need ${glibc_needed:-an unknown glibc} or newer on the GPU machine"
