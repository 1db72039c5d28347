#!/usr/bin/env bash
# Runs every benchmark against its peer (ratios, same machine, same run). `make bench` calls it.
# Usage: bench/run.sh BUILD_DIR   (a release build)
set -euo pipefail
BUILD_DIR="${1:-build/release}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
status=0
echo "== RBAC authorizer vs Cedar"
bash bench/rbac/run.sh "$BUILD_DIR/bench/rbac/rbac_bench" || status=1
if [ -x bench/http/run.sh ]; then
  echo "== authenticated JSON GET over TLS vs nginx (wrk)"
  bash bench/http/run.sh "$BUILD_DIR/gpuwarden" || status=1
fi
if [ -x bench/vault/run.sh ]; then
  echo "== vault chunked format vs openssl speed; file-to-file vs age"
  bash bench/vault/run.sh "$BUILD_DIR" || status=1
fi
echo "== audit log: durable appends vs SQLite, audit verify throughput"
bash bench/audit/run.sh "$BUILD_DIR/bench/audit/audit_bench" || status=1
echo "== JWT verification vs npm jose"
bash bench/jose/run.sh "$BUILD_DIR/bench/jose/jose_bench" || status=1
echo "== scheduler placements/s (gpuwarden sim)"
bash bench/sched/run.sh "$BUILD_DIR/gpuwarden" || status=1
echo "== job sandbox overhead vs runc run"
bash bench/sandbox/run.sh "$BUILD_DIR" || status=1
exit $status
