#!/usr/bin/env bash
# Sandbox overhead vs `runc run` of the same bundle (bench/RESULTS.md "Sandbox").
# Usage: bench/sandbox/run.sh BUILD_DIR [RUNS]   (root, runc and busybox-static installed)
set -euo pipefail
BUILD_DIR="${1:-build/release}"
RUNS="${2:-100}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
command -v runc >/dev/null || { echo "runc not installed (tools/install-deps.sh)"; exit 1; }
bash "$ROOT/tools/build-busybox-rootfs.sh" "$DIR/bb" >/dev/null
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg), $(runc --version | head -1)"
"$BUILD_DIR/bench/sandbox/sandbox_bench" "$BUILD_DIR/src/runtime/warden-sandbox-shim" "$DIR/bb/oci" "$RUNS"
