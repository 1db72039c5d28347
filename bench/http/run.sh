#!/usr/bin/env bash
# Authenticated + authorized JSON GET over TLS with keep-alive vs nginx serving the same bytes as a
# static file over TLS, both driven by wrk with identical settings in this one script.
#
# Usage: bench/http/run.sh GPUWARDEN_BIN [SECONDS_PER_SIDE]   (default 15)
# Env:   WRK_THREADS (2), WRK_CONNECTIONS (32), WARMUP_SECONDS (3), TARGET_RATIO (0.5),
#        KEEP_TMP=1 keeps the temp dir (server data, audit log, logs) for inspection.
#        PERF_DATA=FILE records a CPU profile of the server during its measured run
#        (`perf record -e cpu-clock --call-graph ${PERF_CALLGRAPH:-dwarf,16384}`); the ratio of
#        such a run is not a result (perf shares the same 2 cores).
#
# gpuwarden side: a fresh data dir, the real server (2 HTTP threads, its default), an API token of
# a `developer` in tenant acme created through the CLI; every request is
# `GET /api/v1/tenants/acme` with `Authorization: Bearer <token>`, so each one passes
# authenticate (token lookup) -> RBAC (tenants:read at tenant scope) -> handler -> audit event.
# nginx side: `worker_processes 2`, same certificate and key, TLS 1.2/1.3, keep-alive, serving a
# file holding the exact bytes gpuwarden returns; access_log off (gpuwarden writes one audit event
# per request, nginx logs nothing: this favours nginx).
#
# Prints req/s, p50/p99 latency and the ratio; PASS if gpuwarden/nginx >= TARGET_RATIO, else FAIL
# and exits 1. Any non-2xx/3xx gpuwarden response, or fewer audit events than answered requests,
# also fails. Every process it starts is stopped on exit (by PID).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 GPUWARDEN_BIN [SECONDS_PER_SIDE]" >&2
  exit 2
fi
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
DURATION="${2:-15}"
THREADS="${WRK_THREADS:-2}"
CONNS="${WRK_CONNECTIONS:-32}"
WARMUP="${WARMUP_SECONDS:-3}"
TARGET="${TARGET_RATIO:-0.5}"
PATH_UNDER_TEST=/api/v1/tenants/acme

for tool in wrk nginx curl jq; do
  command -v "$tool" >/dev/null || { echo "bench/http: $tool is not installed (tools/install-deps.sh)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "bench/http: $BIN is not an executable" >&2; exit 2; }

TMP="$(mktemp -d /tmp/gpuwarden-bench-http.XXXXXX)"
DATA="$TMP/data"
SERVER_PID=""
NGINX_PID=""

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  for pid in $NGINX_PID $SERVER_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "bench/http: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "bench/http: $*" >&2
  for log in "$TMP/server.log" "$TMP/nginx/error.log"; do
    [ -s "$log" ] && { echo "--- $log (tail)" >&2; tail -n 20 "$log" >&2; }
  done
  exit 1
}

# A free loopback port for nginx (it cannot bind port 0 and report it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- gpuwarden server -------------------------------------------------------------------------
ADMIN_PW="bench-admin-$RANDOM-$RANDOM-pw"
DEV_PW="bench-dev-$RANDOM-$RANDOM-pw"
printf '%s\n' "$ADMIN_PW" >"$TMP/admin.pw"
chmod 600 "$TMP/admin.pw"
# The benchmark measures the request path, not MFA enrollment: the admin needs no second factor.
# AUDIT_DURABLE_READS=true measures the strict mode in which every GET waits for fdatasync.
printf 'mfa: {required_for: none}\naudit: {durable_reads: %s}\n' "${AUDIT_DURABLE_READS:-false}" \
  >"$TMP/config.yaml"
"$BIN" server --config "$TMP/config.yaml" --data-dir "$DATA" --listen 127.0.0.1:0 \
  --admin-password-file "$TMP/admin.pw" --threads "${GW_THREADS:-2}" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 600); do
  [ -s "$DATA/server.json" ] && jq -e .port "$DATA/server.json" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during start"
  sleep 0.1
done
[ -s "$DATA/server.json" ] || die "server did not write $DATA/server.json within 60 s"
PORT="$(jq -r .port "$DATA/server.json")"
URL="https://127.0.0.1:$PORT"
FP="$(jq -r .ca_fingerprint "$DATA/server.json")"

cli_admin() { GPUWARDEN_CONFIG_DIR="$TMP/cli-admin" "$BIN" "$@"; }
cli_dev() { GPUWARDEN_CONFIG_DIR="$TMP/cli-dev" "$BIN" "$@"; }
printf '%s\n' "$ADMIN_PW" | cli_admin login --server "$URL" --user admin --password-stdin \
  --ca-fingerprint "$FP" >/dev/null 2>&1 || die "admin login failed"
cli_admin tenant create acme >/dev/null || die "tenant create failed"
printf '%s\n' "$DEV_PW" | cli_admin user create dev --tenant acme --role developer --password-stdin \
  >/dev/null || die "user create failed"
printf '%s\n' "$DEV_PW" | cli_dev login --server "$URL" --user dev --password-stdin \
  --ca-fingerprint "$FP" >/dev/null 2>&1 || die "dev login failed"
TOKEN="$(cli_dev token create bench --role developer -o json | jq -r .secret)"
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || die "token create returned no secret"
(umask 077 && printf '%s\n' "$TOKEN" >"$TMP/token")  # for KEEP_TMP follow-up runs

# The exact bytes gpuwarden answers with (also proves the token works before wrk runs).
BODY_FILE="$TMP/www$PATH_UNDER_TEST"
mkdir -p "$(dirname "$BODY_FILE")"
code="$(curl -sS --cacert "$DATA/pki/ca.crt" -H "Authorization: Bearer $TOKEN" \
  -o "$BODY_FILE" -w '%{http_code}' "$URL$PATH_UNDER_TEST")"
[ "$code" = 200 ] || die "GET $PATH_UNDER_TEST with the token returned $code: $(cat "$BODY_FILE")"

# ---- nginx --------------------------------------------------------------------------------------
NGX="$TMP/nginx"
mkdir -p "$NGX/logs"
cp "$DATA/pki/server.crt" "$DATA/pki/server.key" "$NGX/"
chmod 600 "$NGX/server.key"
NGINX_PORT="$(free_port)"
NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"  # the key stays 0600; workers must read it
cat >"$NGX/nginx.conf" <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes 2;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NGX/client_body;
  proxy_temp_path $NGX/proxy;
  fastcgi_temp_path $NGX/fastcgi;
  uwsgi_temp_path $NGX/uwsgi;
  scgi_temp_path $NGX/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $NGX/server.crt;
    ssl_certificate_key $NGX/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $TMP/www;
    default_type application/json;
    location / { try_files \$uri =404; }
  }
}
EOF
nginx -p "$NGX" -e "$NGX/error.log" -c "$NGX/nginx.conf" >"$NGX/stdout.log" 2>&1 &
NGINX_PID=$!
NGINX_URL="https://127.0.0.1:$NGINX_PORT"
for _ in $(seq 100); do
  curl -sk -o /dev/null "$NGINX_URL/" 2>/dev/null && break
  kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited during start"
  sleep 0.1
done
cmp -s <(curl -sS --cacert "$DATA/pki/ca.crt" "$NGINX_URL$PATH_UNDER_TEST") "$BODY_FILE" ||
  die "nginx does not serve the same bytes as gpuwarden"

# ---- wrk ----------------------------------------------------------------------------------------
WRK_ARGS=(-t"$THREADS" -c"$CONNS" --latency -H "Authorization: Bearer $TOKEN")
run_wrk() {  # $1 seconds, $2 url, $3 output file
  wrk "${WRK_ARGS[@]}" -d"$1"s "$2$PATH_UNDER_TEST" >"$3" 2>&1 || die "wrk failed: $(cat "$3")"
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
pct() { awk -v p="$2%" '$1 == p {print $2}' "$1"; }
total() { awk '/requests in/ {print $1}' "$1"; }
non2xx() { awk '/Non-2xx or 3xx responses:/ {print $NF}' "$1"; }
sockerr() { grep 'Socket errors:' "$1" | sed 's/^ *//' || true; }
# CPU time (user+sys, clock ticks) of the given PIDs, threads included.
cpu_ticks() {
  local t=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    t=$((t + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}
audit_lines() { cat "$DATA"/audit/seg-*.jsonl 2>/dev/null | wc -l; }

echo "bench/http: gpuwarden $URL (pid $SERVER_PID), nginx $NGINX_URL (pid $NGINX_PID)"
echo "bench/http: wrk ${WRK_ARGS[*]:0:3} -d${DURATION}s (warm-up ${WARMUP}s each); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
run_wrk "$WARMUP" "$URL" "$TMP/warm-gw.txt"
run_wrk "$WARMUP" "$NGINX_URL" "$TMP/warm-ngx.txt"
[ -z "$(non2xx "$TMP/warm-gw.txt")" ] || die "gpuwarden answered non-2xx during warm-up: $(cat "$TMP/warm-gw.txt")"

NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
audit_before="$(audit_lines)"
gw_cpu0="$(cpu_ticks "$SERVER_PID")"
PERF_PID=""
if [ -n "${PERF_DATA:-}" ]; then
  perf record -q -e cpu-clock -F 999 --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" \
    -p "$SERVER_PID" -o "$PERF_DATA" -- sleep "$DURATION" >"$TMP/perf.log" 2>&1 &
  PERF_PID=$!
fi
run_wrk "$DURATION" "$URL" "$TMP/gw.txt"
[ -z "$PERF_PID" ] || wait "$PERF_PID" || echo "bench/http: perf record failed: $(cat "$TMP/perf.log")" >&2
sleep 0.5  # let requests in flight when wrk stopped finish their audit write
audit_after="$(audit_lines)"
gw_cpu1="$(cpu_ticks "$SERVER_PID")"
# shellcheck disable=SC2086  # a list of PIDs
ngx_cpu0="$(cpu_ticks $NGINX_PIDS)"
run_wrk "$DURATION" "$NGINX_URL" "$TMP/ngx.txt"
# shellcheck disable=SC2086
ngx_cpu1="$(cpu_ticks $NGINX_PIDS)"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "--- wrk against gpuwarden"; cat "$TMP/gw.txt"
echo "--- wrk against nginx"; cat "$TMP/ngx.txt"

gw_rps="$(rps "$TMP/gw.txt")"
ngx_rps="$(rps "$TMP/ngx.txt")"
[ -n "$gw_rps" ] && [ -n "$ngx_rps" ] || die "could not read Requests/sec from wrk output"
gw_total="$(total "$TMP/gw.txt")"
audited=$((audit_after - audit_before))
status=0
if [ -n "$(non2xx "$TMP/gw.txt")" ]; then
  echo "FAIL: gpuwarden answered $(non2xx "$TMP/gw.txt") non-2xx/3xx responses"
  status=1
fi
if [ -n "$(non2xx "$TMP/ngx.txt")" ]; then
  echo "FAIL: nginx answered $(non2xx "$TMP/ngx.txt") non-2xx/3xx responses (bad comparison)"
  status=1
fi
if [ "$audited" -lt "$gw_total" ]; then
  echo "FAIL: $gw_total requests answered but only $audited audit events written"
  status=1
fi
HZ="$(getconf CLK_TCK)"
us_per_req() {  # $1 ticks, $2 requests
  awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN {printf "%.1f", (n > 0) ? t * 1e6 / hz / n : 0}'
}
gw_us="$(us_per_req $((gw_cpu1 - gw_cpu0)) "$gw_total")"
ngx_us="$(us_per_req $((ngx_cpu1 - ngx_cpu0)) "$(total "$TMP/ngx.txt")")"
ratio="$(awk -v a="$gw_rps" -v b="$ngx_rps" 'BEGIN {printf "%.3f", a / b}')"

echo
echo "=== authenticated JSON GET over TLS vs nginx static file (wrk -t$THREADS -c$CONNS -d${DURATION}s)"
printf '%-10s %12s %10s %10s %10s %14s  %s\n' side "requests/s" p50 p99 requests \
  "server CPU/req" "socket errors"
printf '%-10s %12s %10s %10s %10s %14s  %s\n' gpuwarden "$gw_rps" "$(pct "$TMP/gw.txt" 50)" \
  "$(pct "$TMP/gw.txt" 99)" "$gw_total" "${gw_us}us" "$(sockerr "$TMP/gw.txt")"
printf '%-10s %12s %10s %10s %10s %14s  %s\n' nginx "$ngx_rps" "$(pct "$TMP/ngx.txt" 50)" \
  "$(pct "$TMP/ngx.txt" 99)" "$(total "$TMP/ngx.txt")" "${ngx_us}us" "$(sockerr "$TMP/ngx.txt")"
echo "response body: $(wc -c <"$BODY_FILE") bytes; audit events written during the gpuwarden run: $audited (wrk counted $gw_total answered)"
echo "load average after: $load_after"
if awk -v r="$ratio" -v t="$TARGET" 'BEGIN {exit !(r >= t)}'; then
  echo "ratio gpuwarden/nginx: $ratio (target >= $TARGET): PASS"
else
  echo "ratio gpuwarden/nginx: $ratio (target >= $TARGET): FAIL"
  status=1
fi
exit $status
