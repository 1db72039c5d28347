#!/usr/bin/env bash
# RBAC authorizer vs Cedar on the same generated model and request mix.
#
#   bench/rbac/run.sh PATH/TO/rbac_bench [CEDAR_SECONDS]
#
# Builds nothing: pass the benchmark binary (e.g. build/release/bench/rbac/rbac_bench). Needs
# Node.js and `cd tools/node && npm install` (@cedar-policy/cedar-wasm). Prints both rates, the
# ratio and PASS/FAIL for the issue's target: >= 20x the faster Cedar mode and p99 < 2 us.
set -euo pipefail

bin=${1:?usage: run.sh PATH/TO/rbac_bench [CEDAR_SECONDS]}
seconds=${2:-5}
source "$(dirname "$0")/../lib.sh"
need_npm @cedar-policy/cedar-wasm

machine_line
echo "== gpuwarden rbac (Google Benchmark, single thread)"
"$bin" --export_model="$tmp/model.json" --benchmark_out="$tmp/gbench.json" \
  --benchmark_out_format=json | tee "$tmp/cpp.txt"

echo "== Cedar (@cedar-policy/cedar-wasm, single thread)"
node "$here/cedar_bench.mjs" "$tmp/model.json" sliced "$seconds" | tee "$tmp/cedar.txt"
node "$here/cedar_bench.mjs" "$tmp/model.json" full "$seconds" | tee -a "$tmp/cedar.txt"

field() {  # field FILE PREFIX KEY -> value of KEY=... on lines starting with PREFIX
  awk -v p="$2" -v k="$3" '$1 ~ "^"p { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$1"
}

ours=$(node -e '
  const j = require(process.argv[1]);
  const b = j.benchmarks.find((x) => x.name.startsWith("BM_Decision"));
  console.log(Math.round(b.items_per_second));' "$tmp/gbench.json")
p99=$(field "$tmp/cpp.txt" RBAC_LATENCY p99_ns)
cedar=$(field "$tmp/cedar.txt" CEDAR decisions_per_sec | sort -n | tail -1)

echo "== summary"
awk -v ours="$ours" -v cedar="$cedar" -v p99="$p99" 'BEGIN {
  ratio = ours / cedar
  printf "gpuwarden decisions/s: %d\n", ours
  printf "cedar decisions/s (best mode): %d\n", cedar
  printf "ratio: %.0fx (target >= 20x)\n", ratio
  printf "p99 decision latency: %d ns (target < 2000 ns)\n", p99
  ok = (ratio >= 20 && p99 < 2000)
  print (ok ? "PASS" : "FAIL")
  exit (ok ? 0 : 1)
}'
