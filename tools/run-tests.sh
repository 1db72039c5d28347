#!/usr/bin/env bash
# Runs every test: unit + integration (SQLite and a real PostgreSQL started here), then a short
# libFuzzer run of each fuzz target. Used by `make test` and .ci/run.
set -euo pipefail
BUILD_DIR="${1:-build/release}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PG_DIR="$(mktemp -d /tmp/warden-pg-XXXXXX)"
OIDC_DIR="$(mktemp -d /tmp/warden-oidc-XXXXXX)"
cleanup() {
  bash tools/pg-stop.sh "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  bash tools/oidc-stop.sh "$OIDC_DIR" >/dev/null 2>&1 || true
  rm -rf "$OIDC_DIR"
}
trap cleanup EXIT

PG_PORT="${WARDEN_PG_PORT:-$((40000 + RANDOM % 20000))}"
echo "== starting PostgreSQL on 127.0.0.1:$PG_PORT"
WARDEN_TEST_PG_URL="$(bash tools/pg-start.sh "$PG_DIR" "$PG_PORT" | tail -n 1)"
export WARDEN_TEST_PG_URL
OIDC_PORT="${WARDEN_OIDC_PORT:-$((40000 + RANDOM % 20000))}"
echo "== starting the test OpenID provider (oidc-provider) on 127.0.0.1:$OIDC_PORT"
WARDEN_TEST_OIDC_ISSUER="$(bash tools/oidc-start.sh "$OIDC_DIR" "$OIDC_PORT" | tail -n 1)"
export WARDEN_TEST_OIDC_ISSUER WARDEN_TEST_OIDC_CA="$OIDC_DIR/ca.crt"
export WARDEN_BIN="$ROOT/$BUILD_DIR/gpuwarden"

echo "== unit and integration tests"
(cd "$BUILD_DIR" && ctest -L 'unit|integration' --output-on-failure -j 2 --timeout 600)

echo "== fuzz smoke (${FUZZ_SECONDS:-10}s per target)"
cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j 2 --target fuzzers
bash tools/run-fuzz.sh build/fuzz "${FUZZ_SECONDS:-10}"
