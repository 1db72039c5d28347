#!/usr/bin/env bash
# Stops the rsyslogd started by tools/rsyslog-start.sh DIR: tools/rsyslog-stop.sh DIR [SIGNAL]
# (default TERM; KILL simulates a receiver that dies). Waits until the process is gone.
set -euo pipefail
DIR=$(realpath -m "$1")
SIG=${2:-TERM}
[ -s "$DIR/rsyslogd.pid" ] || exit 0
PID=$(cat "$DIR/rsyslogd.pid")
kill -"$SIG" "$PID" 2>/dev/null || true
for _ in $(seq 1 200); do
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.05
done
rm -f "$DIR/rsyslogd.pid"
