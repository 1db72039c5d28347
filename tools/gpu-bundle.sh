#!/usr/bin/env bash
# Makes build/gpu-bundle/ (git-ignored): what tests/gpu/run-all.sh needs on the GPU machine, whose
# Ubuntu 24.04 userland lacks the libraries our Debian 12 build links (absl, yaml-cpp, ...):
#   bin/gpuwarden   the release binary, stripped
#   lib/*.so*       its shared libraries from ldd, except glibc's own (libc, libm, libpthread,
#                   libdl, librt, libresolv, libutil, ld-linux: the host's newer glibc must be
#                   used) and the NVIDIA driver's (libcuda, libnvidia-ml: always the host's)
#   bin/runc        when runc is installed here (the GPU machine has no OCI runtime)
#   bin/warden-sandbox-shim, bin/warden-sandbox-launcher  the sandbox executor's helpers, found
#                   next to the binary (tests/gpu/agent_jobs_gpu.sh runs the agent with them)
#   gpuwarden       wrapper: LD_LIBRARY_PATH=lib, exec bin/gpuwarden
# Refuses to finish above 60 MiB. Then checks the wrapper with a clean environment: it must
# start, and `agent scrub` on this GPU-less machine must fail with the clear libcuda error.
# Usage: tools/gpu-bundle.sh [BUILD_DIR]   (default build/release; builds gpuwarden if needed)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build/release}"
OUTDIR="$ROOT/build/gpu-bundle"
LIMIT_MIB=60

SHIM="$BUILD/src/runtime/warden-sandbox-shim"
LAUNCHER="$BUILD/src/runtime/warden-sandbox-launcher"
if [ ! -x "$BUILD/gpuwarden" ] || [ ! -x "$SHIM" ] || [ ! -x "$LAUNCHER" ]; then
  (cd "$ROOT" && cmake --build "$BUILD" --target gpuwarden warden-sandbox-shim warden-sandbox-launcher -j2)
fi
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR/bin" "$OUTDIR/lib"
cp "$BUILD/gpuwarden" "$OUTDIR/bin/gpuwarden"
cp "$SHIM" "$LAUNCHER" "$OUTDIR/bin/"
strip --strip-unneeded "$OUTDIR/bin/gpuwarden" "$OUTDIR/bin/warden-sandbox-shim" "$OUTDIR/bin/warden-sandbox-launcher"

excluded='^(libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl|libnss_[a-z]+|ld-linux-x86-64|ld-linux|libcuda|libnvidia-ml)\.so'
RUNC="$(command -v runc || true)"
{ ldd "$BUILD/gpuwarden"; { ldd "$SHIM" 2>/dev/null || true; }; [ -n "$RUNC" ] && ldd "$RUNC" 2>/dev/null; true; } |
  awk '/=> \// {print $1, $3}' | sort -u | while read -r name path; do
  if [[ "$name" =~ $excluded ]]; then continue; fi
  cp -L "$path" "$OUTDIR/lib/$name"
  strip --strip-unneeded "$OUTDIR/lib/$name" 2>/dev/null || true
done

if [ -n "$RUNC" ]; then
  cp -L "$RUNC" "$OUTDIR/bin/runc"
fi

cat >"$OUTDIR/gpuwarden" <<'SH'
#!/bin/sh
# gpuwarden with its bundled libraries (tools/gpu-bundle.sh).
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$here/bin/gpuwarden" "$@"
SH
chmod 755 "$OUTDIR/gpuwarden"

size_kib=$(du -sk "$OUTDIR" | cut -f1)
echo "gpu-bundle: $OUTDIR, $((size_kib / 1024)) MiB: $(ls "$OUTDIR/lib" | wc -l) libraries$( [ -x "$OUTDIR/bin/runc" ] && echo ', runc')"
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "gpu-bundle: larger than $LIMIT_MIB MiB" >&2
  exit 1
fi

# Self-check with a clean environment (no LD_LIBRARY_PATH from the caller).
env -i PATH=/usr/bin:/bin "$OUTDIR/gpuwarden" --version >/dev/null
if env -i PATH=/usr/bin:/bin "$OUTDIR/bin/gpuwarden" --version >/dev/null 2>&1; then
  : # the host has the libraries anyway (this machine); on the GPU machine only the wrapper works
fi
if ! ldconfig -p | grep -q 'libcuda\.so\.1'; then
  set +e
  msg="$(env -i PATH=/usr/bin:/bin "$OUTDIR/gpuwarden" agent scrub --uuid GPU-00000000-0000-0000-0000-000000000000 -o json 2>/dev/null)"
  rc=$?
  set -e
  if [ "$rc" != 1 ] || ! grep -q 'libcuda.so.1 not found' <<<"$msg"; then
    echo "gpu-bundle: expected the clear missing-libcuda error (exit 1), got exit $rc: $msg" >&2
    exit 1
  fi
  echo "gpu-bundle: missing libcuda gives: $msg"
fi
echo "gpu-bundle: ok"
