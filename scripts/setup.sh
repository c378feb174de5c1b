#!/usr/bin/env bash
# Installs encore's build dependencies from Debian's packages (idempotent: installs only what is
# missing). Needs root or sudo. CUDA is optional and comes from /usr/local/cuda when present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev libeigen3-dev libfmt-dev nlohmann-json3-dev libstb-dev
  googletest libgtest-dev libbenchmark-dev
  # Debian's oneDNN CMake package requires OpenCL's (it is built with the OpenCL GPU runtime);
  # libdnnl-dev only recommends it, and recommends are not installed below.
  ocl-icd-opencl-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all build dependencies are installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
# Through env: sudo resets the environment, so an exported variable would not reach apt-get.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
