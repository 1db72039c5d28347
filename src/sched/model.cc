// The model's small functions and the strict job-spec decoder (untrusted input: fuzzed by
// fuzz/fuzz_job_spec.cc).
#include <algorithm>
#include <cmath>

#include "common/ids.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "sched/model.h"

namespace warden::sched {
namespace {

using common::Json;
using common::StrCat;

constexpr int kMaxWholeGpus = 64;
constexpr int64_t kMaxCpuMillis = int64_t{1} << 30;     // ~1M cores: a sanity bound, not a node size
constexpr int64_t kMaxMemoryMib = int64_t{1} << 24;     // 16 TiB
constexpr int kMaxPriority = 1000;
constexpr size_t kMaxSelectorEntries = 16;
constexpr size_t kMaxTolerations = 16;
constexpr size_t kMaxLabelText = 63;

std::string Millis(int64_t m) {
  if (m == Resources::kUnlimited) return "unlimited";
  std::string frac = std::to_string(m % 1000);
  return StrCat(m / 1000, ".", std::string(3 - frac.size(), '0'), frac);
}

// Label keys: 1-63 of [A-Za-z0-9._/-] starting with an alphanumeric; values: 0-63 of
// [A-Za-z0-9._-]. Keeps selectors printable and unambiguous in logs and reasons.
absl::Status ValidateLabel(std::string_view what, std::string_view text, bool is_key) {
  if ((is_key && text.empty()) || text.size() > kMaxLabelText) {
    return absl::InvalidArgumentError(
        StrCat(what, " must be ", is_key ? "1" : "0", "-63 characters, got ", text.size()));
  }
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  for (char c : text) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-' && !(is_key && c == '/')) {
      return absl::InvalidArgumentError(StrCat(what, " may contain only A-Z, a-z, 0-9, '.', '_', '-'",
                                               is_key ? " and '/'" : ""));
    }
  }
  if (is_key && !alnum(text[0])) {
    return absl::InvalidArgumentError(StrCat(what, " must start with a letter or digit"));
  }
  return absl::OkStatus();
}

bool KnownMigProfileName(std::string_view name) {
  for (const gpu::GpuModel& m : gpu::KnownGpuModels()) {
    if (m.FindProfileByName(name) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<int64_t> IntIn(const common::JsonFields& f, std::string_view key, int64_t def,
                              int64_t lo, int64_t hi) {
  WARDEN_ASSIGN_OR_RETURN(std::optional<int64_t> v, f.OptionalInt(key));
  if (!v) return def;
  if (*v < lo || *v > hi) {
    return absl::InvalidArgumentError(
        StrCat("field \"", key, "\": must be between ", lo, " and ", hi, ", got ", *v));
  }
  return *v;
}

}  // namespace

std::string_view IsolationName(Isolation isolation) {
  switch (isolation) {
    case Isolation::kShared: return "shared";
    case Isolation::kMig: return "mig";
    case Isolation::kExclusive: return "exclusive";
    case Isolation::kDedicated: return "dedicated";
  }
  return "?";
}

absl::StatusOr<Isolation> ParseIsolation(std::string_view text) {
  for (Isolation i : {Isolation::kShared, Isolation::kMig, Isolation::kExclusive,
                      Isolation::kDedicated}) {
    if (IsolationName(i) == text) return i;
  }
  return absl::InvalidArgumentError(
      "isolation must be one of \"shared\", \"mig\", \"exclusive\", \"dedicated\"");
}

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kPlaced: return "placed";
    case JobState::kRunning: return "running";
    case JobState::kDone: return "done";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "?";
}

Resources Resources::Unlimited() {
  Resources r;
  r.gpu_millis = r.gpu_memory_mib = r.mig_slices = r.cpu_millis = r.memory_mib = r.running_jobs =
      kUnlimited;
  return r;
}

Resources& Resources::operator+=(const Resources& o) {
  gpu_millis += o.gpu_millis;
  gpu_memory_mib += o.gpu_memory_mib;
  mig_slices += o.mig_slices;
  cpu_millis += o.cpu_millis;
  memory_mib += o.memory_mib;
  running_jobs += o.running_jobs;
  return *this;
}

Resources& Resources::operator-=(const Resources& o) {
  gpu_millis -= o.gpu_millis;
  gpu_memory_mib -= o.gpu_memory_mib;
  mig_slices -= o.mig_slices;
  cpu_millis -= o.cpu_millis;
  memory_mib -= o.memory_mib;
  running_jobs -= o.running_jobs;
  return *this;
}

std::string Resources::FirstExcess(const Resources& limit) const {
  if (gpu_millis > limit.gpu_millis) {
    return StrCat("gpus ", Millis(gpu_millis), " > ", Millis(limit.gpu_millis));
  }
  auto plain = [](int64_t v) { return v == kUnlimited ? std::string("unlimited") : std::to_string(v); };
  if (gpu_memory_mib > limit.gpu_memory_mib) {
    return StrCat("GPU memory ", gpu_memory_mib, " MiB > ", plain(limit.gpu_memory_mib), " MiB");
  }
  if (mig_slices > limit.mig_slices) {
    return StrCat("MIG slices ", mig_slices, " > ", plain(limit.mig_slices));
  }
  if (cpu_millis > limit.cpu_millis) {
    return StrCat("CPU ", Millis(cpu_millis), " > ", Millis(limit.cpu_millis));
  }
  if (memory_mib > limit.memory_mib) {
    return StrCat("memory ", memory_mib, " MiB > ", plain(limit.memory_mib), " MiB");
  }
  if (running_jobs > limit.running_jobs) {
    return StrCat("running jobs ", running_jobs, " > ", plain(limit.running_jobs));
  }
  return "";
}

Isolation EffectiveIsolation(const JobRecord& job, const TenantState& tenant) {
  const Isolation asked = job.spec.isolation.value_or(tenant.spec.policy);
  return std::max(asked, tenant.spec.policy);
}

absl::StatusOr<JobSpec> ParseJobSpec(std::string_view json) {
  common::JsonLimits limits;
  limits.max_depth = 4;
  limits.max_bytes = 64 * 1024;
  WARDEN_ASSIGN_OR_RETURN(Json doc, common::ParseJsonStrict(json, limits));
  if (!doc.is_object()) return absl::InvalidArgumentError("job spec must be a JSON object");
  WARDEN_ASSIGN_OR_RETURN(common::JsonFields f, common::JsonFields::Of(doc));
  WARDEN_RETURN_IF_ERROR(f.OnlyKeys({"name", "tenant", "gpus", "mig_profile", "gpu_fraction",
                                     "cpu_millis", "memory_mib", "priority", "isolation", "pool",
                                     "gpu_model", "node_selector", "tolerations"}));
  JobSpec s;
  WARDEN_ASSIGN_OR_RETURN(s.name, f.RequiredString("name"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("field \"name\"", s.name));
  WARDEN_ASSIGN_OR_RETURN(s.tenant, f.RequiredString("tenant"));
  WARDEN_RETURN_IF_ERROR(common::ValidateName("field \"tenant\"", s.tenant));

  int kinds = 0;
  for (const char* k : {"gpus", "mig_profile", "gpu_fraction"}) {
    auto it = doc.find(k);
    if (it != doc.end() && !it->is_null()) ++kinds;
  }
  if (kinds > 1) {
    return absl::InvalidArgumentError(
        "at most one of \"gpus\", \"mig_profile\" and \"gpu_fraction\" may be given");
  }
  WARDEN_ASSIGN_OR_RETURN(int64_t gpus, IntIn(f, "gpus", 0, 1, kMaxWholeGpus));
  if (gpus > 0) {
    s.gpu_request = GpuRequest::kWhole;
    s.gpus = static_cast<int>(gpus);
  }
  WARDEN_ASSIGN_OR_RETURN(std::optional<std::string> mig, f.OptionalString("mig_profile"));
  if (mig) {
    if (!KnownMigProfileName(*mig)) {
      return absl::InvalidArgumentError(
          StrCat("field \"mig_profile\": no known GPU model has a MIG profile named \"",
                 mig->size() > 32 ? mig->substr(0, 32) + "..." : *mig,
                 "\" (e.g. \"1g.10gb\", \"3g.40gb\", \"7g.141gb\")"));
    }
    s.gpu_request = GpuRequest::kMig;
    s.mig_profile = *mig;
  }
  if (auto it = doc.find("gpu_fraction"); it != doc.end() && !it->is_null()) {
    if (!it->is_number()) {
      return absl::InvalidArgumentError("field \"gpu_fraction\": expected a number");
    }
    const double d = it->get<double>();
    const double scaled = d * 1000.0;
    if (!std::isfinite(d) || d <= 0.0 || d >= 1.0) {
      return absl::InvalidArgumentError(
          "field \"gpu_fraction\": must be greater than 0 and less than 1");
    }
    const double rounded = std::round(scaled);
    if (std::fabs(scaled - rounded) > 1e-6 || rounded < 1 || rounded > 999) {
      return absl::InvalidArgumentError(
          "field \"gpu_fraction\": at most three decimals (thousandths of a GPU)");
    }
    s.gpu_request = GpuRequest::kFraction;
    s.gpu_millis = static_cast<int>(rounded);
  }
  WARDEN_ASSIGN_OR_RETURN(s.cpu_millis, IntIn(f, "cpu_millis", 1000, 1, kMaxCpuMillis));
  WARDEN_ASSIGN_OR_RETURN(s.memory_mib, IntIn(f, "memory_mib", 1024, 1, kMaxMemoryMib));
  WARDEN_ASSIGN_OR_RETURN(int64_t prio, IntIn(f, "priority", 0, -kMaxPriority, kMaxPriority));
  s.priority = static_cast<int>(prio);
  WARDEN_ASSIGN_OR_RETURN(std::optional<std::string> iso, f.OptionalString("isolation"));
  if (iso) {
    auto parsed = ParseIsolation(*iso);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          StrCat("field \"isolation\": ", std::string(parsed.status().message())));
    }
    s.isolation = *parsed;
  }
  WARDEN_ASSIGN_OR_RETURN(std::optional<std::string> pool, f.OptionalString("pool"));
  if (pool) {
    WARDEN_RETURN_IF_ERROR(common::ValidateName("field \"pool\"", *pool));
    s.pool = *pool;
  }
  WARDEN_ASSIGN_OR_RETURN(std::optional<std::string> model, f.OptionalString("gpu_model"));
  if (model) {
    if (gpu::FindGpuModel(*model) == nullptr) {
      return absl::InvalidArgumentError(
          "field \"gpu_model\": not a known GPU model (e.g. \"H100-80GB\", \"H200-141GB\")");
    }
    if (s.gpu_request == GpuRequest::kNone) {
      return absl::InvalidArgumentError("field \"gpu_model\": the job asks for no GPU");
    }
    s.gpu_model = *model;
  }
  if (auto it = doc.find("node_selector"); it != doc.end() && !it->is_null()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError("field \"node_selector\": expected an object of strings");
    }
    if (it->size() > kMaxSelectorEntries) {
      return absl::InvalidArgumentError(
          StrCat("field \"node_selector\": at most ", kMaxSelectorEntries, " entries"));
    }
    for (const auto& [k, v] : it->items()) {
      WARDEN_RETURN_IF_ERROR(ValidateLabel("node_selector key", k, true));
      if (!v.is_string()) {
        return absl::InvalidArgumentError(
            StrCat("field \"node_selector\": value of \"", k, "\" must be a string"));
      }
      const std::string value = v.get<std::string>();
      WARDEN_RETURN_IF_ERROR(ValidateLabel("node_selector value", value, false));
      s.node_selector.emplace_back(k, value);
    }
    std::sort(s.node_selector.begin(), s.node_selector.end());
  }
  if (auto it = doc.find("tolerations"); it != doc.end() && !it->is_null()) {
    if (!it->is_array()) {
      return absl::InvalidArgumentError("field \"tolerations\": expected an array of objects");
    }
    if (it->size() > kMaxTolerations) {
      return absl::InvalidArgumentError(
          StrCat("field \"tolerations\": at most ", kMaxTolerations, " entries"));
    }
    for (const Json& t : *it) {
      if (!t.is_object()) {
        return absl::InvalidArgumentError("field \"tolerations\": each entry must be an object");
      }
      WARDEN_ASSIGN_OR_RETURN(common::JsonFields tf, common::JsonFields::Of(t));
      WARDEN_RETURN_IF_ERROR(tf.OnlyKeys({"key", "value"}));
      Toleration tol;
      WARDEN_ASSIGN_OR_RETURN(tol.key, tf.RequiredString("key"));
      WARDEN_RETURN_IF_ERROR(ValidateLabel("toleration key", tol.key, true));
      WARDEN_ASSIGN_OR_RETURN(std::optional<std::string> value, tf.OptionalString("value"));
      if (value) {
        WARDEN_RETURN_IF_ERROR(ValidateLabel("toleration value", *value, false));
        tol.value = *value;
      }
      if (std::find(s.tolerations.begin(), s.tolerations.end(), tol) != s.tolerations.end()) {
        return absl::InvalidArgumentError(
            StrCat("field \"tolerations\": duplicate toleration \"", tol.key, "\""));
      }
      s.tolerations.push_back(std::move(tol));
    }
  }
  return s;
}

std::string JobSpecToJson(const JobSpec& s) {
  Json j = Json::object();
  j["name"] = s.name;
  j["tenant"] = s.tenant;
  switch (s.gpu_request) {
    case GpuRequest::kWhole: j["gpus"] = s.gpus; break;
    case GpuRequest::kMig: j["mig_profile"] = s.mig_profile; break;
    case GpuRequest::kFraction: j["gpu_fraction"] = s.gpu_millis / 1000.0; break;
    case GpuRequest::kNone: break;
  }
  j["cpu_millis"] = s.cpu_millis;
  j["memory_mib"] = s.memory_mib;
  j["priority"] = s.priority;
  if (s.isolation) j["isolation"] = std::string(IsolationName(*s.isolation));
  if (!s.pool.empty()) j["pool"] = s.pool;
  if (!s.gpu_model.empty()) j["gpu_model"] = s.gpu_model;
  if (!s.node_selector.empty()) {
    Json sel = Json::object();
    for (const auto& [k, v] : s.node_selector) sel[k] = v;
    j["node_selector"] = sel;
  }
  if (!s.tolerations.empty()) {
    Json arr = Json::array();
    for (const Toleration& t : s.tolerations) {
      Json o = {{"key", t.key}};
      if (!t.value.empty()) o["value"] = t.value;
      arr.push_back(o);
    }
    j["tolerations"] = arr;
  }
  return j.dump();
}

}  // namespace warden::sched
