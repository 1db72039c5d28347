#!/usr/bin/env bash
# Stops the PostgreSQL that tools/pg-start.sh started in DIR: tools/pg-stop.sh DIR
# Fast shutdown (open sessions are disconnected). Succeeds when nothing runs there. Keeps DIR, so
# a later pg-start.sh reuses the cluster; remove DIR yourself to start from scratch.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DIR=$(realpath -m "$1")

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

if [ ! -f "$DIR/data/postmaster.pid" ]; then
  echo "pg-stop: no server running in $DIR" >&2
  exit 0
fi
as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >&2
