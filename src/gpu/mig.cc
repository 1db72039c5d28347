// MIG geometry: NVIDIA's profile tables (DESIGN.md "MIG facts"), the placement validator, the
// start chooser and the exhaustive planner.
#include <algorithm>
#include <array>
#include <bit>

#include "common/status.h"
#include "common/strings.h"
#include "gpu/gpu.h"

namespace warden::gpu {
namespace {

using common::StrCat;

// The shape shared by A100, H100 and H200: ids, slices, limits and starts are per NVIDIA's tables;
// only names and sizes differ per model.
struct ProfileShape {
  int id;
  int compute_slices;
  int memory_slices;
  int max_instances;
  bool media_extensions;
  std::vector<int> allowed_starts;
};

const std::array<ProfileShape, 7>& Shapes() {
  static const std::array<ProfileShape, 7> kShapes = {{
      {19, 1, 1, 7, false, {0, 1, 2, 3, 4, 5, 6}},  // slice 7 is never a 1g start
      {20, 1, 1, 1, true, {0, 1, 2, 3, 4, 5, 6}},
      {15, 1, 2, 4, false, {0, 2, 4, 6}},
      {14, 2, 2, 3, false, {0, 2, 4}},
      {9, 3, 4, 2, false, {0, 4}},
      {5, 4, 4, 1, false, {0}},
      {0, 7, 8, 1, false, {0}},
  }};
  return kShapes;
}

// `gb` lists the nominal size of each shape's instance, in Shapes() order; names follow
// NVIDIA's "<c>g.<gb>gb[+me]".
std::vector<MigProfile> MakeProfiles(const std::array<int, 7>& gb) {
  std::vector<MigProfile> out;
  for (size_t i = 0; i < Shapes().size(); ++i) {
    const ProfileShape& s = Shapes()[i];
    MigProfile p;
    p.id = s.id;
    p.name = StrCat(s.compute_slices, "g.", gb[i], "gb", s.media_extensions ? "+me" : "");
    p.compute_slices = s.compute_slices;
    p.memory_slices = s.memory_slices;
    p.memory_mib = static_cast<uint64_t>(gb[i]) * 1024;
    p.max_instances = s.max_instances;
    p.media_extensions = s.media_extensions;
    p.allowed_starts = s.allowed_starts;
    out.push_back(std::move(p));
  }
  return out;
}

uint8_t SliceMask(int start, int memory_slices) {
  return static_cast<uint8_t>(((1u << memory_slices) - 1u) << start);
}

int LargestFreeRun(uint8_t used) {
  int best = 0, run = 0;
  for (int i = 0; i < kMemorySlices; ++i) {
    if (used & (1u << i)) {
      run = 0;
    } else {
      best = std::max(best, ++run);
    }
  }
  return best;
}

std::string Describe(const MigProfile& p) { return StrCat(p.name, " (profile ", p.id, ")"); }

std::string StartsText(const std::vector<int>& starts) {
  std::string out;
  for (int s : starts) out += StrCat(out.empty() ? "" : ",", s);
  return out;
}

int CountOf(std::span<const MigInstance> instances, int profile_id) {
  return static_cast<int>(
      std::count_if(instances.begin(), instances.end(),
                    [&](const MigInstance& i) { return i.profile_id == profile_id; }));
}

// The limits that do not depend on the start: max instances, one +me, compute slices.
absl::Status CheckLimits(const GpuModel& model, std::span<const MigInstance> instances,
                         const MigProfile& p) {
  if (CountOf(instances, p.id) >= p.max_instances) {
    return absl::ResourceExhaustedError(
        StrCat(Describe(p), ": at most ", p.max_instances, " per GPU, already placed"));
  }
  int compute = 0;
  bool has_me = false;
  for (const MigInstance& i : instances) {
    const MigProfile* q = model.FindProfile(i.profile_id);
    if (q == nullptr) continue;
    compute += q->compute_slices;
    has_me = has_me || q->media_extensions;
  }
  if (p.media_extensions && has_me) {
    return absl::ResourceExhaustedError(
        StrCat(Describe(p), ": only one +me instance per GPU and one is already placed"));
  }
  if (compute + p.compute_slices > kComputeSlices) {
    return absl::ResourceExhaustedError(StrCat(Describe(p), ": needs ", p.compute_slices,
                                               " compute slices, ", kComputeSlices - compute,
                                               " of ", kComputeSlices, " free"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const MigProfile*> LookUp(const GpuModel& model, int profile_id) {
  if (!model.mig_capable) {
    return absl::InvalidArgumentError(StrCat("GPU model ", model.name, " is not MIG-capable"));
  }
  const MigProfile* p = model.FindProfile(profile_id);
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("GPU model ", model.name, " has no MIG profile id ", profile_id));
  }
  return p;
}

bool Fits(uint8_t used, const MigProfile& p, int start) {
  return (used & SliceMask(start, p.memory_slices)) == 0;
}

}  // namespace

const MigProfile* GpuModel::FindProfile(int profile_id) const {
  for (const MigProfile& p : profiles) {
    if (p.id == profile_id) return &p;
  }
  return nullptr;
}

const MigProfile* GpuModel::FindProfileByName(std::string_view profile_name) const {
  for (const MigProfile& p : profiles) {
    if (p.name == profile_name) return &p;
  }
  return nullptr;
}

const std::vector<GpuModel>& KnownGpuModels() {
  // Whole-GPU framebuffer sizes are what nvidia-smi reports for the SXM parts.
  static const std::vector<GpuModel> kModels = [] {
    std::vector<GpuModel> m;
    m.push_back({"A100-40GB", "NVIDIA A100-SXM4-40GB", 40960, true,
                 MakeProfiles({5, 5, 10, 10, 20, 20, 40})});
    m.push_back({"A100-80GB", "NVIDIA A100-SXM4-80GB", 81920, true,
                 MakeProfiles({10, 10, 20, 20, 40, 40, 80})});
    m.push_back({"H100-80GB", "NVIDIA H100 80GB HBM3", 81559, true,
                 MakeProfiles({10, 10, 20, 20, 40, 40, 80})});
    m.push_back(
        {"H200-141GB", "NVIDIA H200", 143771, true, MakeProfiles({18, 18, 35, 35, 71, 71, 141})});
    m.push_back({"L40S-48GB", "NVIDIA L40S", 46068, false, {}});
    return m;
  }();
  return kModels;
}

const GpuModel* FindGpuModel(std::string_view name) {
  for (const GpuModel& m : KnownGpuModels()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

absl::Status ValidateMigLayout(const GpuModel& model, std::span<const MigInstance> instances) {
  if (!instances.empty() && !model.mig_capable) {
    return absl::InvalidArgumentError(
        StrCat("GPU model ", model.name, " is not MIG-capable but has GPU instances"));
  }
  uint8_t used = 0;
  int compute = 0;
  int me = 0;
  for (size_t n = 0; n < instances.size(); ++n) {
    const MigInstance& i = instances[n];
    const MigProfile* p = model.FindProfile(i.profile_id);
    if (p == nullptr) {
      return absl::InvalidArgumentError(
          StrCat("instance ", n, ": unknown MIG profile id ", i.profile_id));
    }
    if (std::find(p->allowed_starts.begin(), p->allowed_starts.end(), i.start) ==
        p->allowed_starts.end()) {
      return absl::InvalidArgumentError(StrCat("instance ", n, ": ", Describe(*p),
                                               " may not start at ", i.start,
                                               " (allowed: ", StartsText(p->allowed_starts), ")"));
    }
    const uint8_t mask = SliceMask(i.start, p->memory_slices);
    if (used & mask) {
      return absl::InvalidArgumentError(StrCat("instance ", n, ": ", Describe(*p), " at ", i.start,
                                               " overlaps another instance"));
    }
    used |= mask;
    compute += p->compute_slices;
    if (p->media_extensions) ++me;
    if (CountOf(instances, p->id) > p->max_instances) {
      return absl::InvalidArgumentError(
          StrCat(Describe(*p), ": more than ", p->max_instances, " instances"));
    }
  }
  if (me > 1) return absl::InvalidArgumentError("more than one +me instance on one GPU");
  if (compute > kComputeSlices) {
    return absl::InvalidArgumentError(
        StrCat("instances use ", compute, " compute slices, more than ", kComputeSlices));
  }
  return absl::OkStatus();
}

int MigLayout::used_compute_slices() const {
  int total = 0;
  for (const MigInstance& i : instances_) {
    if (const MigProfile* p = model_->FindProfile(i.profile_id)) total += p->compute_slices;
  }
  return total;
}

uint8_t MigLayout::used_memory_mask() const {
  uint8_t used = 0;
  for (const MigInstance& i : instances_) {
    if (const MigProfile* p = model_->FindProfile(i.profile_id)) {
      used |= SliceMask(i.start, p->memory_slices);
    }
  }
  return used;
}

absl::StatusOr<int> MigLayout::Choose(int profile_id) const {
  WARDEN_ASSIGN_OR_RETURN(const MigProfile* p, LookUp(*model_, profile_id));
  WARDEN_RETURN_IF_ERROR(CheckLimits(*model_, instances_, *p));
  const uint8_t used = used_memory_mask();
  // Score tuple (see the class comment): largest free run, free slices below 7, lower start.
  std::optional<int> best;
  int best_run = -1, best_low_free = -1;
  for (int start : p->allowed_starts) {
    if (!Fits(used, *p, start)) continue;
    const uint8_t after = used | SliceMask(start, p->memory_slices);
    const int run = LargestFreeRun(after);
    const int low_free = 7 - std::popcount(static_cast<unsigned>(after & 0x7f));
    if (run > best_run || (run == best_run && low_free > best_low_free)) {
      best = start;
      best_run = run;
      best_low_free = low_free;
    }
  }
  if (!best) {
    std::string used_text;
    for (int i = 0; i < kMemorySlices; ++i) {
      if (used & (1u << i)) used_text += StrCat(used_text.empty() ? "" : ",", i);
    }
    return absl::ResourceExhaustedError(
        StrCat(Describe(*p), ": no free start among ", StartsText(p->allowed_starts),
               " (memory slices in use: ", used_text.empty() ? "none" : used_text, ")"));
  }
  return *best;
}

std::optional<int> MigLayout::CanPlace(int profile_id) const {
  auto start = Choose(profile_id);
  if (!start.ok()) return std::nullopt;
  return *start;
}

absl::Status MigLayout::CheckPlace(int profile_id) const { return Choose(profile_id).status(); }

absl::StatusOr<int> MigLayout::Place(int profile_id) {
  WARDEN_ASSIGN_OR_RETURN(int start, Choose(profile_id));
  instances_.push_back({profile_id, start});
  return start;
}

absl::Status MigLayout::PlaceAt(int profile_id, int start) {
  WARDEN_ASSIGN_OR_RETURN(const MigProfile* p, LookUp(*model_, profile_id));
  if (std::find(p->allowed_starts.begin(), p->allowed_starts.end(), start) ==
      p->allowed_starts.end()) {
    return absl::InvalidArgumentError(StrCat(Describe(*p), " may not start at ", start,
                                             " (allowed: ", StartsText(p->allowed_starts), ")"));
  }
  WARDEN_RETURN_IF_ERROR(CheckLimits(*model_, instances_, *p));
  if (!Fits(used_memory_mask(), *p, start)) {
    return absl::ResourceExhaustedError(
        StrCat(Describe(*p), " at ", start, ": memory slices taken by another instance"));
  }
  instances_.push_back({profile_id, start});
  return absl::OkStatus();
}

absl::Status MigLayout::Remove(int start) {
  auto it = std::find_if(instances_.begin(), instances_.end(),
                         [&](const MigInstance& i) { return i.start == start; });
  if (it == instances_.end()) {
    return absl::NotFoundError(StrCat("no GPU instance starts at memory slice ", start));
  }
  instances_.erase(it);
  return absl::OkStatus();
}

namespace {

bool Search(const std::vector<const MigProfile*>& wanted, size_t next, uint8_t used,
            std::vector<MigInstance>& out) {
  if (next == wanted.size()) return true;
  const MigProfile& p = *wanted[next];
  // Identical profiles are placed at increasing starts, so permutations of them are tried once.
  int min_start = 0;
  if (next > 0 && wanted[next - 1]->id == p.id) min_start = out.back().start + 1;
  for (int start : p.allowed_starts) {
    if (start < min_start || !Fits(used, p, start)) continue;
    out.push_back({p.id, start});
    if (Search(wanted, next + 1, used | SliceMask(start, p.memory_slices), out)) return true;
    out.pop_back();
  }
  return false;
}

}  // namespace

absl::StatusOr<std::vector<MigInstance>> PlanMigLayout(const GpuModel& model,
                                                       std::span<const int> profile_ids) {
  std::vector<const MigProfile*> wanted;
  int compute = 0, me = 0;
  std::string names;
  for (int id : profile_ids) {
    WARDEN_ASSIGN_OR_RETURN(const MigProfile* p, LookUp(model, id));
    wanted.push_back(p);
    compute += p->compute_slices;
    if (p->media_extensions) ++me;
    names += StrCat(names.empty() ? "" : "+", p->name);
  }
  if (compute > kComputeSlices) {
    return absl::ResourceExhaustedError(StrCat(names, ": needs ", compute, " compute slices, a ",
                                               model.name, " has ", kComputeSlices));
  }
  if (me > 1) {
    return absl::ResourceExhaustedError(StrCat(names, ": more than one +me instance"));
  }
  for (const MigProfile* p : wanted) {
    int n = 0;
    for (const MigProfile* q : wanted) n += (q->id == p->id);
    if (n > p->max_instances) {
      return absl::ResourceExhaustedError(
          StrCat(names, ": ", n, " x ", p->name, ", at most ", p->max_instances, " per GPU"));
    }
  }
  // Largest first prunes early; equal profiles adjacent for the symmetry rule in Search.
  std::stable_sort(wanted.begin(), wanted.end(), [](const MigProfile* a, const MigProfile* b) {
    if (a->memory_slices != b->memory_slices) return a->memory_slices > b->memory_slices;
    if (a->compute_slices != b->compute_slices) return a->compute_slices > b->compute_slices;
    return a->id < b->id;
  });
  std::vector<MigInstance> out;
  if (!Search(wanted, 0, 0, out)) {
    return absl::ResourceExhaustedError(
        StrCat(names, ": no placement on a ", model.name, " respects the allowed starts"));
  }
  return out;
}

}  // namespace warden::gpu
