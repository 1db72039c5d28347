// The sim spec parser/printer and the simulated GPU backend.
#include <algorithm>
#include <functional>
#include <map>
#include <mutex>

#include "common/encoding.h"
#include "common/status.h"
#include "common/strings.h"
#include "gpu/gpu.h"

namespace warden::gpu {
namespace {

using common::StrCat;

// Untrusted text goes into error messages quoted, with control and non-ASCII bytes escaped and
// long parts cut, so that a hostile flag value cannot forge log lines.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 64;
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > kMax) out += "...";
  out += '"';
  return out;
}

std::string KnownModelNames() {
  std::string out;
  for (const GpuModel& m : KnownGpuModels()) out += StrCat(out.empty() ? "" : ", ", m.name);
  return out;
}

absl::Status ItemError(size_t n, std::string_view item, std::string_view why) {
  return absl::InvalidArgumentError(StrCat("sim spec item ", n + 1, " ", Quote(item), ": ", why));
}

absl::StatusOr<SimSpecItem> ParseItem(size_t n, std::string_view item) {
  const size_t x = item.find('x');
  if (x == std::string_view::npos) return ItemError(n, item, "expected COUNTxMODEL[:mig]");
  const std::string_view count_text = item.substr(0, x);
  std::string_view rest = item.substr(x + 1);
  if (count_text.empty()) return ItemError(n, item, "missing GPU count before 'x'");
  if (!std::all_of(count_text.begin(), count_text.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return ItemError(n, item, "GPU count must be decimal digits");
  }
  if (count_text.size() > 1 && count_text[0] == '0') {
    return ItemError(n, item, "GPU count has a leading zero");
  }
  // At most two digits reach here within range; longer texts are out of range without parsing
  // (no overflow).
  int count = 0;
  if (count_text.size() <= 2) {
    for (char c : count_text) count = count * 10 + (c - '0');
  }
  if (count_text.size() > 2 || count < 1 || count > kMaxSimGpus) {
    return ItemError(n, item, StrCat("GPU count must be 1..", kMaxSimGpus));
  }
  SimSpecItem out;
  out.count = count;
  const size_t colon = rest.find(':');
  if (colon != std::string_view::npos) {
    const std::string_view option = rest.substr(colon + 1);
    if (option != "mig") {
      return ItemError(n, item, StrCat("unknown option ", Quote(option), " (only \"mig\")"));
    }
    out.mig = true;
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return ItemError(n, item, "missing GPU model after 'x'");
  const GpuModel* model = FindGpuModel(rest);
  if (model == nullptr) {
    return ItemError(
        n, item, StrCat("unknown GPU model ", Quote(rest), " (known: ", KnownModelNames(), ")"));
  }
  if (out.mig && !model->mig_capable) {
    return ItemError(n, item, StrCat(model->name, " is not MIG-capable"));
  }
  out.model = model->name;
  return out;
}

std::string UuidShape(std::string_view digest) {
  const std::string hex = common::HexEncode(digest.substr(0, 16));
  return StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                hex.substr(16, 4), "-", hex.substr(20, 12));
}

}  // namespace

int SimSpec::total_gpus() const {
  int total = 0;
  for (const SimSpecItem& i : items) total += i.count;
  return total;
}

absl::StatusOr<SimSpec> ParseSimSpec(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("sim spec is empty");
  if (text.size() > kMaxSimSpecBytes) {
    return absl::InvalidArgumentError(
        StrCat("sim spec is ", text.size(), " bytes, more than ", kMaxSimSpecBytes));
  }
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
      return absl::InvalidArgumentError(
          StrCat("sim spec: whitespace is not allowed (byte ", i, ")"));
    }
  }
  SimSpec spec;
  size_t pos = 0;
  for (size_t n = 0;; ++n) {
    const size_t comma = text.find(',', pos);
    const std::string_view item =
        text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (item.empty()) {
      return absl::InvalidArgumentError(
          StrCat("sim spec item ", n + 1, " is empty (leading, trailing or doubled comma)"));
    }
    WARDEN_ASSIGN_OR_RETURN(SimSpecItem parsed, ParseItem(n, item));
    spec.items.push_back(std::move(parsed));
    if (spec.total_gpus() > kMaxSimGpus) {
      return absl::InvalidArgumentError(
          StrCat("sim spec: more than ", kMaxSimGpus, " GPUs in all (at item ", n + 1, ")"));
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return spec;
}

std::string FormatSimSpec(const SimSpec& spec) {
  std::string out;
  for (const SimSpecItem& i : spec.items) {
    out += StrCat(out.empty() ? "" : ",", i.count, "x", i.model, i.mig ? ":mig" : "");
  }
  return out;
}

std::string SimGpuUuid(std::string_view seed, int index) {
  std::string input = "gpuwarden-sim-gpu";
  input.push_back('\0');
  input.append(seed);
  input.push_back('\0');
  input += StrCat(index);
  return StrCat("GPU-", UuidShape(common::Sha256(input)));
}

std::vector<GpuDevice> ExpandSimSpec(const SimSpec& spec, const SimOptions& options) {
  std::vector<GpuDevice> out;
  for (const SimSpecItem& item : spec.items) {
    const GpuModel* model = FindGpuModel(item.model);
    for (int k = 0; k < item.count; ++k) {
      GpuDevice d;
      d.index = static_cast<int>(out.size());
      d.uuid = SimGpuUuid(options.seed, d.index);
      d.model = item.model;
      if (model != nullptr) {
        d.product_name = model->product_name;
        d.memory_mib = model->memory_mib;
        d.mig_capable = model->mig_capable;
      }
      d.driver_version = options.driver_version;
      d.cuda_version = options.cuda_version;
      d.ecc_enabled = true;
      d.mig_enabled = item.mig && d.mig_capable;
      out.push_back(std::move(d));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

struct SimGpuBackend::State {
  struct Gpu {
    GpuDevice device;  // mig_instances kept in step with layout
    MigLayout layout;
    uint64_t created = 0;  // instances ever created: seeds deterministic MIG UUIDs
  };
  std::mutex mu;
  std::vector<Gpu> gpus;
  // Failure injection and counters for the handoff, by device UUID (GPU or MIG instance).
  struct Injection {
    uint64_t mismatched_words = 0;
    int mismatch_times = 0;
    int error_times = 0;
  };
  std::map<std::string, Injection, std::less<>> injections;
  std::map<std::string, int, std::less<>> scrubs;

  // The GPU holding `uuid` (itself or one of its MIG instances), and the instance if one.
  Gpu* FindDevice(std::string_view uuid, const MigInstanceInfo** mig) {
    *mig = nullptr;
    for (Gpu& g : gpus) {
      if (g.device.uuid == uuid) return &g;
      for (const MigInstanceInfo& m : g.device.mig_instances) {
        if (m.uuid == uuid) {
          *mig = &m;
          return &g;
        }
      }
    }
    return nullptr;
  }

  Gpu* Find(std::string_view uuid) {
    for (Gpu& g : gpus) {
      if (g.device.uuid == uuid) return &g;
    }
    return nullptr;
  }
};

SimGpuBackend::SimGpuBackend(std::unique_ptr<State> state) : state_(std::move(state)) {}
SimGpuBackend::~SimGpuBackend() = default;

absl::StatusOr<std::unique_ptr<SimGpuBackend>> SimGpuBackend::Create(const SimSpec& spec,
                                                                     const SimOptions& options) {
  // A hand-built SimSpec gets the same checks as parsed text.
  WARDEN_ASSIGN_OR_RETURN(SimSpec checked, ParseSimSpec(FormatSimSpec(spec)));
  auto state = std::make_unique<State>();
  for (GpuDevice& d : ExpandSimSpec(checked, options)) {
    const GpuModel* model = FindGpuModel(d.model);
    state->gpus.push_back({std::move(d), MigLayout(*model), 0});
  }
  return std::unique_ptr<SimGpuBackend>(new SimGpuBackend(std::move(state)));
}

absl::StatusOr<std::unique_ptr<SimGpuBackend>> SimGpuBackend::Create(std::string_view spec_text,
                                                                     const SimOptions& options) {
  WARDEN_ASSIGN_OR_RETURN(SimSpec spec, ParseSimSpec(spec_text));
  return Create(spec, options);
}

absl::StatusOr<std::vector<GpuDevice>> SimGpuBackend::Discover() {
  std::lock_guard<std::mutex> lock(state_->mu);
  std::vector<GpuDevice> out;
  out.reserve(state_->gpus.size());
  for (const State::Gpu& g : state_->gpus) out.push_back(g.device);
  return out;
}

absl::StatusOr<MigInstanceInfo> SimGpuBackend::CreateMigInstance(std::string_view gpu_uuid,
                                                                 int profile_id) {
  return CreateMig(gpu_uuid, profile_id, std::nullopt);
}

absl::StatusOr<MigInstanceInfo> SimGpuBackend::CreateMigInstanceAt(std::string_view gpu_uuid,
                                                                   int profile_id, int start) {
  return CreateMig(gpu_uuid, profile_id, start);
}

// As NVML answers: NOT_FOUND-like for an unknown GPU, a MIG-mode error when MIG is off (never
// switched on here), INVALID_ARGUMENT for a profile the GPU lacks or a start the profile does
// not allow, INSUFFICIENT_RESOURCES for taken slices or a reached limit (MigLayout's codes).
absl::StatusOr<MigInstanceInfo> SimGpuBackend::CreateMig(std::string_view gpu_uuid, int profile_id,
                                                         std::optional<int> at) {
  std::lock_guard<std::mutex> lock(state_->mu);
  State::Gpu* g = state_->Find(gpu_uuid);
  if (g == nullptr) return absl::NotFoundError(StrCat("no GPU ", Quote(gpu_uuid)));
  if (!g->device.mig_enabled) {
    return absl::FailedPreconditionError(StrCat("GPU ", g->device.uuid, ": MIG mode is off"));
  }
  int start = 0;
  if (at.has_value()) {
    if (g->layout.model().FindProfile(profile_id) == nullptr) {
      return absl::InvalidArgumentError(StrCat("GPU ", g->device.uuid, " (", g->device.model,
                                               ") has no GPU instance profile ", profile_id));
    }
    WARDEN_RETURN_IF_ERROR(g->layout.PlaceAt(profile_id, *at));
    start = *at;
  } else {
    WARDEN_ASSIGN_OR_RETURN(start, g->layout.Place(profile_id));
  }
  const MigProfile* p = g->layout.model().FindProfile(profile_id);
  std::string input = "gpuwarden-sim-mig";
  input.push_back('\0');
  input += g->device.uuid;
  input.push_back('\0');
  input += StrCat(g->created++);
  MigInstanceInfo info;
  info.uuid = StrCat("MIG-", UuidShape(common::Sha256(input)));
  info.profile_id = profile_id;
  info.profile_name = p->name;
  info.start = start;
  info.memory_mib = p->memory_mib;
  // The driver numbers GPU instances from 1 up, reusing freed ids (lowest free first); each
  // holds one compute instance, id 0.
  int gi = 1;
  while (std::any_of(g->device.mig_instances.begin(), g->device.mig_instances.end(),
                     [&](const MigInstanceInfo& m) { return m.gpu_instance_id == gi; })) {
    ++gi;
  }
  info.gpu_instance_id = gi;
  info.compute_instance_id = 0;
  g->device.mig_instances.push_back(info);
  return info;
}

absl::Status SimGpuBackend::DestroyMigInstance(std::string_view gpu_uuid,
                                               std::string_view mig_uuid) {
  std::lock_guard<std::mutex> lock(state_->mu);
  State::Gpu* g = state_->Find(gpu_uuid);
  if (g == nullptr) return absl::NotFoundError(StrCat("no GPU ", Quote(gpu_uuid)));
  auto& instances = g->device.mig_instances;
  auto it = std::find_if(instances.begin(), instances.end(),
                         [&](const MigInstanceInfo& i) { return i.uuid == mig_uuid; });
  if (it == instances.end()) {
    return absl::NotFoundError(
        StrCat("GPU ", g->device.uuid, ": no GPU instance ", Quote(mig_uuid)));
  }
  for (const GpuProcess& proc : g->device.processes) {
    if (proc.mig_uuid == mig_uuid) {
      return absl::FailedPreconditionError(
          StrCat("GPU instance ", it->uuid, ": process ", proc.pid, " still runs on it"));
    }
  }
  WARDEN_RETURN_IF_ERROR(g->layout.Remove(it->start));
  instances.erase(it);
  return absl::OkStatus();
}

absl::Status SimGpuBackend::SetMigMode(std::string_view gpu_uuid, bool enabled) {
  std::lock_guard<std::mutex> lock(state_->mu);
  State::Gpu* g = state_->Find(gpu_uuid);
  if (g == nullptr) return absl::NotFoundError(StrCat("no GPU ", Quote(gpu_uuid)));
  if (!g->device.mig_capable) {
    return absl::InvalidArgumentError(
        StrCat("GPU ", g->device.uuid, " (", g->device.model, ") is not MIG-capable"));
  }
  if (g->device.mig_enabled == enabled) return absl::OkStatus();
  // Real GPUs refuse a mode change while any client holds them (DESIGN.md "MIG facts").
  if (!g->device.processes.empty()) {
    return absl::FailedPreconditionError(StrCat("GPU ", g->device.uuid,
                                                ": MIG mode change needs all GPU clients stopped, ",
                                                g->device.processes.size(), " running"));
  }
  if (!enabled && !g->device.mig_instances.empty()) {
    return absl::FailedPreconditionError(StrCat("GPU ", g->device.uuid, ": destroy its ",
                                                g->device.mig_instances.size(),
                                                " GPU instances before turning MIG off"));
  }
  g->device.mig_enabled = enabled;
  return absl::OkStatus();
}

absl::Status SimGpuBackend::AddProcess(std::string_view gpu_uuid, const GpuProcess& process) {
  std::lock_guard<std::mutex> lock(state_->mu);
  State::Gpu* g = state_->Find(gpu_uuid);
  if (g == nullptr) return absl::NotFoundError(StrCat("no GPU ", Quote(gpu_uuid)));
  if (process.mig_uuid.empty()) {
    if (g->device.mig_enabled) {
      return absl::FailedPreconditionError(
          StrCat("GPU ", g->device.uuid, " is in MIG mode: a process needs a GPU instance"));
    }
  } else {
    const auto& instances = g->device.mig_instances;
    if (std::none_of(instances.begin(), instances.end(),
                     [&](const MigInstanceInfo& i) { return i.uuid == process.mig_uuid; })) {
      return absl::NotFoundError(
          StrCat("GPU ", g->device.uuid, ": no GPU instance ", Quote(process.mig_uuid)));
    }
  }
  g->device.processes.push_back(process);
  return absl::OkStatus();
}

absl::Status SimGpuBackend::RemoveProcess(std::string_view gpu_uuid, int64_t pid) {
  std::lock_guard<std::mutex> lock(state_->mu);
  State::Gpu* g = state_->Find(gpu_uuid);
  if (g == nullptr) return absl::NotFoundError(StrCat("no GPU ", Quote(gpu_uuid)));
  auto& procs = g->device.processes;
  auto it =
      std::find_if(procs.begin(), procs.end(), [&](const GpuProcess& p) { return p.pid == pid; });
  if (it == procs.end()) {
    return absl::NotFoundError(StrCat("GPU ", g->device.uuid, ": no process ", pid));
  }
  procs.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GpuProcess>> SimGpuBackend::RunningProcesses(
    std::string_view device_uuid) {
  std::lock_guard<std::mutex> lock(state_->mu);
  const MigInstanceInfo* mig = nullptr;
  State::Gpu* g = state_->FindDevice(device_uuid, &mig);
  if (g == nullptr) return absl::NotFoundError(StrCat("no GPU or MIG instance ", Quote(device_uuid)));
  std::vector<GpuProcess> out;
  for (const GpuProcess& p : g->device.processes) {
    if (mig == nullptr || p.mig_uuid == mig->uuid) out.push_back(p);
  }
  return out;
}

absl::Status SimGpuBackend::InjectVerifyMismatch(std::string_view device_uuid,
                                                 uint64_t mismatched_words, int times) {
  std::lock_guard<std::mutex> lock(state_->mu);
  const MigInstanceInfo* mig = nullptr;
  if (state_->FindDevice(device_uuid, &mig) == nullptr) {
    return absl::NotFoundError(StrCat("no GPU or MIG instance ", Quote(device_uuid)));
  }
  auto& inj = state_->injections[std::string(device_uuid)];
  inj.mismatched_words = mismatched_words;
  inj.mismatch_times = times;
  return absl::OkStatus();
}

absl::Status SimGpuBackend::InjectScrubError(std::string_view device_uuid, int times) {
  std::lock_guard<std::mutex> lock(state_->mu);
  const MigInstanceInfo* mig = nullptr;
  if (state_->FindDevice(device_uuid, &mig) == nullptr) {
    return absl::NotFoundError(StrCat("no GPU or MIG instance ", Quote(device_uuid)));
  }
  state_->injections[std::string(device_uuid)].error_times = times;
  return absl::OkStatus();
}

int SimGpuBackend::scrub_count(std::string_view device_uuid) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->scrubs.find(device_uuid);
  return it == state_->scrubs.end() ? 0 : it->second;
}

namespace {

// The simulated scrub: no memory to write, so it reports what a scrub of `fraction` of the
// device's memory would, with the injected failures. Its numbers are labelled as simulated by
// the device name; they are never benchmark results.
class SimScrubber final : public MemoryScrubber {
 public:
  SimScrubber(std::function<absl::StatusOr<ScrubReport>(std::string_view, const ScrubOptions&)> f)
      : f_(std::move(f)) {}
  absl::StatusOr<ScrubReport> Scrub(std::string_view device_uuid,
                                    const ScrubOptions& options) override {
    return f_(device_uuid, options);
  }

 private:
  std::function<absl::StatusOr<ScrubReport>(std::string_view, const ScrubOptions&)> f_;
};

}  // namespace

std::unique_ptr<MemoryScrubber> SimGpuBackend::NewScrubber(double fraction) {
  State* st = state_.get();
  return std::make_unique<SimScrubber>(
      [st, fraction](std::string_view uuid,
                     const ScrubOptions& options) -> absl::StatusOr<ScrubReport> {
        std::lock_guard<std::mutex> lock(st->mu);
        const MigInstanceInfo* mig = nullptr;
        State::Gpu* g = st->FindDevice(uuid, &mig);
        if (g == nullptr) {
          return absl::NotFoundError(StrCat("no simulated GPU or MIG instance ", Quote(uuid)));
        }
        ++st->scrubs[std::string(uuid)];
        auto& inj = st->injections[std::string(uuid)];
        if (inj.error_times > 0) {
          --inj.error_times;
          return absl::UnavailableError(StrCat("simulated driver error scrubbing ", uuid));
        }
        ScrubReport r;
        r.device_uuid = std::string(uuid);
        r.device_name = StrCat("simulated ", g->device.product_name,
                               mig != nullptr ? StrCat(" MIG ", mig->profile_name) : "");
        const uint64_t mib = mig != nullptr ? mig->memory_mib : g->device.memory_mib;
        r.total_bytes = mib << 20;
        r.free_bytes = r.total_bytes;
        r.scrubbed_bytes = static_cast<uint64_t>(static_cast<double>(r.free_bytes) * fraction);
        r.chunks = 1;
        r.fraction_of_free = r.free_bytes ? static_cast<double>(r.scrubbed_bytes) /
                                                static_cast<double>(r.free_bytes)
                                          : 0;
        if (inj.mismatch_times > 0) {
          --inj.mismatch_times;
          r.zero_mismatches = inj.mismatched_words;
        }
        if (r.zero_mismatches > 0) {
          r.failure = StrCat(r.zero_mismatches, " words did not read back as written");
        } else if (r.fraction_of_free < options.min_fraction) {
          r.failure = StrCat("covered ", r.fraction_of_free, " of free memory, less than ",
                             options.min_fraction);
        }
        r.passed = r.failure.empty();
        return r;
      });
}

}  // namespace warden::gpu
