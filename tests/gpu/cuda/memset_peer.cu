// The peer for the scrub's bandwidth: a plain cudaMemset over the same number of bytes, in the
// same chunk size, timed with CUDA events after one warm-up pass. Built on the GPU machine by
// tests/gpu/run-all.sh (nvcc -arch=sm_90). Prints one JSON object.
// Usage: memset_peer BYTES [CHUNK_BYTES]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                      \
  do {                                                                                \
    cudaError_t e = (x);                                                              \
    if (e != cudaSuccess) {                                                           \
      std::printf("{\"error\":\"%s: %s\"}\n", #x, cudaGetErrorString(e));             \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: memset_peer BYTES [CHUNK_BYTES]\n");
    return 2;
  }
  unsigned long long want = std::strtoull(argv[1], nullptr, 10);
  unsigned long long chunk = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : (1ull << 30);
  std::vector<std::pair<void*, size_t>> chunks;
  unsigned long long got = 0;
  while (got < want && chunk >= (2ull << 20)) {
    size_t n = static_cast<size_t>(want - got < chunk ? want - got : chunk);
    void* p = nullptr;
    if (cudaMalloc(&p, n) != cudaSuccess) {
      cudaGetLastError();
      chunk /= 2;
      continue;
    }
    chunks.push_back({p, n});
    got += n;
  }
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (auto& c : chunks) CHECK(cudaMemset(c.first, 0, c.second));  // warm-up
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaEventRecord(a));
  for (auto& c : chunks) CHECK(cudaMemset(c.first, 0, c.second));
  CHECK(cudaEventRecord(b));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  std::printf("{\"bytes\":%llu,\"chunks\":%zu,\"seconds\":%.6f,\"gbps\":%.1f}\n", got,
              chunks.size(), ms / 1e3, ms > 0 ? got / 1e9 / (ms / 1e3) : 0.0);
  for (auto& c : chunks) cudaFree(c.first);
  return 0;
}
