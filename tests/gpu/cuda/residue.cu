// The residue test's two tenants (tests/gpu/run-all.sh). Built on the GPU machine with nvcc.
//   residue write FRACTION PATTERN  fill FRACTION of free memory with the 32-bit PATTERN, exit
//                                   without freeing (the driver reclaims it; nothing is wiped
//                                   by us)
//   residue read FRACTION PATTERN   allocate FRACTION of free memory and count, on the device,
//                                   words equal to PATTERN and words != 0
//   residue control FRACTION PATTERN  inside ONE process: fill, count (the instrument must see
//                                   every pattern word: filled_pattern_words_counted ==
//                                   filled_words), free, allocate again, count again.
// Prints one JSON object.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CHECK(x)                                                                      \
  do {                                                                                \
    cudaError_t e = (x);                                                              \
    if (e != cudaSuccess) {                                                           \
      std::printf("{\"error\":\"%s: %s\"}\n", #x, cudaGetErrorString(e));             \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

__global__ void Fill(uint4* p, size_t n16, unsigned int v) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n16;
       i += (size_t)gridDim.x * blockDim.x) {
    p[i] = make_uint4(v, v, v, v);
  }
}

__global__ void Count(const uint4* p, size_t n16, unsigned int v, unsigned long long* equal,
                      unsigned long long* nonzero) {
  unsigned long long e = 0, nz = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n16;
       i += (size_t)gridDim.x * blockDim.x) {
    uint4 w = p[i];
    e += (w.x == v) + (w.y == v) + (w.z == v) + (w.w == v);
    nz += (w.x != 0) + (w.y != 0) + (w.z != 0) + (w.w != 0);
  }
  if (e) atomicAdd(equal, e);
  if (nz) atomicAdd(nonzero, nz);
}

struct Region {
  std::vector<std::pair<uint4*, size_t>> chunks;
  unsigned long long bytes = 0;
};

Region Allocate(double fraction) {
  size_t free_b = 0, total_b = 0;
  CHECK(cudaMemGetInfo(&free_b, &total_b));
  unsigned long long want = (unsigned long long)(free_b * fraction);
  Region r;
  size_t chunk = 1ull << 30;
  while (r.bytes < want && chunk >= (2u << 20)) {
    size_t n = want - r.bytes < chunk ? (size_t)(want - r.bytes) / 16 * 16 : chunk;
    if (n == 0) break;
    void* p = nullptr;
    if (cudaMalloc(&p, n) != cudaSuccess) {
      cudaGetLastError();
      chunk /= 2;
      continue;
    }
    r.chunks.push_back({static_cast<uint4*>(p), n});
    r.bytes += n;
  }
  return r;
}

void FillAll(const Region& r, unsigned int v) {
  for (auto& c : r.chunks) Fill<<<1024, 256>>>(c.first, c.second / 16, v);
  CHECK(cudaDeviceSynchronize());
}

void CountAll(const Region& r, unsigned int v, unsigned long long* equal,
              unsigned long long* nonzero) {
  unsigned long long* d = nullptr;
  CHECK(cudaMalloc(&d, 16));
  CHECK(cudaMemset(d, 0, 16));
  for (auto& c : r.chunks) Count<<<1024, 256>>>(c.first, c.second / 16, v, d, d + 1);
  CHECK(cudaDeviceSynchronize());
  unsigned long long h[2];
  CHECK(cudaMemcpy(h, d, 16, cudaMemcpyDeviceToHost));
  cudaFree(d);
  *equal = h[0];
  *nonzero = h[1];
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: residue write|read|control FRACTION PATTERN\n");
    return 2;
  }
  const char* mode = argv[1];
  double fraction = std::atof(argv[2]);
  unsigned int pattern = (unsigned int)std::strtoul(argv[3], nullptr, 0);
  CHECK(cudaFree(0));  // create the context first: free memory is measured after it
  if (std::strcmp(mode, "write") == 0) {
    Region r = Allocate(fraction);
    FillAll(r, pattern);
    std::printf("{\"mode\":\"write\",\"bytes\":%llu,\"pattern\":%u}\n", r.bytes, pattern);
    std::fflush(stdout);
    return 0;  // exit without cudaFree: whatever the driver does on teardown is what we test
  }
  if (std::strcmp(mode, "read") == 0) {
    Region r = Allocate(fraction);
    unsigned long long equal = 0, nonzero = 0;
    CountAll(r, pattern, &equal, &nonzero);
    std::printf("{\"mode\":\"read\",\"bytes\":%llu,\"pattern_words\":%llu,\"nonzero_words\":%llu}\n",
                r.bytes, equal, nonzero);
    return 0;
  }
  if (std::strcmp(mode, "control") == 0) {
    Region r = Allocate(fraction);
    FillAll(r, pattern);
    // Positive check of the instrument: the count sees every pattern word where they are.
    unsigned long long filled = 0, filled_nonzero = 0;
    CountAll(r, pattern, &filled, &filled_nonzero);
    for (auto& c : r.chunks) CHECK(cudaFree(c.first));
    Region again = Allocate(fraction);
    unsigned long long equal = 0, nonzero = 0;
    CountAll(again, pattern, &equal, &nonzero);
    std::printf("{\"mode\":\"control\",\"bytes\":%llu,\"filled_words\":%llu,"
                "\"filled_pattern_words_counted\":%llu,\"pattern_words\":%llu,"
                "\"nonzero_words\":%llu}\n",
                again.bytes, r.bytes / 4, filled, equal, nonzero);
    return 0;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}
