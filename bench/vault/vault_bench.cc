// Throughput of the vault's chunked object format (format.h) on one core, against the same
// AES-256-GCM calls done bare (one EVP init/AAD/update/final per chunk, as `openssl speed -evp
// aes-256-gcm -bytes N` does). run.sh prints both and `openssl speed` itself.
#include <openssl/evp.h>

#include <string>

#include "benchmark/benchmark.h"
#include "vault/format.h"

namespace {

using warden::vault::ObjectDecryptor;
using warden::vault::ObjectEncryptor;
using warden::vault::ObjectHeader;

constexpr size_t kObjectBytes = 64 << 20;  // 64 MiB per iteration
const std::string kKey(32, 'k');

ObjectHeader Header(uint32_t chunk) {
  return ObjectHeader{chunk, std::string(32, 's'), "acme", "obj_bench", 1};
}

const std::string& Plain() {
  static const std::string p(kObjectBytes, 'x');
  return p;
}

void BM_Encrypt(benchmark::State& state) {
  const uint32_t chunk = static_cast<uint32_t>(state.range(0));
  const bool hash = state.range(1) != 0;
  uint64_t sink_bytes = 0;
  for (auto _ : state) {
    auto e = ObjectEncryptor::Create(
        kKey, Header(chunk),
        [&](std::string_view b) {
          sink_bytes += b.size();
          return absl::OkStatus();
        },
        hash);
    if (!(*e)->Update(Plain()).ok() || !(*e)->Finish().ok()) state.SkipWithError("encrypt");
  }
  benchmark::DoNotOptimize(sink_bytes);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kObjectBytes));
}

void BM_Decrypt(benchmark::State& state) {
  const uint32_t chunk = static_cast<uint32_t>(state.range(0));
  const bool hash = state.range(1) != 0;
  std::string ct;
  ct.reserve(kObjectBytes + kObjectBytes / chunk * 16 + 1024);
  auto e = ObjectEncryptor::Create(kKey, Header(chunk), [&](std::string_view b) {
    ct.append(b);
    return absl::OkStatus();
  });
  (void)(*e)->Update(Plain());
  (void)(*e)->Finish();
  uint64_t sink_bytes = 0;
  for (auto _ : state) {
    auto d = ObjectDecryptor::Create(
        kKey, {"acme", "obj_bench", 1},
        [&](std::string_view b) {
          sink_bytes += b.size();
          return absl::OkStatus();
        },
        true, hash);
    // Fed in 1 MiB reads, as the object store reads files.
    for (size_t i = 0; i < ct.size(); i += 1 << 20) {
      if (!(*d)->Update(std::string_view(ct).substr(i, 1 << 20)).ok()) state.SkipWithError("dec");
    }
    if (!(*d)->Finish().ok()) state.SkipWithError("decrypt finish");
  }
  benchmark::DoNotOptimize(sink_bytes);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kObjectBytes));
}

// As openssl speed measures: one chunk-sized plaintext buffer (hot in cache) fed repeatedly.
void BM_EncryptHot(benchmark::State& state) {
  const uint32_t chunk = static_cast<uint32_t>(state.range(0));
  const bool hash = state.range(1) != 0;
  const std::string block(chunk, 'x');
  uint64_t sink_bytes = 0;
  for (auto _ : state) {
    auto e = ObjectEncryptor::Create(
        kKey, Header(chunk),
        [&](std::string_view b) {
          sink_bytes += b.size();
          return absl::OkStatus();
        },
        hash);
    for (size_t done = 0; done < kObjectBytes; done += chunk) {
      if (!(*e)->Update(block).ok()) state.SkipWithError("encrypt");
    }
    if (!(*e)->Finish().ok()) state.SkipWithError("encrypt");
  }
  benchmark::DoNotOptimize(sink_bytes);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kObjectBytes));
}

// The bare peer: what openssl speed measures per block (init with IV, AAD, update, final, tag).
void BM_BareGcm(benchmark::State& state) {
  const size_t chunk = static_cast<size_t>(state.range(0));
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  unsigned char iv[12] = {0};
  unsigned char tag[16];
  std::string out(chunk + 16, '\0');
  EVP_EncryptInit_ex2(ctx, cipher, reinterpret_cast<const unsigned char*>(kKey.data()), nullptr,
                      nullptr);
  const auto* in = reinterpret_cast<const unsigned char*>(Plain().data());
  for (auto _ : state) {
    for (size_t off = 0; off + chunk <= kObjectBytes; off += chunk) {
      int n = 0;
      EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, iv);
      EVP_EncryptUpdate(ctx, nullptr, &n, iv, 12);
      EVP_EncryptUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &n, in + off,
                        static_cast<int>(chunk));
      EVP_EncryptFinal_ex(ctx, reinterpret_cast<unsigned char*>(out.data()) + n, &n);
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
      ++iv[11];
    }
  }
  EVP_CIPHER_CTX_free(ctx);
  EVP_CIPHER_free(cipher);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kObjectBytes));
}

void Chunks(benchmark::internal::Benchmark* b) {
  for (int64_t c : {16 << 10, 64 << 10, 256 << 10, 1 << 20}) b->Args({c, 0});
}
void ChunksHash(benchmark::internal::Benchmark* b) {
  for (int64_t c : {16 << 10, 64 << 10, 256 << 10, 1 << 20}) {
    b->Args({c, 0});
    b->Args({c, 1});
  }
}

BENCHMARK(BM_BareGcm)->Apply(Chunks)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncryptHot)
    ->Apply(ChunksHash)
    ->ArgNames({"chunk", "sha256"})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Encrypt)
    ->Apply(ChunksHash)
    ->ArgNames({"chunk", "sha256"})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decrypt)
    ->Apply(ChunksHash)
    ->ArgNames({"chunk", "sha256"})
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
