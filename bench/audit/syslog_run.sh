#!/usr/bin/env bash
# Durable audit appends/s with the syslog second sink on vs off, same disk, same run
# (bench/RESULTS.md): starts a private rsyslogd over TLS with mTLS (tools/rsyslog-start.sh),
# runs syslog_bench against it, stops it.
#
#   bench/audit/syslog_run.sh PATH/TO/syslog_bench [DIR] [SECONDS] [ROUNDS]
set -euo pipefail
bin=${1:?usage: syslog_run.sh PATH/TO/syslog_bench [DIR] [SECONDS] [ROUNDS]}
dir=${2:-$(mktemp -d /var/tmp/syslog-bench.XXXXXX)}
seconds=${3:-3}
rounds=${4:-3}
root="$(cd "$(dirname "$0")/../.." && pwd)"
rs="$dir/rsyslog"
port=$((40000 + RANDOM % 20000))
trap 'bash "$root/tools/rsyslog-stop.sh" "$rs" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== disk: $(df -T "$dir" | tail -1 | awk '{print $1, $2}')"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$dir/logs"
bash "$root/tools/rsyslog-start.sh" "$rs" "$port" >/dev/null
"$bin" "$dir/logs" --address "127.0.0.1:$port" --server-name syslog.test --ca "$rs/pki/ca.crt" \
  --cert "$rs/pki/client.crt" --key "$rs/pki/client.key" --seconds "$seconds" --rounds "$rounds"
echo "== receiver got $(grep -c ' audit ' "$rs/received.log" || true) messages"
