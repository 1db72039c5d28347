#!/usr/bin/env bash
# Durable audit appends/s with 8 concurrent writers vs SQLite (WAL, synchronous=FULL, one INSERT
# per event, indexed table with the same fields) on the same disk in the same run, and
# `audit verify` events/s on one core.
#
#   bench/audit/run.sh PATH/TO/audit_bench [DIR] [SECONDS] [VERIFY_EVENTS]
#
# DIR (default: a fresh directory under /var/tmp) must be on the disk to measure, not tmpfs.
# AUDIT_PREALLOCATION=zero|fallocate|none picks how segments reserve space (default zero).
# Prints the rates, the ratio and PASS/FAIL for the issue's targets: >= 10x SQLite and
# >= 500,000 verified events/s.
set -euo pipefail
bin=${1:?usage: run.sh PATH/TO/audit_bench [DIR] [SECONDS] [VERIFY_EVENTS]}
dir=${2:-$(mktemp -d /var/tmp/audit-bench.XXXXXX)}
seconds=${3:-5}
events=${4:-1000000}
trap 'rm -rf "$dir"' EXIT
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== disk: $(df -T "$dir" | tail -1 | awk '{print $1, $2}')"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== preallocation: ${AUDIT_PREALLOCATION:-zero}"
out=$("$bin" "$dir" --writers 8 --seconds "$seconds" --verify-events "$events" \
  --preallocation "${AUDIT_PREALLOCATION:-zero}" | tee /dev/stderr)
ratio=$(echo "$out" | sed -n 's/^ratio: \([0-9.]*\)x/\1/p')
rate=$(echo "$out" | sed -n 's/^audit verify: .* = \([0-9]*\) events.*/\1/p')
status=0
if awk "BEGIN{exit !($ratio >= 10)}"; then echo "appends vs SQLite: ${ratio}x (target >= 10x) PASS"; else echo "appends vs SQLite: ${ratio}x (target >= 10x) FAIL"; status=1; fi
if [ "${rate:-0}" -ge 500000 ]; then echo "verify: $rate events/s (target >= 500000) PASS"; else echo "verify: ${rate:-0} events/s (target >= 500000) FAIL"; status=1; fi
exit $status
