#!/usr/bin/env bash
# The main job on the embedded default. Until training lands this is the
# kernel conformance check of every backend against the reference.
set -euo pipefail
KEEL="${1:-build/keel}"
"$KEEL" info
"$KEEL" verify kernels --backends ref,cpu
