#!/usr/bin/env bash
# JWT verification (RS256, ES256) per second: gpuwarden vs npm `jose` on the same tokens.
#
#   bench/jose/run.sh PATH/TO/jose_bench [JOSE_SECONDS]
#
# Builds nothing: pass the benchmark binary (e.g. build/release/bench/jose/jose_bench). Needs
# Node.js and tools/node's packages (jose). The peer mints the tokens (gen_tokens.mjs); both sides
# verify them single-threaded. Prints both rates, the ratios and PASS/FAIL for the issue's target
# (>= 2x jose's faster mode, for each alg).
set -euo pipefail

bin=${1:?usage: run.sh PATH/TO/jose_bench [JOSE_SECONDS]}
seconds=${2:-3}
source "$(dirname "$0")/../lib.sh"
need_npm jose

machine_line
node "$here/gen_tokens.mjs" "$tmp/tokens.json" 256
echo "== gpuwarden (auth::jose::VerifyJwt, Google Benchmark, single thread)"
"$bin" --tokens="$tmp/tokens.json" --benchmark_out="$tmp/gbench.json" --benchmark_out_format=json
echo "== npm jose $(node -p "require('$root/tools/node/node_modules/jose/package.json').version") on Node $(node --version), single thread"
node "$here/jose_bench.mjs" "$tmp/tokens.json" "$seconds" | tee "$tmp/jose.txt"

echo "== summary"
status=0
for alg in RS256 ES256; do
  # rates from Google Benchmark's JSON: wall-clock items/s and 1e9 / CPU ns per item
  read -r ours ours_cpu < <(node -e '
    const j = require(process.argv[1]);
    const b = j.benchmarks.find((x) => x.name.startsWith("BM_Verify" + process.argv[2]));
    const cpuNs = b.cpu_time * ({ ns: 1, us: 1e3, ms: 1e6 }[b.time_unit] || 1);
    console.log(Math.round(b.items_per_second), Math.round(1e9 / cpuNs));' "$tmp/gbench.json" "$alg")
  field() { awk -v a="alg=$alg" -v k="$1" '$2 == a { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$tmp/jose.txt" | sort -n | tail -1; }
  peer=$(field tokens_per_sec)
  peer_cpu=$(field tokens_per_cpu_sec)
  awk -v alg="$alg" -v ours="$ours" -v peer="$peer" -v oc="$ours_cpu" -v pc="$peer_cpu" 'BEGIN {
    ratio = ours / peer
    printf "%s wall: gpuwarden %d tokens/s, jose (best mode) %d tokens/s, ratio %.2fx\n", alg, ours, peer, ratio
    printf "%s CPU:  gpuwarden %d tokens/CPU-s, jose (best mode) %d tokens/CPU-s, ratio %.2fx\n", alg, oc, pc, oc / pc
    printf "%s: target >= 2x (wall) %s\n", alg, (ratio >= 2 ? "PASS" : "FAIL")
    exit (ratio >= 2 ? 0 : 1)
  }' || status=1
done
exit $status
