#!/usr/bin/env bash
# Runs each libFuzzer target in BUILD_DIR/fuzz for SECONDS, seeded from fuzz/corpus/<target>.
# Fails if any target finds a crash, leak or sanitizer error.
set -euo pipefail
BUILD_DIR="${1:-build/fuzz}"
SECONDS_EACH="${2:-10}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
status=0
for bin in "$BUILD_DIR"/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name="$(basename "$bin")"
  corpus="$(mktemp -d)"
  [ -d "$ROOT/fuzz/corpus/$name" ] && cp -r "$ROOT/fuzz/corpus/$name/." "$corpus/"
  printf '%-28s ' "$name"
  if "$bin" "$corpus" -max_total_time="$SECONDS_EACH" -max_len=8192 -rss_limit_mb=1024 \
      -artifact_prefix="$corpus/" >"$corpus/log" 2>&1; then
    echo "ok: $(grep -o "Done [0-9]* runs in [0-9]* second(s)" "$corpus/log" | tail -n 1)"
  else
    echo "FAILED"; tail -n 40 "$corpus/log"; status=1
  fi
  rm -rf "$corpus"
done
exit $status
