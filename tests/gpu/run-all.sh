#!/usr/bin/env bash
# The GPU machine's test driver (issue 7): ONE script the lead runs there with the `run` tool,
# from a copy of the repo root with build/gpu-bundle carried (made here by tools/gpu-bundle.sh:
# gpuwarden is built on Debian 12, the GPU machine is Ubuntu 24.04 without our libraries).
#
#   1. tests/gpu/nvml_inventory.sh        NVML inventory vs nvidia-smi, field by field
#   2. scrub GPU 0 (`gpuwarden agent scrub`, >= 90% of free memory, pattern + zero pass, verify
#      kernel) and a plain cudaMemset of the same bytes (tests/gpu/cuda/memset_peer.cu) for the
#      bandwidth ratio
#   3. residue across two "tenants" (two processes, two uids when setpriv allows): a writer fills
#      memory with a pattern and exits; (a) a reader right away, WITHOUT the scrub; (b) writer
#      again, process check + scrub, reader; plus a one-process control showing whether the
#      reader's count can see residue at all. Reported as measured, whatever it shows.
#   4. tests/gpu/sandbox_gpu.sh if present (another branch writes it), skipped cleanly otherwise
#  4b. the runtime's runc tests (tests/runtime/runtime_runc_test from build/gpu-carry): every
#      sandbox and escape test on the cold and the prepared path, on this machine's cgroup v2
#   4c. tests/gpu/agent_jobs_gpu.sh: the real server and agent (nvml, sandbox executor, runc) run
#      two tenants' GPU jobs through the CLI: exact UUID and node, CUDA inside the sandbox, the
#      agent's handoff scrub between the writer and the reader, no residue, a job without GPUs
#   5. tests/gpu/mig_check.sh: one 1g MIG instance created and destroyed through our NVML backend
#      vs `nvidia-smi mig -lgi` ("MIG disabled, skipped" when MIG is off, as on the lent H200)
#
# Results: $OUT/summary.json, $OUT/run-all.log, $OUT/detail.tar.gz (every log and JSON; few files
# because the run tool brings back only a handful). Exit 0 only when every check that ran
# passed. Never changes MIG mode, never resets a GPU. Finishes in well under 5 minutes on an H200.
# Usage: tests/gpu/run-all.sh   (env: OUT, WARDEN_GPU_BUNDLE=build/gpu-bundle, NVCC, GPU_INDEX=0)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/gpu-run-all.XXXXXX)}"
mkdir -p "$OUT"
RES="$OUT/detail"   # every log and JSON; packed into $OUT/detail.tar.gz at the end
mkdir -p "$RES"
BUNDLE="${WARDEN_GPU_BUNDLE:-$ROOT/build/gpu-bundle}"
BIN="$BUNDLE/gpuwarden"
NVCC="${NVCC:-/usr/local/cuda/bin/nvcc}"
GPU_INDEX="${GPU_INDEX:-0}"
PATTERN=0x7E5A1D0F
FRACTION=0.90
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run-all.log"; }
declare -A RESULT

[ -x "$BIN" ] || { log "no bundle at $BUNDLE: run tools/gpu-bundle.sh on the build machine and carry build/gpu-bundle"; exit 2; }
command -v nvidia-smi >/dev/null || { log "nvidia-smi not found: not a GPU machine"; exit 2; }
"$BIN" --version >"$RES/version.txt" 2>&1 || { log "the bundled gpuwarden does not start:"; cat "$RES/version.txt" | tee -a "$OUT/run-all.log"; exit 2; }
nvidia-smi >"$RES/nvidia-smi.txt" 2>&1
nvidia-smi -q >"$RES/nvidia-smi-q.txt" 2>&1
UUID="$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$GPU_INDEX" | tr -d ' ')"
log "GPU $GPU_INDEX: $UUID ($(nvidia-smi --query-gpu=name,driver_version,mig.mode.current --format=csv,noheader -i "$GPU_INDEX"))"

# ---- build the CUDA helpers (in the background while the inventory check runs) ---------------
CUDA_BIN="$RES/cuda-bin"
mkdir -p "$CUDA_BIN"
( "$NVCC" -O2 -arch=sm_90 -o "$CUDA_BIN/memset_peer" "$ROOT/tests/gpu/cuda/memset_peer.cu" &&
  "$NVCC" -O2 -arch=sm_90 -o "$CUDA_BIN/residue" "$ROOT/tests/gpu/cuda/residue.cu" ) \
  >"$RES/nvcc.log" 2>&1 &
NVCC_PID=$!

# The verify kernel's PTX through ptxas when the toolkit has it (a diagnostic: the scrub JITs
# the same text through the driver).
"$BIN" agent scrub --print-ptx >"$RES/verify.ptx"
if [ -x /usr/local/cuda/bin/ptxas ]; then
  /usr/local/cuda/bin/ptxas -arch=sm_90 -v "$RES/verify.ptx" -o "$RES/verify.cubin" >"$RES/ptxas.log" 2>&1
  RESULT[ptxas]=$?
  log "ptxas sm_90 on the verify kernel: exit ${RESULT[ptxas]} ($(tr '\n' ' ' <"$RES/ptxas.log" | cut -c1-200))"
fi

# ---- 1. NVML inventory -------------------------------------------------------------------------
log "1. nvml_inventory.sh"
timeout 120 bash "$ROOT/tests/gpu/nvml_inventory.sh" "$BUNDLE" >"$RES/nvml_inventory.log" 2>&1
RESULT[nvml_inventory]=$?
tail -1 "$RES/nvml_inventory.log" | tee -a "$OUT/run-all.log"
"$BIN" agent --inventory --gpus nvml >"$RES/inventory.json" 2>>"$OUT/run-all.log"

wait "$NVCC_PID"
NVCC_RC=$?
[ "$NVCC_RC" = 0 ] || { log "nvcc failed (see nvcc.log); the peer and residue steps are skipped"; }

# A device is free when NVML lists no compute process on it (the handoff's process check; the
# scrub command itself is what the agent runs after it).
procs_on() { nvidia-smi --query-compute-apps=pid --format=csv,noheader -i "$GPU_INDEX" | grep -c . ; }

# ---- 2. scrub + bandwidth peer ---------------------------------------------------------------
log "2. scrub $UUID (>= 90% of free memory) and cudaMemset peer"
timeout 180 "$BIN" agent scrub --uuid "$UUID" -o json --min-fraction 0.90 >"$RES/scrub.json" 2>"$RES/scrub.log"
RESULT[scrub]=$?
cat "$RES/scrub.json" | tee -a "$OUT/run-all.log"
SCRUB_BYTES="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("scrubbed_bytes",0))' "$RES/scrub.json" 2>/dev/null || echo 0)"
# Text form too, for the log (a second scrub: also shows it repeats cleanly).
timeout 180 "$BIN" agent scrub --uuid "$UUID" >"$RES/scrub-text.log" 2>&1
RESULT[scrub_again]=$?
if [ "$NVCC_RC" = 0 ] && [ "$SCRUB_BYTES" != 0 ]; then
  timeout 120 "$CUDA_BIN/memset_peer" "$SCRUB_BYTES" >"$RES/memset_peer.json" 2>>"$OUT/run-all.log"
  RESULT[memset_peer]=$?
  cat "$RES/memset_peer.json" | tee -a "$OUT/run-all.log"
fi

# ---- 3. residue across two tenants -----------------------------------------------------------
# Two uids when setpriv can switch (device nodes are usually 0666); root otherwise (noted).
TENANT_A=() TENANT_B=() TENANTS="root/root"
if command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
  TENANT_A=(setpriv --reuid=65533 --regid=65533 --clear-groups)
  TENANT_B=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  TENANTS="uid 65533 / uid 65534"
fi
if [ "$NVCC_RC" = 0 ]; then
  log "3. residue test (tenants: $TENANTS)"
  # A world-readable copy: $OUT's parents may be closed to the tenants' uids.
  RDIR="$(mktemp -d /tmp/warden-residue.XXXXXX)"
  chmod 755 "$RDIR"
  cp "$CUDA_BIN/residue" "$RDIR/residue"
  R="$RDIR/residue"
  # (a) without the scrub
  timeout 60 "${TENANT_A[@]}" "$R" write $FRACTION $PATTERN >"$RES/residue-write-1.json" 2>&1
  timeout 60 "${TENANT_B[@]}" "$R" read $FRACTION $PATTERN >"$RES/residue-read-noscrub.json" 2>&1
  RESULT[residue_noscrub_ran]=$?
  # (b) with the handoff: process check, scrub, then the reader
  timeout 60 "${TENANT_A[@]}" "$R" write $FRACTION $PATTERN >"$RES/residue-write-2.json" 2>&1
  LEFT="$(procs_on)"
  echo "{\"processes_left\":$LEFT}" >"$RES/residue-process-check.json"
  # The agent's own handoff: NVML process check, `agent scrub` as a child process, process
  # check again, state file in the data dir.
  mkdir -p "$RES/agent-data"
  timeout 240 "$BIN" agent handoff --data-dir "$RES/agent-data" --gpus nvml --uuid "$UUID" -o json \
    >"$RES/residue-scrub.json" 2>>"$OUT/run-all.log"
  RESULT[residue_scrub]=$?
  cp "$RES/agent-data/gpu-handoff.json" "$RES/gpu-handoff-state.json" 2>/dev/null
  timeout 60 "${TENANT_B[@]}" "$R" read $FRACTION $PATTERN >"$RES/residue-read-scrubbed.json" 2>&1
  RESULT[residue_scrubbed_ran]=$?
  # (c) control: one process, fill / free / allocate again
  timeout 60 "$R" control $FRACTION $PATTERN >"$RES/residue-control.json" 2>&1
  for f in residue-write-1 residue-read-noscrub residue-write-2 residue-process-check residue-scrub residue-read-scrubbed residue-control; do
    echo "$f: $(cat "$RES/$f.json")" | tee -a "$OUT/run-all.log"
  done
fi

# ---- 4. sandbox (another branch) -------------------------------------------------------------
# Its interface (main, issue 7 sandbox branch): RUNC, WARDEN_BIN = a dir holding
# tests/runtime/sandbox_run and src/runtime/warden-sandbox-shim, OUT; the libraries and runc come
# from build/gpu-carry (tools/gpu-carry-sandbox.sh), which must be carried too.
CARRY="${WARDEN_GPU_CARRY:-$ROOT/build/gpu-carry}"
# runc and the shared libraries the bundle already has travel once, in the bundle
# (gpu-carry-sandbox.sh lists them): copied into the carry here.
if [ -f "$CARRY/from-bundle.list" ]; then
  while read -r from to; do cp -n "$BUNDLE/$from" "$CARRY/$to"; done <"$CARRY/from-bundle.list"
fi
CARRY_RUNC="$CARRY/runc"
if [ ! -f "$ROOT/tests/gpu/sandbox_gpu.sh" ]; then
  log "4. tests/gpu/sandbox_gpu.sh absent: skipped"
elif [ ! -x "$CARRY/tests/runtime/sandbox_run" ]; then
  log "4. tests/gpu/sandbox_gpu.sh present but $CARRY is not (run tools/gpu-carry-sandbox.sh and carry build/gpu-carry): skipped"
else
  log "4. sandbox_gpu.sh"
  PATH="$CARRY:$PATH" LD_LIBRARY_PATH="$CARRY/lib" RUNC="$CARRY_RUNC" WARDEN_BIN="$CARRY" \
    OUT="$RES/sandbox" timeout 150 bash "$ROOT/tests/gpu/sandbox_gpu.sh" >"$RES/sandbox_gpu.log" 2>&1
  RESULT[sandbox_gpu]=$?
  tail -3 "$RES/sandbox_gpu.log" | tee -a "$OUT/run-all.log"
fi

# ---- 4b. the runtime's runc tests on this machine's cgroups (pure v2 here, hybrid on the build
# machine): every sandbox and escape test on both the cold and the prepared path, including the
# prepared sandbox's hand-over (limits written into its cgroup, then the job exec'd) --------------
if [ ! -x "$CARRY/tests/runtime/runtime_runc_test" ]; then
  log "4b. runtime_runc_test: $CARRY is not carried (tools/gpu-carry-sandbox.sh): skipped"
else
  log "4b. runtime_runc_test (cold and prepared paths, $(stat -fc %T /sys/fs/cgroup))"
  PATH="$CARRY:$PATH" LD_LIBRARY_PATH="$CARRY/lib" BUSYBOX="$CARRY/busybox" \
    WARDEN_SHIM_PATH="$CARRY/src/runtime/warden-sandbox-shim" \
    WARDEN_LAUNCHER_PATH="$CARRY/src/runtime/warden-sandbox-launcher" \
    WARDEN_ESCAPE_HELPER="$CARRY/tests/runtime/escape-helper" \
    timeout 240 "$CARRY/tests/runtime/runtime_runc_test" >"$RES/runtime_runc_test.log" 2>&1
  RESULT[runtime_runc_test]=$?
  grep -E "^\[  (PASSED|FAILED|SKIPPED) \]" "$RES/runtime_runc_test.log" | head -20 | tee -a "$OUT/run-all.log"
fi

# ---- 4c. two tenants' GPU jobs through the real server and agent ------------------------------
if [ "$NVCC_RC" != 0 ]; then
  log "4c. agent_jobs_gpu.sh: no residue binary (nvcc failed): skipped"
elif [ ! -x "$BUNDLE/bin/warden-sandbox-shim" ] || [ ! -x "$BUNDLE/bin/runc" ]; then
  log "4c. agent_jobs_gpu.sh: the bundle has no shim or runc (rebuild it with tools/gpu-bundle.sh): skipped"
else
  log "4c. agent_jobs_gpu.sh (server + agent --gpus nvml --executor sandbox, two tenants)"
  timeout 200 bash "$ROOT/tests/gpu/agent_jobs_gpu.sh" "$BUNDLE" "$CUDA_BIN/residue" "$RES/agent-jobs" \
    >"$RES/agent_jobs_gpu.log" 2>&1
  RESULT[agent_jobs]=$?
  grep -E '^\[e2e' "$RES/agent_jobs_gpu.log" | tail -8 | cut -c1-600 | tee -a "$OUT/run-all.log"
  tail -16 "$RES/agent_jobs_gpu.log" | grep -v '^\[e2e' | tee -a "$OUT/run-all.log"
fi

# ---- 5. MIG instance create/destroy (issue 6): skips with "MIG disabled, skipped" unless MIG is
# already on (this driver never turns it on) -------------------------------------------------
log "5. mig_check.sh"
timeout 120 bash "$ROOT/tests/gpu/mig_check.sh" "$BUNDLE" >"$RES/mig_check.log" 2>&1
RESULT[mig_check]=$?
tail -3 "$RES/mig_check.log" | tee -a "$OUT/run-all.log"

# ---- summary ---------------------------------------------------------------------------------
RC_JSON="{"
for k in "${!RESULT[@]}"; do RC_JSON+="\"$k\":${RESULT[$k]},"; done
RC_JSON="${RC_JSON%,}}"
python3 - "$RES" "$RC_JSON" "$UUID" "$TENANTS" "$(( $(date +%s) - START ))" <<'PY' | tee -a "$OUT/run-all.log"
import json, os, sys
out, rcs, uuid, tenants, secs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"missing": str(e)}
s = {"gpu_uuid": uuid, "seconds": secs, "exit_codes": rcs, "tenants": tenants,
     "scrub": load("scrub.json"), "memset_peer": load("memset_peer.json")}
sc, pe = s["scrub"], s["memset_peer"]
if sc.get("write_gbps") and pe.get("gbps"):
    s["scrub_fill_vs_cudamemset"] = round(sc["write_gbps"] / pe["gbps"], 3)
    s["scrub_verify_vs_cudamemset"] = round(sc["verify_gbps"] / pe["gbps"], 3)
s["residue"] = {k: load(f"residue-{k}.json") for k in
                ["write-1", "read-noscrub", "write-2", "process-check", "scrub", "read-scrubbed", "control"]}
checks = {
    "nvml_inventory": rcs.get("nvml_inventory") == 0,
    "scrub_passed": rcs.get("scrub") == 0 and sc.get("passed") is True,
    "scrub_covers_90pct_of_free": sc.get("fraction_of_free", 0) >= 0.90,
    "scrub_repeats": rcs.get("scrub_again") == 0,
}
r = s["residue"]
ctl = r["control"]
if "filled_words" in ctl:
    checks["reader_counts_pattern_words"] = ctl["filled_pattern_words_counted"] == ctl["filled_words"] > 0
if "ptxas" in rcs:
    checks["ptxas"] = rcs["ptxas"] == 0
if "pattern_words" in r["read-scrubbed"]:
    checks["no_residue_after_scrub"] = r["read-scrubbed"]["pattern_words"] == 0 and rcs.get("residue_scrub") == 0
    checks["no_process_left_before_scrub"] = r["process-check"].get("processes_left") == 0
if "sandbox_gpu" in rcs:
    checks["sandbox_gpu"] = rcs["sandbox_gpu"] == 0
if "runtime_runc_test" in rcs:
    checks["runtime_runc_test"] = rcs["runtime_runc_test"] == 0
if "agent_jobs" in rcs:
    checks["agent_jobs"] = rcs["agent_jobs"] == 0
    s["agent_jobs"] = load("agent-jobs/agent_jobs.json")
s["checks"] = checks
s["passed"] = all(checks.values())
s["notes"] = ("read-noscrub shows what a second tenant saw with NO scrub (the driver may zero fresh "
              "allocations itself); control shows whether the count can see residue at all.")
json.dump(s, open(os.path.join(out, "..", "summary.json"), "w"), indent=2)
print(json.dumps({"checks": checks, "passed": s["passed"],
                  "ratios": {k: s.get(k) for k in ["scrub_fill_vs_cudamemset", "scrub_verify_vs_cudamemset"]},
                  "residue_noscrub": r["read-noscrub"], "residue_scrubbed": r["read-scrubbed"],
                  "residue_control": r["control"]}, indent=1))
sys.exit(0 if s["passed"] else 1)
PY
RC=${PIPESTATUS[0]}
tar czf "$OUT/detail.tar.gz" -C "$OUT" --exclude=cuda-bin detail && rm -rf "$RES"
exit $RC
