#!/usr/bin/env bash
# Submit-to-running latency through the API (issue 6/7): the real server and two real agents
# (simulated GPUs, --executor $EXECUTOR, default process) on loopback. For each of N jobs the
# client notes the time just before its HTTPS submit, and the job's first act is to print the time
# it started; the latency is the difference (one machine, one clock). Jobs are submitted one after
# another (GAP=SECONDS apart, default none) and each reserves CPU_MILLIS (default 1000).
#   [EXECUTOR=process|sandbox] [PREPARED=N] [GAP=S] [KEEP=DIR] bash bench/jobs/submit_to_running.sh BIN [N] [HEARTBEAT]
# PREPARED: the agents' --prepared-sandboxes (sandbox executor; default 0, every job starts cold).
# Prints p50/p90/p99/max in milliseconds, and the submit request's own share. HEARTBEAT is the
# agents' heartbeat interval (agent.heartbeat_interval; default 500ms); since agents long-poll for
# placements (/agent/v1/nodes/{id}/wait) it no longer bounds the latency.
set -euo pipefail
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
N="${2:-100}"
HB="${3:-500ms}"
EXECUTOR="${EXECUTOR:-process}"
# What each job reserves. The sandbox enforces it as CPU bandwidth (1000 = one CPU, srun's default
# of one CPU per task); the process executor does not limit.
CPU_MILLIS="${CPU_MILLIS:-1000}"
DIR="$(mktemp -d /tmp/gw-bench-jobs.XXXXXX)"
chmod 711 "$DIR"  # the sandbox's per-tenant uids must traverse to their job dirs
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
# KEEP=DIR: copy the server's and agents' logs and curl's timings there before cleaning up.
if [ -n "${KEEP:-}" ]; then
  trap 'mkdir -p "$KEEP"; cp "$DIR"/*.log "$DIR/curl-times" "$KEEP/"; cleanup' EXIT
else
  trap cleanup EXIT
fi
mkdir -p "$DIR/data" && chmod 700 "$DIR/data"
echo "bench-admin-password-0123" > "$DIR/admin.pw"
printf 'listen: 127.0.0.1:0\nmfa: {required_for: none}\nagent:\n  listen: 127.0.0.1:0\n  heartbeat_interval: %s\n' "$HB" > "$DIR/config.yaml"
"$BIN" server --config "$DIR/config.yaml" --data-dir "$DIR/data" --admin-password-file "$DIR/admin.pw" > "$DIR/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do [ -s "$DIR/data/server.json" ] && break; sleep 0.05; done
URL="$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$DIR/data/server.json")"
export GPUWARDEN_CONFIG_DIR="$DIR/cli-admin"
"$BIN" login --server "$URL" --user admin --password-stdin < "$DIR/admin.pw" > /dev/null
"$BIN" tenant create bench > /dev/null
echo "bench-dev-password-0123" | "$BIN" user create dev --tenant bench --role developer --password-stdin > /dev/null
for a in 1 2; do
  "$BIN" node join-token create -o json | sed -n 's/.*"token": "\([^"]*\)".*/\1/p' > "$DIR/token-$a"
  "$BIN" agent --server "$URL" --join-token "$DIR/token-$a" --data-dir "$DIR/agent-$a" \
    --gpus sim:2xH100-80GB --name "bench-$a" --executor "$EXECUTOR" \
    --prepared-sandboxes "${PREPARED:-0}" > "$DIR/agent-$a.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 100); do
  [ "$("$BIN" node ls -o json | grep -c '"status": "ready"')" -ge 2 ] && break
  sleep 0.1
done
export GPUWARDEN_CONFIG_DIR="$DIR/cli-dev"
echo "bench-dev-password-0123" | "$BIN" login --server "$URL" --user dev --password-stdin > /dev/null
TOKEN="$(sed -n 's/.*"token": "\([^"]*\)".*/\1/p' "$DIR/cli-dev/credentials.json" | head -1)"
CA="$DIR/data/pki/ca.crt"
: > "$DIR/submitted"
for i in $(seq 1 "$N"); do
  t0="$(date +%s%N)"
  id="$(curl -sS -w '\n%{time_appconnect} %{time_starttransfer}\n' --cacert "$CA" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary "{\"name\":\"b$i\",\"cpu_millis\":$CPU_MILLIS,\"memory_mib\":64,\"command\":[\"sh\",\"-c\",\"date +%s%N\"]}" \
    "$URL/api/v1/tenants/bench/jobs" | tee -a "$DIR/curl-times" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')"
  echo "$id $t0 $(date +%s%N)" >> "$DIR/submitted"
  [ -n "${GAP:-}" ] && sleep "$GAP"  # GAP=SECONDS: one job at a time, like srun
done
# Wait until every job has ended, then read each one's start time from its output.
for _ in $(seq 1 600); do
  left="$("$BIN" job ls -o json | grep -cE '"state": "(queued|placed|running)"' || true)"
  [ "$left" = "0" ] && break
  sleep 0.2
done
: > "$DIR/latencies"
: > "$DIR/submit-ms"
while read -r id t0 t1; do
  out="$("$BIN" job logs "$id" | head -1)"
  [ -n "$out" ] && echo $(( (out - t0) / 1000000 )) >> "$DIR/latencies"
  echo $(( (t1 - t0) / 1000000 )) >> "$DIR/submit-ms"
done < "$DIR/submitted"
sort -n "$DIR/latencies" > "$DIR/sorted"
COUNT="$(wc -l < "$DIR/sorted")"
pct() { sed -n "$(( ($1 * COUNT + 99) / 100 ))p" "$DIR/sorted"; }
echo "jobs: $COUNT of $N ran (heartbeat interval $HB, executor $EXECUTOR, prepared sandboxes ${PREPARED:-0})"
echo "submit-to-running ms: p50 $(pct 50)  p90 $(pct 90)  p99 $(pct 99)  max $(tail -1 "$DIR/sorted")"
sort -n "$DIR/submit-ms" > "$DIR/sorted"
echo "of which the submit request (curl start to response) ms: p50 $(pct 50)  p99 $(pct 99)"
