// The NVML backend: libnvidia-ml.so.1 loaded with dlopen at run time, so gpuwarden has no
// link-time dependency on the NVIDIA driver and runs (with zero GPUs) on machines without it.
//
// Written against NVML's documented C API. nvml.h is not a build dependency: the few types and
// function signatures used are declared below exactly as the API reference gives them (all
// handles are opaque pointers, every call returns nvmlReturn_t, an int-sized enum).
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "common/status.h"
#include "common/strings.h"
#include "gpu/gpu.h"

namespace warden::gpu {
namespace {

using common::StrCat;

// ---- the subset of nvml.h we use ----
using nvmlReturn_t = int;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr nvmlReturn_t NVML_ERROR_INVALID_ARGUMENT = 2;
constexpr nvmlReturn_t NVML_ERROR_NOT_SUPPORTED = 3;
constexpr nvmlReturn_t NVML_ERROR_NO_PERMISSION = 4;
constexpr nvmlReturn_t NVML_ERROR_NOT_FOUND = 6;
constexpr nvmlReturn_t NVML_ERROR_IN_USE = 19;
constexpr nvmlReturn_t NVML_ERROR_INSUFFICIENT_RESOURCES = 23;
using nvmlDevice_t = struct nvmlDevice_st*;
using nvmlGpuInstance_t = struct nvmlGpuInstance_st*;
using nvmlComputeInstance_t = struct nvmlComputeInstance_st*;
// NVML_COMPUTE_INSTANCE_PROFILE_{1,2,3,4,7}_SLICE; NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED.
constexpr unsigned int kCiProfile1 = 0x0, kCiProfile2 = 0x1, kCiProfile3 = 0x2,
                       kCiProfile4 = 0x3, kCiProfile7 = 0x4;
constexpr unsigned int kCiEngineShared = 0x0;
struct nvmlComputeInstanceProfileInfo_t {
  unsigned int id;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int sharedCopyEngineCount;
  unsigned int sharedDecoderCount;
  unsigned int sharedEncoderCount;
  unsigned int sharedJpegCount;
  unsigned int sharedOfaCount;
};
using nvmlEnableState_t = int;  // NVML_FEATURE_DISABLED = 0, NVML_FEATURE_ENABLED = 1
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct nvmlGpuInstancePlacement_t {
  unsigned int start;
  unsigned int size;
};
struct nvmlGpuInstanceInfo_t {
  nvmlDevice_t device;
  unsigned int id;
  unsigned int profileId;
  nvmlGpuInstancePlacement_t placement;
};
struct nvmlProcessInfo_t {  // the _v2/_v3 layout
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
constexpr unsigned int kNameBuffer = 96;    // NVML_DEVICE_NAME_V2_BUFFER_SIZE
constexpr unsigned int kUuidBuffer = 96;    // NVML_DEVICE_UUID_V2_BUFFER_SIZE
constexpr unsigned int kDriverBuffer = 80;  // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
constexpr unsigned int kMaxProcesses = 256;

struct NvmlApi {
  void* lib = nullptr;
  nvmlReturn_t (*Init)() = nullptr;      // nvmlInit_v2
  nvmlReturn_t (*Shutdown)() = nullptr;  // nvmlShutdown
  const char* (*ErrorString)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*SystemGetDriverVersion)(char*, unsigned int) = nullptr;
  nvmlReturn_t (*SystemGetCudaDriverVersion)(int*) = nullptr;                     // _v2
  nvmlReturn_t (*DeviceGetCount)(unsigned int*) = nullptr;                        // _v2
  nvmlReturn_t (*DeviceGetHandleByIndex)(unsigned int, nvmlDevice_t*) = nullptr;  // _v2
  nvmlReturn_t (*DeviceGetName)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*DeviceGetUUID)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*DeviceGetMemoryInfo)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*DeviceGetEccMode)(nvmlDevice_t, nvmlEnableState_t*, nvmlEnableState_t*) = nullptr;
  nvmlReturn_t (*DeviceGetMigMode)(nvmlDevice_t, unsigned int*, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetMaxMigDeviceCount)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetMigDeviceHandleByIndex)(nvmlDevice_t, unsigned int,
                                                  nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*DeviceGetGpuInstanceId)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetGpuInstanceById)(nvmlDevice_t, unsigned int,
                                           nvmlGpuInstance_t*) = nullptr;
  nvmlReturn_t (*GpuInstanceGetInfo)(nvmlGpuInstance_t, nvmlGpuInstanceInfo_t*) = nullptr;
  nvmlReturn_t (*DeviceGetComputeRunningProcesses)(nvmlDevice_t, unsigned int*,
                                                   nvmlProcessInfo_t*) = nullptr;  // _v3
  // MIG instance create/destroy (optional: without them Create/Destroy say so).
  nvmlReturn_t (*DeviceCreateGpuInstanceWithPlacement)(nvmlDevice_t, unsigned int,
                                                       const nvmlGpuInstancePlacement_t*,
                                                       nvmlGpuInstance_t*) = nullptr;
  nvmlReturn_t (*GpuInstanceGetComputeInstanceProfileInfo)(
      nvmlGpuInstance_t, unsigned int, unsigned int, nvmlComputeInstanceProfileInfo_t*) = nullptr;
  nvmlReturn_t (*GpuInstanceCreateComputeInstance)(nvmlGpuInstance_t, unsigned int,
                                                   nvmlComputeInstance_t*) = nullptr;
  nvmlReturn_t (*GpuInstanceGetComputeInstanceById)(nvmlGpuInstance_t, unsigned int,
                                                    nvmlComputeInstance_t*) = nullptr;
  nvmlReturn_t (*DeviceGetComputeInstanceId)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*ComputeInstanceDestroy)(nvmlComputeInstance_t) = nullptr;
  nvmlReturn_t (*GpuInstanceDestroy)(nvmlGpuInstance_t) = nullptr;
  nvmlReturn_t (*DeviceGetGraphicsRunningProcesses)(nvmlDevice_t, unsigned int*,
                                                    nvmlProcessInfo_t*) = nullptr;  // _v3
};

// Looks `symbol` up; on failure remembers its name in `*missing` (first one wins).
template <typename F>
bool Bind(void* lib, const char* symbol, F& out, std::string* missing = nullptr) {
  out = reinterpret_cast<F>(::dlsym(lib, symbol));
  if (out == nullptr && missing != nullptr && missing->empty()) *missing = symbol;
  return out != nullptr;
}

// Model short name from the product name NVML reports ("NVIDIA H100 80GB HBM3" -> "H100-80GB").
const GpuModel* ModelFor(const std::string& product_name) {
  for (const auto& m : KnownGpuModels()) {
    if (m.product_name == product_name) return &m;
  }
  return nullptr;
}

class NvmlBackend final : public GpuBackend {
 public:
  explicit NvmlBackend(NvmlApi api) : api_(api) {}
  ~NvmlBackend() override {
    api_.Shutdown();
    // The library stays loaded: unloading a driver library at exit gains nothing.
  }

  std::string_view name() const override { return "nvml"; }

  absl::StatusOr<std::vector<GpuDevice>> Discover() override {
    std::lock_guard lock(mu_);
    char driver[kDriverBuffer] = {0};
    if (nvmlReturn_t r = api_.SystemGetDriverVersion(driver, sizeof(driver)); r != NVML_SUCCESS) {
      return Error("nvmlSystemGetDriverVersion", r);
    }
    std::string cuda;
    int cuda_version = 0;
    if (api_.SystemGetCudaDriverVersion(&cuda_version) == NVML_SUCCESS) {
      // Encoded as 1000 * major + 10 * minor (e.g. 13000 -> "13.0", 12040 -> "12.4").
      cuda = StrCat(cuda_version / 1000, ".", (cuda_version % 1000) / 10);
    }
    unsigned int count = 0;
    if (nvmlReturn_t r = api_.DeviceGetCount(&count); r != NVML_SUCCESS) {
      return Error("nvmlDeviceGetCount_v2", r);
    }
    std::vector<GpuDevice> out;
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t dev = nullptr;
      if (nvmlReturn_t r = api_.DeviceGetHandleByIndex(i, &dev); r != NVML_SUCCESS) {
        return Error(StrCat("nvmlDeviceGetHandleByIndex_v2(", i, ")"), r);
      }
      GpuDevice d;
      d.index = static_cast<int>(i);
      d.driver_version = driver;
      d.cuda_version = cuda;
      char buf[kNameBuffer] = {0};
      if (nvmlReturn_t r = api_.DeviceGetName(dev, buf, sizeof(buf)); r != NVML_SUCCESS) {
        return Error("nvmlDeviceGetName", r);
      }
      d.product_name = buf;
      char uuid[kUuidBuffer] = {0};
      if (nvmlReturn_t r = api_.DeviceGetUUID(dev, uuid, sizeof(uuid)); r != NVML_SUCCESS) {
        return Error("nvmlDeviceGetUUID", r);
      }
      d.uuid = uuid;
      nvmlMemory_t mem{};
      if (nvmlReturn_t r = api_.DeviceGetMemoryInfo(dev, &mem); r != NVML_SUCCESS) {
        return Error("nvmlDeviceGetMemoryInfo", r);
      }
      d.memory_mib = mem.total / (1024 * 1024);
      const GpuModel* model = ModelFor(d.product_name);
      if (model != nullptr) d.model = model->name;
      nvmlEnableState_t ecc = 0, ecc_pending = 0;
      d.ecc_enabled = api_.DeviceGetEccMode(dev, &ecc, &ecc_pending) == NVML_SUCCESS && ecc == 1;
      unsigned int mig = 0, mig_pending = 0;
      nvmlReturn_t mr = api_.DeviceGetMigMode(dev, &mig, &mig_pending);
      d.mig_capable = mr == NVML_SUCCESS;
      d.mig_enabled = mr == NVML_SUCCESS && mig == 1;
      if (mr != NVML_SUCCESS && mr != NVML_ERROR_NOT_SUPPORTED) {
        return Error("nvmlDeviceGetMigMode", mr);
      }
      if (d.mig_enabled) WARDEN_RETURN_IF_ERROR(MigInstances(dev, model, d));
      Processes(dev, d);
      out.push_back(std::move(d));
    }
    return out;
  }

  // The handoff's process check. Unlike the inventory's telemetry, every failure here is an
  // error: the caller must not conclude "no process" from a query that did not answer.
  absl::StatusOr<std::vector<GpuProcess>> RunningProcesses(std::string_view uuid) override {
    std::lock_guard lock(mu_);
    if (api_.DeviceGetComputeRunningProcesses == nullptr) {
      return absl::FailedPreconditionError(
          "NVML lacks nvmlDeviceGetComputeRunningProcesses: cannot prove the device is free");
    }
    WARDEN_ASSIGN_OR_RETURN(nvmlDevice_t dev, HandleFor(uuid));
    std::vector<GpuProcess> out;
    const std::string mig = uuid.rfind("MIG-", 0) == 0 ? std::string(uuid) : std::string();
    WARDEN_RETURN_IF_ERROR(
        ListProcesses(dev, api_.DeviceGetComputeRunningProcesses, "Compute", mig, out));
    if (api_.DeviceGetGraphicsRunningProcesses != nullptr) {
      WARDEN_RETURN_IF_ERROR(
          ListProcesses(dev, api_.DeviceGetGraphicsRunningProcesses, "Graphics", mig, out));
    }
    return out;
  }

  absl::StatusOr<MigInstanceInfo> CreateMigInstance(std::string_view, int) override {
    return absl::UnimplementedError(
        "the NVML backend creates MIG instances only at an explicit placement "
        "(CreateMigInstanceAt): the scheduler chooses the start");
  }

  // nvmlDeviceCreateGpuInstanceWithPlacement at (start, memory slices of the profile), then one
  // compute instance over all of its compute slices (nvmlGpuInstanceCreateComputeInstance with
  // the CI profile of the same slice count), then the new MIG device's UUID. A failure after
  // the GPU instance exists destroys it again, so nothing is left behind.
  absl::StatusOr<MigInstanceInfo> CreateMigInstanceAt(std::string_view gpu_uuid, int profile_id,
                                                      int start) override {
    std::lock_guard lock(mu_);
    WARDEN_RETURN_IF_ERROR(NeedMigControl());
    WARDEN_ASSIGN_OR_RETURN(Parent parent, ParentFor(gpu_uuid));
    const MigProfile* p = parent.model ? parent.model->FindProfile(profile_id) : nullptr;
    if (p == nullptr) {
      return absl::InvalidArgumentError(StrCat("GPU ", gpu_uuid.substr(0, 64),
                                               " has no GPU instance profile ", profile_id,
                                               " known to gpuwarden"));
    }
    // Our rules first, so a refusal names the rule; the driver checks again.
    if (std::find(p->allowed_starts.begin(), p->allowed_starts.end(), start) ==
        p->allowed_starts.end()) {
      return absl::InvalidArgumentError(
          StrCat("profile ", p->name, " cannot start at memory slice ", start));
    }
    nvmlGpuInstancePlacement_t placement{static_cast<unsigned int>(start),
                                         static_cast<unsigned int>(p->memory_slices)};
    nvmlGpuInstance_t gi = nullptr;
    if (nvmlReturn_t r = api_.DeviceCreateGpuInstanceWithPlacement(
            parent.dev, static_cast<unsigned int>(profile_id), &placement, &gi);
        r != NVML_SUCCESS) {
      return MigError("nvmlDeviceCreateGpuInstanceWithPlacement", r);
    }
    auto undo = [&](absl::Status s) {
      (void)api_.GpuInstanceDestroy(gi);
      return s;
    };
    unsigned int ci_profile = kCiProfile1;
    switch (p->compute_slices) {
      case 1: ci_profile = kCiProfile1; break;
      case 2: ci_profile = kCiProfile2; break;
      case 3: ci_profile = kCiProfile3; break;
      case 4: ci_profile = kCiProfile4; break;
      case 7: ci_profile = kCiProfile7; break;
      default: return undo(absl::InternalError(StrCat("profile ", p->name, ": no CI profile")));
    }
    nvmlComputeInstanceProfileInfo_t ci_info{};
    if (nvmlReturn_t r = api_.GpuInstanceGetComputeInstanceProfileInfo(gi, ci_profile,
                                                                        kCiEngineShared, &ci_info);
        r != NVML_SUCCESS) {
      return undo(MigError("nvmlGpuInstanceGetComputeInstanceProfileInfo", r));
    }
    nvmlComputeInstance_t ci = nullptr;
    if (nvmlReturn_t r = api_.GpuInstanceCreateComputeInstance(gi, ci_info.id, &ci);
        r != NVML_SUCCESS) {
      return undo(MigError("nvmlGpuInstanceCreateComputeInstance", r));
    }
    nvmlGpuInstanceInfo_t gi_info{};
    if (nvmlReturn_t r = api_.GpuInstanceGetInfo(gi, &gi_info); r != NVML_SUCCESS) {
      (void)api_.ComputeInstanceDestroy(ci);
      return undo(MigError("nvmlGpuInstanceGetInfo", r));
    }
    GpuDevice d;
    if (absl::Status s = MigInstances(parent.dev, parent.model, d); !s.ok()) {
      (void)api_.ComputeInstanceDestroy(ci);
      return undo(s);
    }
    for (MigInstanceInfo& m : d.mig_instances) {
      if (m.gpu_instance_id == static_cast<int>(gi_info.id) && !m.uuid.empty()) return m;
    }
    (void)api_.ComputeInstanceDestroy(ci);
    return undo(absl::UnavailableError(StrCat("NVML created GPU instance ", gi_info.id, " on ",
                                              gpu_uuid.substr(0, 64),
                                              " but lists no MIG device for it")));
  }

  // The MIG device's GPU instance id and compute instance id lead to the handles; the compute
  // instance goes first, then the GPU instance (NVML refuses the GI while a CI exists).
  absl::Status DestroyMigInstance(std::string_view gpu_uuid, std::string_view mig_uuid) override {
    std::lock_guard lock(mu_);
    WARDEN_RETURN_IF_ERROR(NeedMigControl());
    WARDEN_ASSIGN_OR_RETURN(Parent parent, ParentFor(gpu_uuid));
    GpuDevice d;
    WARDEN_RETURN_IF_ERROR(MigInstances(parent.dev, parent.model, d));
    const MigInstanceInfo* found = nullptr;
    for (const MigInstanceInfo& m : d.mig_instances) {
      if (m.uuid == mig_uuid) found = &m;
    }
    if (found == nullptr || found->gpu_instance_id < 0) {
      return absl::NotFoundError(StrCat("GPU ", gpu_uuid.substr(0, 64), ": no GPU instance ",
                                        mig_uuid.substr(0, 64)));
    }
    nvmlGpuInstance_t gi = nullptr;
    if (nvmlReturn_t r = api_.DeviceGetGpuInstanceById(
            parent.dev, static_cast<unsigned int>(found->gpu_instance_id), &gi);
        r != NVML_SUCCESS) {
      return MigError("nvmlDeviceGetGpuInstanceById", r);
    }
    if (found->compute_instance_id >= 0) {
      nvmlComputeInstance_t ci = nullptr;
      nvmlReturn_t r = api_.GpuInstanceGetComputeInstanceById(
          gi, static_cast<unsigned int>(found->compute_instance_id), &ci);
      if (r == NVML_SUCCESS) r = api_.ComputeInstanceDestroy(ci);
      if (r != NVML_SUCCESS && r != NVML_ERROR_NOT_FOUND) {
        return MigError("nvmlComputeInstanceDestroy", r);
      }
    }
    if (nvmlReturn_t r = api_.GpuInstanceDestroy(gi); r != NVML_SUCCESS) {
      return MigError("nvmlGpuInstanceDestroy", r);
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(std::string_view call, nvmlReturn_t r) const {
    const char* text = api_.ErrorString ? api_.ErrorString(r) : nullptr;
    return absl::UnavailableError(StrCat("NVML ", call, " failed: ", text ? text : "error ", r));
  }

  // NVML's MIG errors with the codes callers branch on.
  absl::Status MigError(std::string_view call, nvmlReturn_t r) const {
    const char* text = api_.ErrorString ? api_.ErrorString(r) : nullptr;
    std::string msg = StrCat("NVML ", call, " failed: ", text ? text : "error ", r);
    switch (r) {
      case NVML_ERROR_INVALID_ARGUMENT: return absl::InvalidArgumentError(msg);
      case NVML_ERROR_INSUFFICIENT_RESOURCES: return absl::ResourceExhaustedError(msg);
      case NVML_ERROR_NO_PERMISSION: return absl::PermissionDeniedError(msg);
      case NVML_ERROR_NOT_FOUND: return absl::NotFoundError(msg);
      case NVML_ERROR_IN_USE: return absl::FailedPreconditionError(msg);
      case NVML_ERROR_NOT_SUPPORTED: return absl::FailedPreconditionError(msg);
      default: return absl::UnavailableError(msg);
    }
  }

  absl::Status NeedMigControl() const {
    if (api_.DeviceCreateGpuInstanceWithPlacement == nullptr ||
        api_.GpuInstanceGetComputeInstanceProfileInfo == nullptr ||
        api_.GpuInstanceCreateComputeInstance == nullptr ||
        api_.GpuInstanceGetComputeInstanceById == nullptr ||
        api_.DeviceGetComputeInstanceId == nullptr || api_.ComputeInstanceDestroy == nullptr ||
        api_.GpuInstanceDestroy == nullptr) {
      return absl::FailedPreconditionError(
          "this NVML lacks the MIG instance functions (driver too old): cannot create or destroy");
    }
    return absl::OkStatus();
  }

  struct Parent {
    nvmlDevice_t dev = nullptr;
    const GpuModel* model = nullptr;
  };
  // A whole GPU by UUID, in MIG mode (FailedPrecondition otherwise: MIG mode is never changed).
  absl::StatusOr<Parent> ParentFor(std::string_view gpu_uuid) {
    unsigned int count = 0;
    if (nvmlReturn_t r = api_.DeviceGetCount(&count); r != NVML_SUCCESS) {
      return Error("nvmlDeviceGetCount_v2", r);
    }
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t dev = nullptr;
      if (nvmlReturn_t r = api_.DeviceGetHandleByIndex(i, &dev); r != NVML_SUCCESS) {
        return Error(StrCat("nvmlDeviceGetHandleByIndex_v2(", i, ")"), r);
      }
      char buf[kUuidBuffer] = {0};
      if (api_.DeviceGetUUID(dev, buf, sizeof(buf)) != NVML_SUCCESS || gpu_uuid != buf) continue;
      unsigned int mig = 0, pending = 0;
      if (api_.DeviceGetMigMode(dev, &mig, &pending) != NVML_SUCCESS || mig != 1) {
        return absl::FailedPreconditionError(StrCat("GPU ", buf, ": MIG mode is off"));
      }
      char name[kNameBuffer] = {0};
      Parent p;
      p.dev = dev;
      if (api_.DeviceGetName(dev, name, sizeof(name)) == NVML_SUCCESS) p.model = ModelFor(name);
      return p;
    }
    return absl::NotFoundError(StrCat("no GPU ", gpu_uuid.substr(0, 64)));
  }

  absl::Status MigInstances(nvmlDevice_t dev, const GpuModel* model, GpuDevice& d) {
    unsigned int max = 0;
    if (nvmlReturn_t r = api_.DeviceGetMaxMigDeviceCount(dev, &max); r != NVML_SUCCESS) {
      return Error("nvmlDeviceGetMaxMigDeviceCount", r);
    }
    for (unsigned int k = 0; k < max; ++k) {
      nvmlDevice_t mig = nullptr;
      // Slots without an instance answer NOT_FOUND; skip them.
      if (api_.DeviceGetMigDeviceHandleByIndex(dev, k, &mig) != NVML_SUCCESS) continue;
      MigInstanceInfo m;
      char uuid[kUuidBuffer] = {0};
      if (api_.DeviceGetUUID(mig, uuid, sizeof(uuid)) == NVML_SUCCESS) m.uuid = uuid;
      nvmlMemory_t mem{};
      if (api_.DeviceGetMemoryInfo(mig, &mem) == NVML_SUCCESS) m.memory_mib = mem.total >> 20;
      unsigned int gi_id = 0;
      nvmlGpuInstance_t gi = nullptr;
      nvmlGpuInstanceInfo_t info{};
      if (api_.DeviceGetGpuInstanceId(mig, &gi_id) == NVML_SUCCESS &&
          api_.DeviceGetGpuInstanceById(dev, gi_id, &gi) == NVML_SUCCESS &&
          api_.GpuInstanceGetInfo(gi, &info) == NVML_SUCCESS) {
        m.profile_id = static_cast<int>(info.profileId);
        m.start = static_cast<int>(info.placement.start);
        m.gpu_instance_id = static_cast<int>(gi_id);
        unsigned int ci_id = 0;
        if (api_.DeviceGetComputeInstanceId != nullptr &&
            api_.DeviceGetComputeInstanceId(mig, &ci_id) == NVML_SUCCESS) {
          m.compute_instance_id = static_cast<int>(ci_id);
        }
        if (model != nullptr) {
          if (const MigProfile* p = model->FindProfile(m.profile_id)) m.profile_name = p->name;
        }
      }
      d.mig_instances.push_back(std::move(m));
    }
    return absl::OkStatus();
  }

  // The handle of a GPU or MIG device by UUID, found by walking the devices (the MIG handles
  // too) rather than by nvmlDeviceGetHandleByUUID, whose MIG support varies across drivers.
  absl::StatusOr<nvmlDevice_t> HandleFor(std::string_view uuid) {
    unsigned int count = 0;
    if (nvmlReturn_t r = api_.DeviceGetCount(&count); r != NVML_SUCCESS) {
      return Error("nvmlDeviceGetCount_v2", r);
    }
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t dev = nullptr;
      if (nvmlReturn_t r = api_.DeviceGetHandleByIndex(i, &dev); r != NVML_SUCCESS) {
        return Error(StrCat("nvmlDeviceGetHandleByIndex_v2(", i, ")"), r);
      }
      char buf[kUuidBuffer] = {0};
      if (nvmlReturn_t r = api_.DeviceGetUUID(dev, buf, sizeof(buf)); r != NVML_SUCCESS) {
        return Error("nvmlDeviceGetUUID", r);
      }
      if (uuid == buf) return dev;
      unsigned int mig = 0, pending = 0;
      if (api_.DeviceGetMigMode(dev, &mig, &pending) != NVML_SUCCESS || mig != 1) continue;
      unsigned int max = 0;
      if (api_.DeviceGetMaxMigDeviceCount(dev, &max) != NVML_SUCCESS) continue;
      for (unsigned int k = 0; k < max; ++k) {
        nvmlDevice_t m = nullptr;
        if (api_.DeviceGetMigDeviceHandleByIndex(dev, k, &m) != NVML_SUCCESS) continue;
        char mbuf[kUuidBuffer] = {0};
        if (api_.DeviceGetUUID(m, mbuf, sizeof(mbuf)) == NVML_SUCCESS && uuid == mbuf) return m;
      }
    }
    return absl::NotFoundError(StrCat("NVML knows no GPU or MIG device with UUID ",
                                      uuid.substr(0, 64)));
  }

  using ProcessQuery = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*);
  absl::Status ListProcesses(nvmlDevice_t dev, ProcessQuery query, std::string_view kind,
                             const std::string& mig, std::vector<GpuProcess>& out) {
    unsigned int n = kMaxProcesses;
    std::vector<nvmlProcessInfo_t> procs(kMaxProcesses);
    nvmlReturn_t r = query(dev, &n, procs.data());
    // Graphics contexts do not exist on compute-only boards; NVML says so with NOT_SUPPORTED.
    if (r == NVML_ERROR_NOT_SUPPORTED && kind == "Graphics") return absl::OkStatus();
    if (r != NVML_SUCCESS) {
      // INSUFFICIENT_SIZE (more than kMaxProcesses) lands here too: busy either way.
      return Error(StrCat("nvmlDeviceGet", kind, "RunningProcesses"), r);
    }
    for (unsigned int i = 0; i < n && i < kMaxProcesses; ++i) {
      out.push_back(GpuProcess{procs[i].pid, procs[i].usedGpuMemory >> 20, mig});
    }
    return absl::OkStatus();
  }

  void Processes(nvmlDevice_t dev, GpuDevice& d) {
    unsigned int n = kMaxProcesses;
    std::vector<nvmlProcessInfo_t> procs(kMaxProcesses);
    if (api_.DeviceGetComputeRunningProcesses == nullptr ||
        api_.DeviceGetComputeRunningProcesses(dev, &n, procs.data()) != NVML_SUCCESS) {
      return;  // telemetry, not inventory: absent on old drivers, never fatal
    }
    for (unsigned int i = 0; i < n && i < kMaxProcesses; ++i) {
      d.processes.push_back(GpuProcess{procs[i].pid, procs[i].usedGpuMemory >> 20, ""});
    }
  }

  NvmlApi api_;
  std::mutex mu_;  // NVML is thread-safe; one Discover at a time keeps snapshots consistent
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuBackend>> CreateNvmlBackend(const std::string& library) {
  void* lib = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = ::dlerror();  // copied by StrCat before any other dl call
    return absl::NotFoundError(StrCat("NVML library ", library, " not found (",
                                      err ? err : "dlopen failed",
                                      "): no NVIDIA driver on this machine"));
  }
  NvmlApi api;
  api.lib = lib;
  std::string missing;
  bool ok =
      Bind(lib, "nvmlInit_v2", api.Init, &missing) &&
      Bind(lib, "nvmlShutdown", api.Shutdown, &missing) &&
      Bind(lib, "nvmlErrorString", api.ErrorString, &missing) &&
      Bind(lib, "nvmlSystemGetDriverVersion", api.SystemGetDriverVersion, &missing) &&
      Bind(lib, "nvmlSystemGetCudaDriverVersion_v2", api.SystemGetCudaDriverVersion, &missing) &&
      Bind(lib, "nvmlDeviceGetCount_v2", api.DeviceGetCount, &missing) &&
      Bind(lib, "nvmlDeviceGetHandleByIndex_v2", api.DeviceGetHandleByIndex, &missing) &&
      Bind(lib, "nvmlDeviceGetName", api.DeviceGetName, &missing) &&
      Bind(lib, "nvmlDeviceGetUUID", api.DeviceGetUUID, &missing) &&
      Bind(lib, "nvmlDeviceGetMemoryInfo", api.DeviceGetMemoryInfo, &missing) &&
      Bind(lib, "nvmlDeviceGetEccMode", api.DeviceGetEccMode, &missing) &&
      Bind(lib, "nvmlDeviceGetMigMode", api.DeviceGetMigMode, &missing) &&
      Bind(lib, "nvmlDeviceGetMaxMigDeviceCount", api.DeviceGetMaxMigDeviceCount, &missing) &&
      Bind(lib, "nvmlDeviceGetMigDeviceHandleByIndex", api.DeviceGetMigDeviceHandleByIndex,
           &missing) &&
      Bind(lib, "nvmlDeviceGetGpuInstanceId", api.DeviceGetGpuInstanceId, &missing) &&
      Bind(lib, "nvmlDeviceGetGpuInstanceById", api.DeviceGetGpuInstanceById, &missing) &&
      Bind(lib, "nvmlGpuInstanceGetInfo", api.GpuInstanceGetInfo, &missing);
  if (!ok) {
    ::dlclose(lib);
    return absl::FailedPreconditionError(StrCat("NVML library ", library, " lacks the function ",
                                                missing, " (not NVML, or a driver too old)"));
  }
  // Optional: older drivers have only _v2 of this one.
  if (!Bind(lib, "nvmlDeviceGetComputeRunningProcesses_v3", api.DeviceGetComputeRunningProcesses)) {
    Bind(lib, "nvmlDeviceGetComputeRunningProcesses_v2", api.DeviceGetComputeRunningProcesses);
  }
  if (!Bind(lib, "nvmlDeviceGetGraphicsRunningProcesses_v3",
            api.DeviceGetGraphicsRunningProcesses)) {
    Bind(lib, "nvmlDeviceGetGraphicsRunningProcesses_v2", api.DeviceGetGraphicsRunningProcesses);
  }
  // Optional: MIG instance create/destroy (NeedMigControl reports their absence).
  Bind(lib, "nvmlDeviceCreateGpuInstanceWithPlacement", api.DeviceCreateGpuInstanceWithPlacement);
  Bind(lib, "nvmlGpuInstanceGetComputeInstanceProfileInfo",
       api.GpuInstanceGetComputeInstanceProfileInfo);
  Bind(lib, "nvmlGpuInstanceCreateComputeInstance", api.GpuInstanceCreateComputeInstance);
  Bind(lib, "nvmlGpuInstanceGetComputeInstanceById", api.GpuInstanceGetComputeInstanceById);
  Bind(lib, "nvmlDeviceGetComputeInstanceId", api.DeviceGetComputeInstanceId);
  Bind(lib, "nvmlComputeInstanceDestroy", api.ComputeInstanceDestroy);
  Bind(lib, "nvmlGpuInstanceDestroy", api.GpuInstanceDestroy);
  if (nvmlReturn_t r = api.Init(); r != NVML_SUCCESS) {
    const char* text = api.ErrorString(r);
    std::string why = text ? text : StrCat("error ", r);  // before dlclose unmaps the string
    ::dlclose(lib);
    return absl::UnavailableError(StrCat("nvmlInit_v2 failed: ", why));
  }
  return std::unique_ptr<GpuBackend>(std::make_unique<NvmlBackend>(api));
}

}  // namespace warden::gpu
