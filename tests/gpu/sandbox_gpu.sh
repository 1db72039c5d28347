#!/usr/bin/env bash
# Job sandbox on a real GPU machine (issue 7, invariant 6): runs a job confined to ONE GPU with the
# runtime's runner over runc and checks from inside the job that
#   - /dev lists exactly that GPU's node (plus nvidiactl / nvidia-uvm), no other /dev/nvidiaN;
#   - CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES are exactly that GPU's UUID;
#   - open() of its own node succeeds and open() of every other GPU node fails;
# and that a job with no GPU sees no /dev/nvidia* at all and gets empty/void visibility variables.
# Uses the `host` image (the host root read-only), so busybox is not needed there.
#
# Needs (carried by the lead; the machine has no runc and no internet):
#   RUNC        path to a runc binary            (default: runc in PATH, else ./runc)
#   WARDEN_BIN  release build dir with tests/runtime/sandbox_run and src/runtime/warden-sandbox-shim
#               (default: build/release)
#   OUT         results directory (default: /tmp/sandbox-gpu-out)
#   GPU_DEV     where the device nodes are (default /dev; a dry run elsewhere may point it at fakes)
#   NVIDIA_SMI  nvidia-smi command (default nvidia-smi)
# Root, pure cgroup v2 or hybrid, driver loaded (/dev/nvidia0 ...), nvidia-smi. Under 2 minutes.
set -euo pipefail

OUT="${OUT:-/tmp/sandbox-gpu-out}"
GPU_DEV="${GPU_DEV:-/dev}"
NVIDIA_SMI="${NVIDIA_SMI:-nvidia-smi}"
WARDEN_BIN="${WARDEN_BIN:-build/release}"
mkdir -p "$OUT"
SUMMARY="$OUT/sandbox_gpu_summary.txt"
: >"$SUMMARY"
fail=0
say() { echo "$*" | tee -a "$SUMMARY"; }
check() {  # check NAME CONDITION-EXIT-CODE
  if [ "$2" -eq 0 ]; then say "PASS $1"; else say "FAIL $1"; fail=1; fi
}
die() { say "ERROR $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (runc with user namespaces and cgroups)"
RUNC="${RUNC:-$(command -v runc || true)}"
[ -n "$RUNC" ] || RUNC="./runc"
[ -x "$RUNC" ] || die "no runc binary (set RUNC=/path/to/runc)"
RUNC="$(cd "$(dirname "$RUNC")" && pwd)/$(basename "$RUNC")"
SANDBOX_RUN="$WARDEN_BIN/tests/runtime/sandbox_run"
SHIM="$WARDEN_BIN/src/runtime/warden-sandbox-shim"
[ -x "$SANDBOX_RUN" ] || die "missing $SANDBOX_RUN (build target sandbox_run)"
[ -x "$SHIM" ] || die "missing $SHIM (build target warden-sandbox-shim)"
SHIM="$(cd "$(dirname "$SHIM")" && pwd)/$(basename "$SHIM")"
command -v "$NVIDIA_SMI" >/dev/null || die "nvidia-smi not found"

say "machine: $(uname -r), $("$NVIDIA_SMI" --query-gpu=name,driver_version --format=csv,noheader | head -1)"
say "cgroups: $(stat -fc %T /sys/fs/cgroup)  runc: $("$RUNC" --version | head -1)"

# GPU minor number -> UUID, from nvidia-smi -q ("Minor Number" and "GPU UUID" per GPU).
mapfile -t PAIRS < <("$NVIDIA_SMI" -q | awk -F': ' '/^GPU [0-9A-Fa-f]+:/{uuid="";minor=""} /GPU UUID/{uuid=$2} /Minor Number/{minor=$2} uuid!="" && minor!=""{print minor" "uuid; uuid=""; minor=""}')
[ "${#PAIRS[@]}" -ge 1 ] || die "nvidia-smi -q listed no GPU with a minor number"
read -r MINOR UUID <<<"${PAIRS[0]}"
NODE="/dev/nvidia$MINOR"
[ -c "$GPU_DEV/nvidia$MINOR" ] || die "$GPU_DEV/nvidia$MINOR is not a character device"
say "assigned GPU: $NODE $UUID (of ${#PAIRS[@]} GPUs; nodes: $(ls "$GPU_DEV" | grep -E '^nvidia[0-9]+$' | tr '\n' ' '))"

STATE="$(mktemp -d /var/tmp/warden-gpu-state.XXXXXX)"
chmod 711 "$STATE"
trap 'rm -rf "$STATE"' EXIT

# Inside the job (host image: the host's /bin/sh, ls, env).
PROBE='ls /dev | grep -E "^nvidia" | tr "\n" " "; echo
echo "CUDA=[$CUDA_VISIBLE_DEVICES]"
echo "NVIDIA=[$NVIDIA_VISIBLE_DEVICES]"
for n in /dev/nvidia[0-9]*; do if [ -e "$n" ]; then if (exec 3<"$n") 2>/dev/null; then echo "open $n ok"; else echo "open $n fail"; fi; fi; done
for m in $OTHER_MINORS; do if (exec 3</dev/nvidia$m) 2>/dev/null; then echo "open /dev/nvidia$m OK-UNEXPECTED"; else echo "open /dev/nvidia$m fail"; fi; done
echo probe-done'
OTHERS=""
for p in "${PAIRS[@]}"; do m="${p%% *}"; [ "$m" = "$MINOR" ] || OTHERS="$OTHERS $m"; done
# The other GPUs' minors, plus two that exist on no machine, so the loop always probes something.
OTHERS="$OTHERS $((MINOR + 1)) 63"

set +e
timeout 60 "$SANDBOX_RUN" --state "$STATE" --shim "$SHIM" --runtime "$RUNC" --host-dev "$GPU_DEV" --tenant gputest \
  --job gpu-confined --image host --gpu "$UUID=$NODE" --env "OTHER_MINORS=$OTHERS" --wall-s 30 \
  -- /bin/sh -c "$PROBE" >"$OUT/job_gpu.out" 2>"$OUT/job_gpu.err"
rc=$?
set -e
cat "$OUT/job_gpu.out" "$OUT/job_gpu.err" >>"$SUMMARY"
check "confined job ran (rc=$rc)" "$([ $rc -eq 0 ] && grep -q probe-done "$OUT/job_gpu.out"; echo $?)"
first_line="$(head -1 "$OUT/job_gpu.out")"
nodes_ok=1
for n in $first_line; do
  case "$n" in
    "nvidia$MINOR"|nvidiactl|nvidia-uvm) ;;
    *) nodes_ok=0 ;;
  esac
done
echo "$first_line" | grep -qw "nvidia$MINOR" || nodes_ok=0
check "job's /dev lists only nvidia$MINOR (+nvidiactl, nvidia-uvm): [$first_line]" "$([ $nodes_ok -eq 1 ]; echo $?)"
check "CUDA_VISIBLE_DEVICES is exactly $UUID" "$(grep -qx "CUDA=\[$UUID\]" "$OUT/job_gpu.out"; echo $?)"
check "NVIDIA_VISIBLE_DEVICES is exactly $UUID" "$(grep -qx "NVIDIA=\[$UUID\]" "$OUT/job_gpu.out"; echo $?)"
check "open($NODE) succeeds inside" "$(grep -qx "open $NODE ok" "$OUT/job_gpu.out"; echo $?)"
check "open() of every other GPU node fails" \
  "$(! grep -q 'OK-UNEXPECTED' "$OUT/job_gpu.out" && [ "$(grep -c '^open /dev/nvidia[0-9]* fail' "$OUT/job_gpu.out")" -ge 2 ]; echo $?)"

set +e
timeout 60 "$SANDBOX_RUN" --state "$STATE" --shim "$SHIM" --runtime "$RUNC" --host-dev "$GPU_DEV" --tenant gputest \
  --job gpu-none --image host --wall-s 30 \
  -- /bin/sh -c 'echo "n=$(ls /dev | grep -c nvidia)"; echo "CUDA=[$CUDA_VISIBLE_DEVICES]"; echo "NVIDIA=[$NVIDIA_VISIBLE_DEVICES]"' \
  >"$OUT/job_nogpu.out" 2>"$OUT/job_nogpu.err"
rc=$?
set -e
cat "$OUT/job_nogpu.out" "$OUT/job_nogpu.err" >>"$SUMMARY"
check "job without GPU ran (rc=$rc)" "$([ $rc -eq 0 ]; echo $?)"
check "job without GPU sees no /dev/nvidia*" "$(grep -qx 'n=0' "$OUT/job_nogpu.out"; echo $?)"
check "job without GPU: CUDA_VISIBLE_DEVICES empty, NVIDIA_VISIBLE_DEVICES=void" \
  "$(grep -qx 'CUDA=\[\]' "$OUT/job_nogpu.out" && grep -qx 'NVIDIA=\[void\]' "$OUT/job_nogpu.out"; echo $?)"

if [ $fail -eq 0 ]; then say "sandbox_gpu: ALL PASS"; else say "sandbox_gpu: FAILURES (see $OUT)"; fi
exit $fail
