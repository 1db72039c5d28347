#!/usr/bin/env bash
# Two tenants' GPU jobs end to end (issue 7): the real server (SQLite) and one real agent with
# `--gpus nvml --executor sandbox --oci-runtime runc` on this machine; jobs go in through the CLI
# as each tenant's developer, run in the sandbox on the host image, and the agent's verified
# handoff sits between them. Checks, from the jobs' own output and the agent's log:
#   1. tenant alpha's GPU job sees exactly its GPU: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES
#      are the UUID, /dev holds that GPU's node (plus nvidiactl, nvidia-uvm) and no other nvidiaN,
#      and CUDA works inside the sandbox: it fills FRACTION of free memory with a pattern and exits;
#   2. the agent hands the GPU off after it (process check, scrub, verify: "GPU handoff UUID:
#      available; scrubbed N bytes") BEFORE tenant beta's job on the same GPU starts;
#   3. beta's job, same GPU, another uid range, reads FRACTION of free memory: 0 pattern words;
#   4. a job without GPUs sees no /dev/nvidia* and gets "" / "void";
#   5. the two tenants' jobs ran under different host uids (their user namespaces' maps).
# Usage: tests/gpu/agent_jobs_gpu.sh BUNDLE RESIDUE OUTDIR
#   BUNDLE   build/gpu-bundle (tools/gpu-bundle.sh: gpuwarden, the sandbox shim and launcher, runc)
#   RESIDUE  tests/gpu/cuda/residue built with nvcc (a stand-in printing the same JSON works for a
#            dry run with GPUS=sim:1xH100-80GB on a machine without a GPU)
#   env      GPUS=nvml (default) | sim:SPEC, PORT=28443 (and PORT+1 for the agents)
# Exit 0 when every check passed; OUTDIR/agent_jobs.json holds the checks and what the jobs
# printed, OUTDIR/*.log the server's and agent's logs. About a minute on an H200.
set -uo pipefail
BUNDLE="$(cd "${1:?bundle dir}" && pwd)"
RESIDUE_SRC="${2:?residue binary}"
OUTDIR="${3:?output dir}"
GPUS="${GPUS:-nvml}"
PORT="${PORT:-28443}"
PATTERN=0x7E5A1D0F
FRACTION=0.90
BIN="$BUNDLE/gpuwarden"
mkdir -p "$OUTDIR"
START=$(date +%s)
log() { echo "[e2e $(( $(date +%s) - START ))s] $*" | tee -a "$OUTDIR/agent_jobs.log"; }
die() { log "ERROR: $*"; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (the sandbox: user namespaces, cgroups)"
[ -x "$BIN" ] || die "no $BIN (tools/gpu-bundle.sh)"
# The sandbox's per-tenant users must traverse down to the agent's data dir and the residue
# binary; /var/tmp is on the host image (the job's /tmp is its own tmpfs).
W="$(mktemp -d /var/tmp/warden-gpu-e2e.XXXXXX)"
chmod 711 "$W"
cp "$RESIDUE_SRC" "$W/residue"
chmod 755 "$W/residue"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  cp "$W"/*.log "$OUTDIR/" 2>/dev/null
  cp "$W/agent/gpu-handoff.json" "$OUTDIR/" 2>/dev/null
  rm -rf "$W" 2>/dev/null
}
trap cleanup EXIT

UUID="$("$BIN" agent --inventory --gpus "$GPUS" --name gpu-e2e 2>/dev/null |
  python3 -c 'import json,sys; g=json.load(sys.stdin).get("gpus",[]); print(g[0]["uuid"] if g else "")')"
[ -n "$UUID" ] || die "the $GPUS backend lists no GPU"
log "GPU under test: $UUID (backend $GPUS)"

cat >"$W/config.yaml" <<EOF
listen: 127.0.0.1:$PORT
agent:
  listen: 127.0.0.1:$((PORT + 1))
mfa: {required_for: none}
EOF
head -c 18 /dev/urandom | base64 >"$W/admin.pw"
"$BIN" server --config "$W/config.yaml" --data-dir "$W/state" --admin-password-file "$W/admin.pw" \
  >"$W/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$W/state/server.json" ] && break; sleep 0.1; done
[ -s "$W/state/server.json" ] || die "the server did not start: $(tail -5 "$W/server.log")"
URL="https://127.0.0.1:$PORT"
FP="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_fingerprint"])' "$W/state/server.json")"

as() {  # as NAME CMD...: run the CLI with NAME's login
  local who="$1"; shift
  GPUWARDEN_CONFIG_DIR="$W/cli-$who" "$BIN" "$@"
}
as admin login --server "$URL" --user admin --password-stdin --ca-fingerprint "$FP" <"$W/admin.pw" >/dev/null ||
  die "admin login failed"
for t in alpha beta; do
  as admin tenant create "$t" >/dev/null || die "tenant create $t"
  echo "pw-$t-$RANDOM$RANDOM" >"$W/$t.pw"
  as admin user create "$t-dev" --tenant "$t" --role developer --password-stdin <"$W/$t.pw" >/dev/null ||
    die "user create $t-dev"
  as "$t" login --server "$URL" --user "$t-dev" --password-stdin --ca-fingerprint "$FP" <"$W/$t.pw" >/dev/null ||
    die "login $t-dev"
done
as admin node join-token create --pool gpu --ttl 10m -o json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' >"$W/join-token"

# The agent log with a timestamp per line (the same clock the jobs print), so the order of the
# handoff and the jobs can be checked.
mkdir -p "$W/agent"
PATH="$BUNDLE/bin:$PATH" "$BIN" agent --server "$URL" --join-token "$W/join-token" \
  --data-dir "$W/agent" --gpus "$GPUS" --executor sandbox --oci-runtime runc --name gpu-e2e \
  > >(while IFS= read -r line; do echo "$(date +%s.%N) $line"; done >"$W/agent.log") 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
  as admin node ls -o json 2>/dev/null | grep -q '"status": "ready"' && break
  sleep 0.2
done
as admin node ls -o json | grep -q '"status": "ready"' || die "the agent did not get ready: $(tail -5 "$W/agent.log")"
log "server and agent up ($(grep -c . "$W/agent.log") agent log lines)"

submit() {  # submit TENANT NAME GPUS SCRIPT -> job id
  local gpus=()
  [ "$3" -gt 0 ] && gpus=(--gpus "$3")
  as "$1" job submit -o json --name "$2" "${gpus[@]}" --memory-mib 4096 --time-limit 5m -- sh -c "$4" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
wait_job() {  # wait_job TENANT ID SECONDS -> prints the final state
  local state=""
  for _ in $(seq 1 $(( $3 * 5 ))); do
    state="$(as "$1" job show "$2" -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)"
    case "$state" in done|failed|cancelled) break ;; esac
    sleep 0.2
  done
  echo "$state"
}
# What every job prints first: its start time, the visibility variables, its GPU nodes and the
# host uid its root maps to.
PROBE='echo "T_START=$(date +%s.%N)"; echo "CVD=[$CUDA_VISIBLE_DEVICES]"; echo "NVD=[$NVIDIA_VISIBLE_DEVICES]"; echo "DEV=[$(ls /dev | grep nvidia | tr "\n" " ")]"; echo "UIDMAP=[$(awk "{print \$2}" /proc/self/uid_map | head -1)]"; echo "LD=[$LD_LIBRARY_PATH]";'
R=/var/tmp/$(basename "$W")/residue

declare -A STATE
run_one() {  # run_one TENANT NAME GPUS SCRIPT
  local id
  id="$(submit "$1" "$2" "$3" "$PROBE $4")" || { log "$2: submit failed"; STATE[$2]=submit_failed; return; }
  STATE[$2]="$(wait_job "$1" "$id" 240)"
  as "$1" job show "$id" -o json >"$OUTDIR/$2.show.json" 2>&1
  as "$1" job logs "$id" >"$OUTDIR/$2.out" 2>&1
  as "$1" job logs --stderr "$id" >"$OUTDIR/$2.err" 2>&1
  log "$2 ($1, job $id): ${STATE[$2]}: $(tr '\n' ' ' <"$OUTDIR/$2.out" | cut -c1-400)"
  [ "${STATE[$2]}" = done ] || log "$2 reason: $(grep -o '"reason": "[^"]*"' "$OUTDIR/$2.show.json" | head -1)"
  [ -s "$OUTDIR/$2.err" ] && log "$2 stderr: $(tr '\n' ' ' <"$OUTDIR/$2.err" | cut -c1-300)"
}
run_one alpha writer 1 "$R write $FRACTION $PATTERN; rc=\$?; echo \"T_END=\$(date +%s.%N)\"; exit \$rc"
run_one beta reader 1 "$R read $FRACTION $PATTERN"
run_one beta nogpu 0 "true"
sleep 2  # the handoff after the reader

python3 - "$OUTDIR" "$UUID" "$W/agent.log" "${STATE[writer]}" "${STATE[reader]}" "${STATE[nogpu]}" <<'PY' |
import json, re, sys
out, uuid, agent_log, s_w, s_r, s_n = sys.argv[1:7]
def fields(name):
    f = {}
    for line in open(f"{out}/{name}.out", errors="replace"):
        m = re.match(r"^(T_START|T_END|CVD|NVD|DEV|UIDMAP|LD)=\[?(.*?)\]?$", line.strip())
        if m: f[m.group(1)] = m.group(2).strip()
        elif line.startswith("{"):
            try: f["json"] = json.loads(line)
            except ValueError: pass
    return f
w, r, n = fields("writer"), fields("reader"), fields("nogpu")
def gpu_nodes(dev):
    return sorted(x for x in dev.split() if re.fullmatch(r"nvidia\d+", x))
scrubs = []
for line in open(agent_log, errors="replace"):
    m = re.match(r"^(\d+\.\d+) GPU handoff (\S+): available; scrubbed (\d+) bytes", line)
    if m and m.group(2) == uuid: scrubs.append((float(m.group(1)), int(m.group(3))))
t_end, t_rstart = float(w.get("T_END", 0)), float(r.get("T_START", 0))
between = [s for s in scrubs if t_end and t_rstart and t_end <= s[0] <= t_rstart]
checks = {
    "writer_done": s_w == "done",
    "writer_sees_exactly_its_uuid": w.get("CVD") == uuid and w.get("NVD") == uuid,
    "writer_sees_one_gpu_node": len(gpu_nodes(w.get("DEV", ""))) == 1,
    "writer_cuda_ran_in_sandbox": w.get("json", {}).get("mode") == "write" and w["json"].get("bytes", 0) > 0,
    "handoff_scrub_between_tenants": len(between) >= 1,
    "reader_done": s_r == "done",
    "reader_sees_exactly_its_uuid": r.get("CVD") == uuid and r.get("NVD") == uuid,
    "reader_no_residue": r.get("json", {}).get("pattern_words") == 0 and r["json"].get("bytes", 0) > 0,
    "nogpu_done": s_n == "done",
    "nogpu_sees_no_gpu": n.get("DEV") == "" and n.get("CVD") == "" and n.get("NVD") == "void",
    "tenants_have_different_host_uids": bool(w.get("UIDMAP")) and bool(r.get("UIDMAP")) and w["UIDMAP"] != r["UIDMAP"],
}
executor = [l.split(" ", 1)[1].strip() for l in open(agent_log, errors="replace") if "job executor:" in l]
s = {"gpu_uuid": uuid, "checks": checks, "agent_executor": executor[:1], "passed": all(checks.values()),
     "writer": w, "reader": r, "nogpu": n, "states": [s_w, s_r, s_n],
     "handoff_scrubs": [{"t": t, "bytes": b} for t, b in scrubs], "scrubs_between_writer_and_reader": len(between)}
json.dump(s, open(f"{out}/agent_jobs.json", "w"), indent=1)
print(json.dumps({"checks": checks, "passed": s["passed"], "agent_executor": executor[:1]}, indent=1))
sys.exit(0 if s["passed"] else 1)
PY
tee -a "$OUTDIR/agent_jobs.log"
RC=${PIPESTATUS[0]}
log "done in $(( $(date +%s) - START ))s, exit $RC"
exit "$RC"
