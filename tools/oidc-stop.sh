#!/usr/bin/env bash
# Stops the test OpenID provider that tools/oidc-start.sh started in DIR: tools/oidc-stop.sh DIR
# Succeeds when nothing runs there. Keeps DIR (its CA and certificate are reused).
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
DIR=$(realpath -m "$1")
[ -s "$DIR/pid" ] || { echo "oidc-stop: nothing running in $DIR" >&2; exit 0; }
PID=$(cat "$DIR/pid")
if kill -0 "$PID" 2>/dev/null; then
  kill "$PID"
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PID" 2>/dev/null && kill -9 "$PID"
fi
rm -f "$DIR/pid" "$DIR/port"
