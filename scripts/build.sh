#!/usr/bin/env bash
# Configures and builds encore (Release, Ninja) into ./build. Extra arguments go to cmake's
# configure step, e.g. scripts/build.sh -DENCORE_WITH_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${ENCORE_BUILD_JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$jobs"
