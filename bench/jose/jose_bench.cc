// gpuwarden's JWT verification on the peer's tokens (bench/jose/gen_tokens.mjs): the full
// VerifyJwt path a bearer token takes (parse, alg allowlist, key selection by kid, signature,
// iss/aud/exp/nbf/iat/typ), single thread.
//
//   jose_bench --tokens=TOKENS.json [Google Benchmark flags]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "auth/jose.h"
#include "common/json.h"

namespace {

using warden::auth::jose::ClaimsPolicy;
using warden::auth::jose::JwkSet;
using warden::auth::jose::JwsAlg;

struct Data {
  JwkSet keys;
  ClaimsPolicy policy;
  std::vector<std::string> rs256, es256;
};
Data* g_data = nullptr;

void Verify(benchmark::State& state, const std::vector<std::string>& tokens, JwsAlg alg) {
  std::vector<JwsAlg> algs = {alg};
  absl::Time now = absl::Now();
  size_t i = 0;
  for (auto _ : state) {
    auto r = warden::auth::jose::VerifyJwt(tokens[i++ % tokens.size()], g_data->keys, algs,
                                           g_data->policy, now);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(r->subject.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_VerifyRS256(benchmark::State& state) { Verify(state, g_data->rs256, JwsAlg::kRS256); }
void BM_VerifyES256(benchmark::State& state) { Verify(state, g_data->es256, JwsAlg::kES256); }
// The parts, to see where the time goes: parsing + claims (no crypto) and the signature alone.
void BM_ParseAndClaimsRS256(benchmark::State& state) {
  absl::Time now = absl::Now();
  size_t i = 0;
  for (auto _ : state) {
    auto jws = warden::auth::jose::ParseCompactJws(g_data->rs256[i++ % g_data->rs256.size()]);
    auto r = warden::auth::jose::ValidateClaims(*jws, g_data->policy, now);
    benchmark::DoNotOptimize(r.ok());
  }
  state.SetItemsProcessed(state.iterations());
}
void SignatureOnly(benchmark::State& state, const std::string& token) {
  auto jws = warden::auth::jose::ParseCompactJws(token);
  const warden::auth::jose::Jwk* key = g_data->keys.Select(jws->header);
  for (auto _ : state)
    benchmark::DoNotOptimize(warden::auth::jose::VerifySignature(*jws, *key).ok());
  state.SetItemsProcessed(state.iterations());
}
void BM_SignatureOnlyRS256(benchmark::State& state) { SignatureOnly(state, g_data->rs256[0]); }
void BM_SignatureOnlyES256(benchmark::State& state) { SignatureOnly(state, g_data->es256[0]); }
BENCHMARK(BM_ParseAndClaimsRS256);
BENCHMARK(BM_SignatureOnlyRS256);
BENCHMARK(BM_SignatureOnlyES256);

// Wall-clock rates (UseRealTime), like the peer's; run.sh also compares CPU-time rates.
BENCHMARK(BM_VerifyRS256)->MinTime(3)->UseRealTime();
BENCHMARK(BM_VerifyES256)->MinTime(3)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--tokens=", 9) == 0) {
      path = argv[i] + 9;
    } else {
      args.push_back(argv[i]);
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: jose_bench --tokens=TOKENS.json (bench/jose/run.sh makes one)\n");
    return 2;
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = warden::common::ParseJsonStrict(ss.str(), {.max_depth = 8, .max_bytes = 64 << 20});
  if (!doc.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(doc.status().message()).c_str());
    return 1;
  }
  auto keys = JwkSet::Parse((*doc)["jwks"].dump());
  if (!keys.ok()) {
    std::fprintf(stderr, "jwks: %s\n", std::string(keys.status().message()).c_str());
    return 1;
  }
  g_data = new Data{std::move(*keys), {}, {}, {}};
  g_data->policy.issuer = (*doc)["issuer"].get<std::string>();
  g_data->policy.audiences = {(*doc)["audience"].get<std::string>()};
  g_data->rs256 = (*doc)["tokens"]["RS256"].get<std::vector<std::string>>();
  g_data->es256 = (*doc)["tokens"]["ES256"].get<std::vector<std::string>>();
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
