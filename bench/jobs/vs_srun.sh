#!/usr/bin/env bash
# Submit-to-running latency, gpuwarden against `srun` on a local Slurm (issue 7, must-show 4):
# same command (`sh -c 'date +%s%N'`), same machine, same run. Slurm is started by
# tools/slurm-start.sh (its own munged, slurmctld and slurmd, default scheduling settings).
#   [EXECUTOR=process|sandbox] bash bench/jobs/vs_srun.sh build/release/gpuwarden [N]
# srun: one job at a time (srun waits for the job), latency = the job's printed start time minus
# the time just before `srun` was exec'd. gpuwarden: bench/jobs/submit_to_running.sh with one job
# at a time too (GAP seconds apart, default 0.5), each job reserving one CPU (srun's default), with
# the process executor and, as root with runc, the sandbox executor.
# Slurm runs twice, before and after ours, so a load change during the run shows.
set -euo pipefail
BIN="$1"
N="${2:-100}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SDIR="$(mktemp -d /tmp/gw-slurm.XXXXXX)"
trap 'bash "$ROOT/tools/slurm-stop.sh" "$SDIR"' EXIT
export SLURM_CONF
SLURM_CONF="$(bash "$ROOT/tools/slurm-start.sh" "$SDIR" | sed -n 's/^SLURM_CONF=//p')"
pctl() {  # FILE P -> the P-th percentile of the numbers in FILE
  local n; n="$(wc -l < "$1")"
  sort -n "$1" | sed -n "$(( ($2 * n + 99) / 100 ))p"
}
srun_batch() {
  : > "$SDIR/srun-$1"
  for _ in $(seq 1 "$N"); do
    t0="$(date +%s%N)"
    out="$(srun -n1 sh -c 'date +%s%N')"
    echo $(( (out - t0) / 1000000 )) >> "$SDIR/srun-$1"
  done
  echo "srun ($1): p50 $(pctl "$SDIR/srun-$1" 50) ms  p99 $(pctl "$SDIR/srun-$1" 99) ms"
}
srun -n1 true  # warm up: first job after start pays for slurmd's first contact
srun_batch before
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
declare -A P50 P99
EXECUTORS="process"
# sandbox: every job starts a container (cold); sandbox-prepared: the agents keep one prepared
# sandbox per recently run (tenant, image) (--prepared-sandboxes 1), so after each agent's first
# job of the tenant the job is handed to a waiting sandbox.
if [ "$(id -u)" = 0 ] && command -v runc > /dev/null; then EXECUTORS="process sandbox sandbox-prepared"; fi
for ex in $EXECUTORS; do
  # One job at a time (GAP), as srun runs them.
  prepared=0
  executor="$ex"
  if [ "$ex" = sandbox-prepared ]; then prepared=1; executor=sandbox; fi
  OURS="$(EXECUTOR=$executor PREPARED=$prepared GAP="${GAP:-0.5}" bash "$HERE/submit_to_running.sh" "$BIN" "$N" 5s)"
  echo "$OURS"
  P50[$ex]="$(echo "$OURS" | sed -n 's/^submit-to-running ms: p50 \([0-9]*\).*/\1/p')"
  P99[$ex]="$(echo "$OURS" | sed -n 's/^submit-to-running ms:.* p99 \([0-9]*\).*/\1/p')"
done
srun_batch after
cat "$SDIR/srun-before" "$SDIR/srun-after" > "$SDIR/srun-all"
S50="$(pctl "$SDIR/srun-all" 50)"
S99="$(pctl "$SDIR/srun-all" 99)"
for ex in $EXECUTORS; do
  echo "gpuwarden ($ex executor) / srun: p50 ${P50[$ex]} / $S50 ms = $(ratio "${P50[$ex]}" "$S50")," \
    "p99 ${P99[$ex]} / $S99 ms = $(ratio "${P99[$ex]}" "$S99") (target <= 1x)"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
