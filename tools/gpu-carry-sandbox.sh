#!/usr/bin/env bash
# Packs what tests/gpu/sandbox_gpu.sh and runtime_runc_test need on the GPU machine (Ubuntu 24.04,
# no runc, no busybox-static, different Abseil) into build/gpu-carry, for the device runner's
# `carry`. Run after building the release targets sandbox_run, warden-sandbox-shim,
# warden-sandbox-launcher, runtime_runc_test and escape-helper. Then, on the GPU machine, from the repository root:
#
#   C=$PWD/build/gpu-carry; export PATH=$C:$PATH LD_LIBRARY_PATH=$C/lib
#   RUNC=$C/runc WARDEN_BIN=$C OUT=$OUT bash tests/gpu/sandbox_gpu.sh
#   BUSYBOX=$C/busybox WARDEN_SHIM_PATH=$C/src/runtime/warden-sandbox-shim \
#     WARDEN_LAUNCHER_PATH=$C/src/runtime/warden-sandbox-launcher \
#     WARDEN_ESCAPE_HELPER=$C/tests/runtime/escape-helper $C/tests/runtime/runtime_runc_test
set -euo pipefail
B="${1:-build/release}"
C=build/gpu-carry
rm -rf "$C"
mkdir -p "$C/tests/runtime" "$C/src/runtime" "$C/lib"
cp "$B/tests/runtime/sandbox_run" "$B/tests/runtime/runtime_runc_test" "$B/tests/runtime/escape-helper" "$C/tests/runtime/"
cp "$B/src/runtime/warden-sandbox-shim" "$B/src/runtime/warden-sandbox-launcher" "$C/src/runtime/"
strip "$C/tests/runtime/sandbox_run" "$C/tests/runtime/runtime_runc_test" "$C/src/runtime/warden-sandbox-shim"
# What build/gpu-bundle (tools/gpu-bundle.sh) already holds, runc and shared libraries, is not
# copied twice (both folders travel to the GPU machine within one 64 MiB limit): their names go
# to from-bundle.list and tests/gpu/run-all.sh copies them over from the bundle there.
BUNDLE=build/gpu-bundle
: >"$C/from-bundle.list"
if [ -x "$BUNDLE/bin/runc" ]; then echo "bin/runc runc" >>"$C/from-bundle.list"; else cp "$(command -v runc)" "$C/runc"; fi
# crun and bubblewrap too: this build machine's hybrid cgroups keep crun from running here, so
# the GPU machine's pure v2 is where runtime_runc_test's Crun* paths run.
CRUN="$(command -v crun || true)"
BWRAP="$(command -v bwrap || true)"
[ -n "$CRUN" ] && cp "$CRUN" "$C/crun"
[ -n "$BWRAP" ] && cp "$BWRAP" "$C/bwrap"
cp /bin/busybox "$C/busybox"
# Shared libraries Ubuntu 24.04 lacks or has in other versions (glibc and libstdc++ there are newer).
for l in $(ldd "$B/tests/runtime/sandbox_run" "$B/tests/runtime/runtime_runc_test" "$(command -v runc)" $CRUN $BWRAP | awk '/=>/{print $3}' | sort -u); do
  case "$(basename "$l")" in
    libc.so*|libm.so*|libpthread*|libdl*|librt*|ld-linux*|libstdc++*|libgcc_s*) ;;
    *) if [ -e "$BUNDLE/lib/$(basename "$l")" ]; then
         echo "lib/$(basename "$l") lib/$(basename "$l")" >>"$C/from-bundle.list"
       else
         cp -L "$l" "$C/lib/"
       fi ;;
  esac
done
du -sh "$C"
