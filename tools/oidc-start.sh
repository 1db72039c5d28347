#!/usr/bin/env bash
# Starts the test OpenID provider (tools/oidc/server.mjs, oidc-provider from tools/node) on
# loopback: tools/oidc-start.sh DIR PORT
# Idempotent: makes a throwaway CA and a TLS certificate for 127.0.0.1 in DIR once, starts the
# provider unless it already runs there, waits for its discovery document, and prints the issuer
#   https://127.0.0.1:PORT
# as the last line of stdout. DIR/ca.crt is the CA that tests pin. Stop it with tools/oidc-stop.sh DIR.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
DIR=$(realpath -m "$1")
PORT=$2
case "$PORT" in
  '' | *[!0-9]*) echo "oidc-start: PORT must be a number, got '$PORT'" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$ROOT/tools/node/node_modules/oidc-provider" ]; then
  echo "oidc-start: oidc-provider missing; run tools/install-deps.sh (or cd tools/node && npm install)" >&2
  exit 1
fi
mkdir -p "$DIR"
chmod 700 "$DIR"

if [ ! -s "$DIR/tls.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=gpuwarden test IdP CA" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$DIR/tls.key" -out "$DIR/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$DIR/ext"
  openssl x509 -req -in "$DIR/tls.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 30 -extfile "$DIR/ext" -out "$DIR/tls.crt" 2>/dev/null
fi

ISSUER="https://127.0.0.1:$PORT"
if [ -s "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
  if [ "$(cat "$DIR/port" 2>/dev/null)" != "$PORT" ]; then
    echo "oidc-start: provider in $DIR already runs on port $(cat "$DIR/port")" >&2
    exit 1
  fi
  echo "oidc-start: already running at $ISSUER" >&2
else
  (cd "$ROOT/tools/node" && NODE_NO_WARNINGS=1 exec node "$ROOT/tools/oidc/server.mjs" "$DIR" "$PORT") \
    >"$DIR/server.log" 2>&1 &
  echo $! >"$DIR/pid"
  echo "$PORT" >"$DIR/port"
fi

for _ in $(seq 1 300); do
  if curl -sf --cacert "$DIR/ca.crt" "$ISSUER/.well-known/openid-configuration" >/dev/null 2>&1; then
    echo "$ISSUER"
    exit 0
  fi
  if ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    echo "oidc-start: provider exited:" >&2
    tail -20 "$DIR/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "oidc-start: provider did not answer within 30 s" >&2
tail -20 "$DIR/server.log" >&2
exit 1
