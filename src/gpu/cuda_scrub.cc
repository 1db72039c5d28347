// The memory scrubber over the CUDA driver API, libcuda.so.1 loaded with dlopen at run time, so
// the build needs no CUDA toolkit and gpuwarden runs (and reports why it cannot scrub) on
// machines without a GPU.
//
// Written against the CUDA driver API reference. cuda.h is not a build dependency: the handful of
// types and functions used are declared below as the reference gives them (handles are opaque
// pointers, CUdevice an int, CUdeviceptr a 64-bit integer, every call returns CUresult). Symbols
// are bound by their versioned ABI names (cuMemAlloc_v2 ...), which is what cuda.h maps the
// plain names to.
//
// Why a verify kernel and not a read-back: copying 140 GB to the host would take minutes over
// PCIe; the kernel reads at memory bandwidth and only an 8-byte counter crosses the bus.
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/status.h"
#include "common/strings.h"
#include "gpu/handoff.h"

namespace warden::gpu {
namespace {

using common::StrCat;

// ---- the subset of cuda.h we use ----
using CUresult = int;
constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
struct CUuuid {
  unsigned char bytes[16];
};
constexpr int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;

struct CudaApi {
  CUresult (*Init)(unsigned int) = nullptr;
  CUresult (*DeviceGetCount)(int*) = nullptr;
  CUresult (*DeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*DeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*DeviceGetUuid)(CUuuid*, CUdevice) = nullptr;  // _v2: MIG UUIDs for MIG devices
  CUresult (*DeviceGetAttribute)(int*, int, CUdevice) = nullptr;
  CUresult (*PrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*PrimaryCtxRelease)(CUdevice) = nullptr;  // _v2
  CUresult (*CtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*CtxSynchronize)() = nullptr;
  CUresult (*MemGetInfo)(size_t*, size_t*) = nullptr;         // _v2
  CUresult (*MemAlloc)(CUdeviceptr*, size_t) = nullptr;       // _v2
  CUresult (*MemFree)(CUdeviceptr) = nullptr;                 // _v2
  CUresult (*MemsetD32)(CUdeviceptr, unsigned int, size_t) = nullptr;  // _v2
  CUresult (*MemcpyDtoH)(void*, CUdeviceptr, size_t) = nullptr;        // _v2
  CUresult (*ModuleLoadData)(CUmodule*, const void*) = nullptr;
  CUresult (*ModuleUnload)(CUmodule) = nullptr;
  CUresult (*ModuleGetFunction)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*LaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                           unsigned int, unsigned int, unsigned int, CUstream, void**,
                           void**) = nullptr;
  CUresult (*GetErrorName)(CUresult, const char**) = nullptr;
};

template <typename F>
bool Bind(void* lib, const char* symbol, F& out, std::string* missing) {
  out = reinterpret_cast<F>(::dlsym(lib, symbol));
  if (out == nullptr && missing->empty()) *missing = symbol;
  return out != nullptr;
}

// The verify kernel, PTX ISA 6.0 for sm_70 (Volta) and later through the driver's JIT.
//   warden_count_mismatch(const uint4* data, u64 n16, u32 expected, u64* count)
// Thread i reads 16-byte vectors i, i + stride, ... (coalesced), counts the 32-bit words that
// differ from `expected` in a register, and adds its count to *count with one atomic only when
// it found any (the common clean case does no atomics at all).
constexpr char kPtx[] = R"PTX(
.version 6.0
.target sm_70
.address_size 64

.visible .entry warden_count_mismatch(
	.param .u64 p_data,
	.param .u64 p_n16,
	.param .u32 p_expected,
	.param .u64 p_count
)
{
	.reg .pred 	%p<8>;
	.reg .b32 	%r<12>;
	.reg .b64 	%rd<16>;

	ld.param.u64 	%rd1, [p_data];
	ld.param.u64 	%rd2, [p_n16];
	ld.param.u32 	%r1, [p_expected];
	ld.param.u64 	%rd3, [p_count];
	cvta.to.global.u64 	%rd1, %rd1;
	cvta.to.global.u64 	%rd3, %rd3;
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mov.u32 	%r5, %nctaid.x;
	mul.wide.u32 	%rd4, %r2, %r3;
	cvt.u64.u32 	%rd5, %r4;
	add.u64 	%rd4, %rd4, %rd5;
	mul.wide.u32 	%rd6, %r5, %r3;
	mov.u64 	%rd7, 0;
	setp.ge.u64 	%p1, %rd4, %rd2;
	@%p1 bra 	DONE;
LOOP:
	shl.b64 	%rd8, %rd4, 4;
	add.u64 	%rd9, %rd1, %rd8;
	ld.global.v4.u32 	{%r6, %r7, %r8, %r9}, [%rd9];
	setp.ne.u32 	%p2, %r6, %r1;
	selp.u64 	%rd10, 1, 0, %p2;
	add.u64 	%rd7, %rd7, %rd10;
	setp.ne.u32 	%p3, %r7, %r1;
	selp.u64 	%rd11, 1, 0, %p3;
	add.u64 	%rd7, %rd7, %rd11;
	setp.ne.u32 	%p4, %r8, %r1;
	selp.u64 	%rd12, 1, 0, %p4;
	add.u64 	%rd7, %rd7, %rd12;
	setp.ne.u32 	%p5, %r9, %r1;
	selp.u64 	%rd13, 1, 0, %p5;
	add.u64 	%rd7, %rd7, %rd13;
	add.u64 	%rd4, %rd4, %rd6;
	setp.lt.u64 	%p6, %rd4, %rd2;
	@%p6 bra 	LOOP;
DONE:
	setp.eq.u64 	%p7, %rd7, 0;
	@%p7 bra 	END;
	atom.global.add.u64 	%rd14, [%rd3], %rd7;
END:
	ret;
}
)PTX";

constexpr unsigned int kThreadsPerBlock = 256;
constexpr int kMaxChunks = 1 << 16;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

class CudaScrubber final : public MemoryScrubber {
 public:
  explicit CudaScrubber(CudaApi api) : api_(api) {}

  absl::StatusOr<ScrubReport> Scrub(std::string_view uuid, const ScrubOptions& o) override {
    // One scrub at a time per process: it takes (nearly) all of a device's memory.
    std::lock_guard lock(mu_);
    const auto t_start = std::chrono::steady_clock::now();
    if (!initialised_) {
      WARDEN_RETURN_IF_ERROR(Check("cuInit", api_.Init(0)));
      initialised_ = true;
    }
    if (o.min_chunk_bytes < 16 || o.min_chunk_bytes % 16 != 0 || o.chunk_bytes < o.min_chunk_bytes) {
      return absl::InvalidArgumentError("scrub chunk sizes must be multiples of 16 bytes, chunk >= min");
    }
    WARDEN_ASSIGN_OR_RETURN(CUdevice dev, FindDevice(uuid));
    ScrubReport r;
    r.device_uuid = std::string(uuid);
    char name[256] = {0};
    if (api_.DeviceGetName(name, sizeof(name) - 1, dev) == CUDA_SUCCESS) r.device_name = name;
    int sms = 0;
    WARDEN_RETURN_IF_ERROR(Check(
        "cuDeviceGetAttribute", api_.DeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)));
    CUcontext ctx = nullptr;
    WARDEN_RETURN_IF_ERROR(Check("cuDevicePrimaryCtxRetain", api_.PrimaryCtxRetain(&ctx, dev)));
    Session s(api_, dev);  // releases everything on every path out
    WARDEN_RETURN_IF_ERROR(Check("cuCtxSetCurrent", api_.CtxSetCurrent(ctx)));
    WARDEN_RETURN_IF_ERROR(Check("cuModuleLoadData (JIT of the verify kernel's PTX)",
                                 api_.ModuleLoadData(&s.module, kPtx)));
    CUfunction fn = nullptr;
    WARDEN_RETURN_IF_ERROR(
        Check("cuModuleGetFunction", api_.ModuleGetFunction(&fn, s.module, kVerifyKernelName)));
    WARDEN_RETURN_IF_ERROR(Check("cuMemAlloc (counter)", api_.MemAlloc(&s.counter, 16)));

    size_t free_bytes = 0, total_bytes = 0;
    WARDEN_RETURN_IF_ERROR(Check("cuMemGetInfo", api_.MemGetInfo(&free_bytes, &total_bytes)));
    r.free_bytes = free_bytes;
    r.total_bytes = total_bytes;
    // Take everything the driver gives: big chunks first, halving on out-of-memory.
    uint64_t chunk = o.chunk_bytes;
    while (chunk >= o.min_chunk_bytes && static_cast<int>(s.chunks.size()) < kMaxChunks) {
      CUdeviceptr p = 0;
      CUresult res = api_.MemAlloc(&p, chunk);
      if (res == CUDA_SUCCESS) {
        s.chunks.push_back({p, chunk});
        r.scrubbed_bytes += chunk;
        continue;
      }
      if (res != CUDA_ERROR_OUT_OF_MEMORY) return Check("cuMemAlloc", res);
      chunk = chunk / 2 / 16 * 16;
    }
    r.chunks = static_cast<int>(s.chunks.size());
    r.fraction_of_free =
        free_bytes ? static_cast<double>(r.scrubbed_bytes) / static_cast<double>(free_bytes) : 0;
    if (r.fraction_of_free < o.min_fraction) {
      return absl::ResourceExhaustedError(
          StrCat("could allocate only ", r.scrubbed_bytes, " of ", free_bytes,
                 " free bytes (need ", static_cast<int>(o.min_fraction * 100), "%)"));
    }
    const unsigned int max_blocks = static_cast<unsigned int>(std::max(sms, 1)) * 16;

    auto pass = [&](uint32_t value, double* write_s, double* verify_s) -> absl::StatusOr<uint64_t> {
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& c : s.chunks) {
        WARDEN_RETURN_IF_ERROR(Check("cuMemsetD32", api_.MemsetD32(c.ptr, value, c.bytes / 4)));
      }
      WARDEN_RETURN_IF_ERROR(Check("cuCtxSynchronize (fill)", api_.CtxSynchronize()));
      auto t1 = std::chrono::steady_clock::now();
      WARDEN_RETURN_IF_ERROR(Check("cuMemsetD32 (counter)", api_.MemsetD32(s.counter, 0, 2)));
      WARDEN_RETURN_IF_ERROR(Check("cuCtxSynchronize (counter)", api_.CtxSynchronize()));
      auto t2 = std::chrono::steady_clock::now();
      for (const auto& c : s.chunks) {
        CUdeviceptr data = c.ptr;
        uint64_t n16 = c.bytes / 16;
        uint32_t expected = value;
        CUdeviceptr counter = s.counter;
        void* args[] = {&data, &n16, &expected, &counter};
        const uint64_t want = (n16 + kThreadsPerBlock - 1) / kThreadsPerBlock;
        const unsigned int blocks =
            static_cast<unsigned int>(std::min<uint64_t>(std::max<uint64_t>(want, 1), max_blocks));
        WARDEN_RETURN_IF_ERROR(Check("cuLaunchKernel (verify)",
                                     api_.LaunchKernel(fn, blocks, 1, 1, kThreadsPerBlock, 1, 1,
                                                       0, nullptr, args, nullptr)));
      }
      WARDEN_RETURN_IF_ERROR(Check("cuCtxSynchronize (verify)", api_.CtxSynchronize()));
      auto t3 = std::chrono::steady_clock::now();
      uint64_t mismatches = 0;
      WARDEN_RETURN_IF_ERROR(
          Check("cuMemcpyDtoH (counter)", api_.MemcpyDtoH(&mismatches, s.counter, 8)));
      *write_s = Seconds(t1 - t0);
      *verify_s = Seconds(t3 - t2);
      return mismatches;
    };

    double ws = 0, vs = 0;
    if (o.pattern_pass) {
      WARDEN_ASSIGN_OR_RETURN(r.pattern_mismatches, pass(o.pattern, &ws, &vs));
    }
    WARDEN_ASSIGN_OR_RETURN(r.zero_mismatches, pass(0, &ws, &vs));
    r.write_seconds = ws;
    r.verify_seconds = vs;
    const double gb = static_cast<double>(r.scrubbed_bytes) / 1e9;
    r.write_gbps = ws > 0 ? gb / ws : 0;
    r.verify_gbps = vs > 0 ? gb / vs : 0;
    s.FreeAll();
    r.total_seconds = Seconds(std::chrono::steady_clock::now() - t_start);
    if (r.pattern_mismatches + r.zero_mismatches > 0) {
      r.failure = StrCat(r.pattern_mismatches, " word(s) did not read back the pattern and ",
                         r.zero_mismatches, " did not read back zero");
    }
    r.passed = r.failure.empty();
    return r;
  }

 private:
  struct Chunk {
    CUdeviceptr ptr;
    uint64_t bytes;
  };
  // Everything one scrub holds, released in reverse on destruction.
  struct Session {
    Session(const CudaApi& api, CUdevice dev) : api(api), dev(dev) {}
    ~Session() {
      FreeAll();
      if (counter != 0) api.MemFree(counter);
      if (module != nullptr) api.ModuleUnload(module);
      api.CtxSetCurrent(nullptr);
      api.PrimaryCtxRelease(dev);
    }
    void FreeAll() {
      for (const Chunk& c : chunks) api.MemFree(c.ptr);
      chunks.clear();
    }
    const CudaApi& api;
    CUdevice dev;
    CUmodule module = nullptr;
    CUdeviceptr counter = 0;
    std::vector<Chunk> chunks;
  };

  absl::Status Check(std::string_view call, CUresult r) const {
    if (r == CUDA_SUCCESS) return absl::OkStatus();
    const char* name = nullptr;
    if (api_.GetErrorName == nullptr || api_.GetErrorName(r, &name) != CUDA_SUCCESS) {
      name = nullptr;
    }
    std::string text = StrCat("CUDA ", call, " failed: ", name ? name : "error ", name ? "" : StrCat(r));
    if (r == CUDA_ERROR_OUT_OF_MEMORY) return absl::ResourceExhaustedError(text);
    if (r == 100 /* CUDA_ERROR_NO_DEVICE */) return absl::NotFoundError(text);
    return absl::UnavailableError(text);
  }

  absl::StatusOr<CUdevice> FindDevice(std::string_view uuid) {
    const std::string want = NormalizeDeviceUuid(uuid);
    int count = 0;
    WARDEN_RETURN_IF_ERROR(Check("cuDeviceGetCount", api_.DeviceGetCount(&count)));
    std::string seen;
    for (int i = 0; i < count; ++i) {
      CUdevice dev = 0;
      WARDEN_RETURN_IF_ERROR(Check("cuDeviceGet", api_.DeviceGet(&dev, i)));
      CUuuid u{};
      WARDEN_RETURN_IF_ERROR(Check("cuDeviceGetUuid_v2", api_.DeviceGetUuid(&u, dev)));
      const std::string have = FormatUuidBytes(u.bytes);
      if (have == want) return dev;
      seen += StrCat(seen.empty() ? "" : ", ", have);
    }
    return absl::NotFoundError(StrCat(
        "no CUDA device has UUID ", uuid.substr(0, 64), " (CUDA sees ", count, ": ",
        seen.empty() ? "none" : seen,
        "; a MIG instance is visible to CUDA only when CUDA_VISIBLE_DEVICES names it)"));
  }

  CudaApi api_;
  std::mutex mu_;
  bool initialised_ = false;
};

}  // namespace

const char* VerifyKernelPtx() { return kPtx; }

std::string NormalizeDeviceUuid(std::string_view uuid) {
  if (uuid.rfind("GPU-", 0) == 0 || uuid.rfind("MIG-", 0) == 0) uuid.remove_prefix(4);
  std::string out(uuid);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string FormatUuidBytes(const unsigned char bytes[16]) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 15];
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MemoryScrubber>> CreateCudaScrubber(const std::string& library) {
  void* lib = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = ::dlerror();
    return absl::NotFoundError(StrCat("CUDA driver library ", library, " not found (",
                                      err ? err : "dlopen failed",
                                      "): no NVIDIA driver on this machine, cannot scrub"));
  }
  CudaApi a;
  std::string missing;
  bool ok = Bind(lib, "cuInit", a.Init, &missing) &&
            Bind(lib, "cuDeviceGetCount", a.DeviceGetCount, &missing) &&
            Bind(lib, "cuDeviceGet", a.DeviceGet, &missing) &&
            Bind(lib, "cuDeviceGetName", a.DeviceGetName, &missing) &&
            Bind(lib, "cuDeviceGetUuid_v2", a.DeviceGetUuid, &missing) &&
            Bind(lib, "cuDeviceGetAttribute", a.DeviceGetAttribute, &missing) &&
            Bind(lib, "cuDevicePrimaryCtxRetain", a.PrimaryCtxRetain, &missing) &&
            Bind(lib, "cuDevicePrimaryCtxRelease_v2", a.PrimaryCtxRelease, &missing) &&
            Bind(lib, "cuCtxSetCurrent", a.CtxSetCurrent, &missing) &&
            Bind(lib, "cuCtxSynchronize", a.CtxSynchronize, &missing) &&
            Bind(lib, "cuMemGetInfo_v2", a.MemGetInfo, &missing) &&
            Bind(lib, "cuMemAlloc_v2", a.MemAlloc, &missing) &&
            Bind(lib, "cuMemFree_v2", a.MemFree, &missing) &&
            Bind(lib, "cuMemsetD32_v2", a.MemsetD32, &missing) &&
            Bind(lib, "cuMemcpyDtoH_v2", a.MemcpyDtoH, &missing) &&
            Bind(lib, "cuModuleLoadData", a.ModuleLoadData, &missing) &&
            Bind(lib, "cuModuleUnload", a.ModuleUnload, &missing) &&
            Bind(lib, "cuModuleGetFunction", a.ModuleGetFunction, &missing) &&
            Bind(lib, "cuLaunchKernel", a.LaunchKernel, &missing) &&
            Bind(lib, "cuGetErrorName", a.GetErrorName, &missing);
  if (!ok) {
    ::dlclose(lib);
    return absl::FailedPreconditionError(StrCat("CUDA driver library ", library,
                                                " lacks the function ", missing,
                                                " (not libcuda, or a driver older than CUDA 11.4)"));
  }
  // The library stays loaded for the process's life (the driver does not support unloading
  // after cuInit).
  return std::unique_ptr<MemoryScrubber>(std::make_unique<CudaScrubber>(a));
}

}  // namespace warden::gpu
