#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 for tests: tools/pg-start.sh DIR PORT
# Idempotent: initialises DIR once (scram-sha-256 auth, password kept in DIR/pw), starts the server
# on 127.0.0.1:PORT unless it already runs, creates database warden_test, and prints
#   postgres://postgres:PASSWORD@127.0.0.1:PORT/warden_test
# as the last line of stdout (export it as WARDEN_TEST_PG_URL). Everything else goes to stderr.
# Listens on loopback only; the Unix socket lives in DIR. Stop it with tools/pg-stop.sh DIR.
# Runs as root (the server runs as the postgres user) or as the postgres user itself.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DIR=$(realpath -m "$1")
PORT=$2
case "$PORT" in
  '' | *[!0-9]*) echo "pg-start: PORT must be a number, got '$PORT'" >&2; exit 2 ;;
esac
[ -x "$PGBIN/initdb" ] || { echo "pg-start: $PGBIN/initdb not found (apt-get install postgresql)" >&2; exit 1; }

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

mkdir -p "$DIR"
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$DIR"
fi
chmod 700 "$DIR"
if ! as_postgres test -w "$DIR"; then
  echo "pg-start: user postgres cannot write $DIR (is a parent directory private?)" >&2
  exit 1
fi

# The password is generated once and kept (0600, owned by postgres) so reruns print the same URL.
if [ ! -s "$DIR/pw" ]; then
  (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/pw")
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR/pw"
fi
PASSWORD=$(cat "$DIR/pw")

if [ ! -f "$DIR/data/PG_VERSION" ]; then
  echo "pg-start: initdb in $DIR/data" >&2
  as_postgres "$PGBIN/initdb" -D "$DIR/data" -A scram-sha-256 --pwfile="$DIR/pw" -U postgres \
    -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
fi

if as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  # postmaster.pid line 4 is the port it listens on.
  running_port=$(sed -n 4p "$DIR/data/postmaster.pid")
  if [ "$running_port" != "$PORT" ]; then
    echo "pg-start: server in $DIR already runs on port $running_port, not $PORT" >&2
    exit 1
  fi
  echo "pg-start: already running on 127.0.0.1:$PORT" >&2
else
  as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -w -t 60 -l "$DIR/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >&2 ||
    { tail -20 "$DIR/server.log" >&2; exit 1; }
fi

export PGPASSWORD="$PASSWORD"
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if [ "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'warden_test'")" != 1 ]; then
  "${PSQL[@]}" -c "CREATE DATABASE warden_test" >&2
fi

echo "postgres://postgres:${PASSWORD}@127.0.0.1:${PORT}/warden_test"
