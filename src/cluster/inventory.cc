// The inventory wire format and its strict decoder, plus label and taint rules. The decoder reads
// what a node agent sends, so it treats it as untrusted: a compromised node must not be able to
// crash the server, grow its memory without bound, or smuggle control characters into operators'
// terminals (`node show`). Fuzzed by fuzz/fuzz_inventory.cc.
#include <cstdint>
#include <set>

#include "cluster/cluster.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::cluster {
namespace {

using common::Json;
using common::StrCat;

constexpr size_t kMaxString = 256;
constexpr size_t kMaxRuntimes = 16;
constexpr size_t kMaxMigInstances = 7;

absl::Status Bad(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(StrCat("inventory field \"", field, "\": ", why));
}

// Printable text only: no control characters (terminal escapes), valid UTF-8 is left to the JSON
// parser (nlohmann rejects invalid UTF-8 in strings).
absl::Status CheckText(std::string_view field, const std::string& s) {
  if (s.size() > kMaxString) return Bad(field, StrCat("longer than ", kMaxString, " bytes"));
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return Bad(field, "contains a control character");
  }
  return absl::OkStatus();
}

// A view of one JSON object that must have exactly the keys asked for.
class Fields {
 public:
  static absl::StatusOr<Fields> Of(const Json& j, std::string_view where,
                                   std::initializer_list<std::string_view> keys,
                                   std::initializer_list<std::string_view> optional_keys = {}) {
    if (!j.is_object()) return Bad(where, "expected an object");
    std::set<std::string_view> want(keys);
    want.insert(optional_keys.begin(), optional_keys.end());
    for (const auto& [k, v] : j.items()) {
      if (!want.count(k)) return Bad(StrCat(where, ".", k), "unknown field");
    }
    for (std::string_view k : keys) {
      if (!j.contains(std::string(k))) return Bad(StrCat(where, ".", k), "missing");
    }
    return Fields(j, where);
  }

  absl::StatusOr<std::string> String(std::string_view key) const {
    const Json& v = (*j_)[std::string(key)];
    if (!v.is_string()) return Bad(Name(key), "expected a string");
    std::string s = v.get<std::string>();
    WARDEN_RETURN_IF_ERROR(CheckText(Name(key), s));
    return s;
  }
  absl::StatusOr<int64_t> Int(std::string_view key, int64_t min, int64_t max) const {
    const Json& v = (*j_)[std::string(key)];
    if (!v.is_number_integer()) return Bad(Name(key), "expected an integer");
    // Unsigned values beyond INT64_MAX must not wrap into range.
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Bad(Name(key), "out of range");
    }
    int64_t n = v.get<int64_t>();
    if (n < min || n > max) return Bad(Name(key), StrCat("out of range [", min, ", ", max, "]"));
    return n;
  }
  absl::StatusOr<bool> Bool(std::string_view key) const {
    const Json& v = (*j_)[std::string(key)];
    if (!v.is_boolean()) return Bad(Name(key), "expected true or false");
    return v.get<bool>();
  }
  absl::StatusOr<const Json*> Array(std::string_view key, size_t max) const {
    const Json& v = (*j_)[std::string(key)];
    if (!v.is_array()) return Bad(Name(key), "expected an array");
    if (v.size() > max) return Bad(Name(key), StrCat("more than ", max, " entries"));
    return &v;
  }
  std::string Name(std::string_view key) const { return StrCat(where_, ".", key); }
  bool Has(std::string_view key) const { return j_->contains(std::string(key)); }
  const Json& At(std::string_view key) const { return (*j_)[std::string(key)]; }

 private:
  Fields(const Json& j, std::string_view where) : j_(&j), where_(where) {}
  const Json* j_;
  std::string where_;
};

// The optional per-device handoff status (issue 7): {"state", "reason", "failures"}. Absent in
// inventories of agents that do not run the handoff; HandoffSchedulable treats that as
// unschedulable.
absl::StatusOr<std::optional<gpu::HandoffInfo>> DecodeHandoff(const Fields& parent) {
  if (!parent.Has("handoff")) return std::optional<gpu::HandoffInfo>();
  WARDEN_ASSIGN_OR_RETURN(
      Fields f, Fields::Of(parent.At("handoff"), parent.Name("handoff"),
                           {"state", "reason", "failures"}));
  gpu::HandoffInfo h;
  WARDEN_ASSIGN_OR_RETURN(std::string state, f.String("state"));
  auto parsed = gpu::ParseHandoffState(state);
  if (!parsed) {
    return Bad(f.Name("state"),
               "expected available, assigned, quarantined, scrubbing or verified");
  }
  h.state = *parsed;
  WARDEN_ASSIGN_OR_RETURN(h.reason, f.String("reason"));
  WARDEN_ASSIGN_OR_RETURN(int64_t failures, f.Int("failures", 0, 1 << 20));
  h.failures = static_cast<int>(failures);
  return std::optional<gpu::HandoffInfo>(std::move(h));
}

Json HandoffJson(const gpu::HandoffInfo& h) {
  return Json{{"state", std::string(gpu::HandoffStateName(h.state))},
              {"reason", h.reason},
              {"failures", h.failures}};
}

absl::StatusOr<gpu::MigInstanceInfo> DecodeMig(const Json& j, const std::string& where) {
  WARDEN_ASSIGN_OR_RETURN(
      Fields f, Fields::Of(j, where, {"uuid", "profile_id", "profile_name", "start", "memory_mib"},
                           {"handoff", "gpu_instance_id", "compute_instance_id", "job"}));
  gpu::MigInstanceInfo m;
  WARDEN_ASSIGN_OR_RETURN(m.uuid, f.String("uuid"));
  WARDEN_ASSIGN_OR_RETURN(int64_t profile, f.Int("profile_id", 0, 255));
  m.profile_id = static_cast<int>(profile);
  WARDEN_ASSIGN_OR_RETURN(m.profile_name, f.String("profile_name"));
  WARDEN_ASSIGN_OR_RETURN(int64_t start, f.Int("start", 0, gpu::kMemorySlices - 1));
  m.start = static_cast<int>(start);
  WARDEN_ASSIGN_OR_RETURN(int64_t mem, f.Int("memory_mib", 0, int64_t{1} << 30));
  m.memory_mib = static_cast<uint64_t>(mem);
  WARDEN_ASSIGN_OR_RETURN(m.handoff, DecodeHandoff(f));
  // Issue 6 (optional): the driver's instance ids and the job the agent created it for.
  if (f.Has("gpu_instance_id")) {
    WARDEN_ASSIGN_OR_RETURN(int64_t gi, f.Int("gpu_instance_id", 0, 1 << 16));
    m.gpu_instance_id = static_cast<int>(gi);
  }
  if (f.Has("compute_instance_id")) {
    WARDEN_ASSIGN_OR_RETURN(int64_t ci, f.Int("compute_instance_id", 0, 1 << 16));
    m.compute_instance_id = static_cast<int>(ci);
  }
  if (f.Has("job")) {
    WARDEN_ASSIGN_OR_RETURN(m.job_id, f.String("job"));
  }
  return m;
}

absl::StatusOr<gpu::GpuDevice> DecodeGpu(const Json& j, const std::string& where) {
  WARDEN_ASSIGN_OR_RETURN(
      Fields f,
      Fields::Of(j, where,
                 {"index", "uuid", "model", "product_name", "memory_mib", "driver_version",
                  "cuda_version", "ecc_enabled", "mig_capable", "mig_enabled", "mig_instances"},
                 {"handoff"}));
  gpu::GpuDevice d;
  WARDEN_ASSIGN_OR_RETURN(int64_t index, f.Int("index", 0, kMaxInventoryGpus - 1));
  d.index = static_cast<int>(index);
  WARDEN_ASSIGN_OR_RETURN(d.uuid, f.String("uuid"));
  if (d.uuid.empty()) return Bad(f.Name("uuid"), "empty");
  WARDEN_ASSIGN_OR_RETURN(d.model, f.String("model"));
  WARDEN_ASSIGN_OR_RETURN(d.product_name, f.String("product_name"));
  WARDEN_ASSIGN_OR_RETURN(int64_t mem, f.Int("memory_mib", 0, int64_t{1} << 30));
  d.memory_mib = static_cast<uint64_t>(mem);
  WARDEN_ASSIGN_OR_RETURN(d.driver_version, f.String("driver_version"));
  WARDEN_ASSIGN_OR_RETURN(d.cuda_version, f.String("cuda_version"));
  WARDEN_ASSIGN_OR_RETURN(d.ecc_enabled, f.Bool("ecc_enabled"));
  WARDEN_ASSIGN_OR_RETURN(d.mig_capable, f.Bool("mig_capable"));
  WARDEN_ASSIGN_OR_RETURN(d.mig_enabled, f.Bool("mig_enabled"));
  if (d.mig_enabled && !d.mig_capable)
    return Bad(f.Name("mig_enabled"), "true on a GPU without MIG");
  WARDEN_ASSIGN_OR_RETURN(const Json* migs, f.Array("mig_instances", kMaxMigInstances));
  if (!d.mig_enabled && !migs->empty()) {
    return Bad(f.Name("mig_instances"), "instances listed while MIG mode is off");
  }
  std::set<std::string> uuids;
  for (size_t i = 0; i < migs->size(); ++i) {
    WARDEN_ASSIGN_OR_RETURN(gpu::MigInstanceInfo m,
                            DecodeMig((*migs)[i], StrCat(f.Name("mig_instances"), "[", i, "]")));
    if (!uuids.insert(m.uuid).second) {
      return Bad(StrCat(f.Name("mig_instances"), "[", i, "].uuid"), "duplicate");
    }
    d.mig_instances.push_back(std::move(m));
  }
  WARDEN_ASSIGN_OR_RETURN(d.handoff, DecodeHandoff(f));
  return d;
}

Json MigJson(const gpu::MigInstanceInfo& m) {
  Json j{{"uuid", m.uuid},
         {"profile_id", m.profile_id},
         {"profile_name", m.profile_name},
         {"start", m.start},
         {"memory_mib", m.memory_mib}};
  if (m.handoff) j["handoff"] = HandoffJson(*m.handoff);
  if (m.gpu_instance_id >= 0) j["gpu_instance_id"] = m.gpu_instance_id;
  if (m.compute_instance_id >= 0) j["compute_instance_id"] = m.compute_instance_id;
  if (!m.job_id.empty()) j["job"] = m.job_id;
  return j;
}

bool LabelKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '/' || c == '_' ||
         c == '-';
}
bool LabelValueChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

Json EncodeInventory(const NodeInventory& inv) {
  Json runtimes = Json::array();
  for (const auto& r : inv.container_runtimes) {
    runtimes.push_back(Json{{"name", r.name}, {"version", r.version}});
  }
  Json gpus = Json::array();
  for (const auto& d : inv.gpus) {
    Json migs = Json::array();
    for (const auto& m : d.mig_instances) migs.push_back(MigJson(m));
    Json g{{"index", d.index},
                        {"uuid", d.uuid},
                        {"model", d.model},
                        {"product_name", d.product_name},
                        {"memory_mib", d.memory_mib},
                        {"driver_version", d.driver_version},
                        {"cuda_version", d.cuda_version},
                        {"ecc_enabled", d.ecc_enabled},
                        {"mig_capable", d.mig_capable},
                        {"mig_enabled", d.mig_enabled},
                        {"mig_instances", std::move(migs)}};
    if (d.handoff) g["handoff"] = HandoffJson(*d.handoff);
    gpus.push_back(std::move(g));
  }
  return Json{{"hostname", inv.hostname},
              {"os", inv.os},
              {"kernel", inv.kernel},
              {"arch", inv.arch},
              {"cpus", inv.cpus},
              {"memory_mib", inv.memory_mib},
              {"agent_version", inv.agent_version},
              {"gpu_backend", inv.gpu_backend},
              {"container_runtimes", std::move(runtimes)},
              {"gpus", std::move(gpus)}};
}

absl::StatusOr<NodeInventory> DecodeInventory(const Json& json) {
  WARDEN_ASSIGN_OR_RETURN(
      Fields f, Fields::Of(json, "inventory",
                           {"hostname", "os", "kernel", "arch", "cpus", "memory_mib",
                            "agent_version", "gpu_backend", "container_runtimes", "gpus"}));
  NodeInventory inv;
  WARDEN_ASSIGN_OR_RETURN(inv.hostname, f.String("hostname"));
  WARDEN_ASSIGN_OR_RETURN(inv.os, f.String("os"));
  WARDEN_ASSIGN_OR_RETURN(inv.kernel, f.String("kernel"));
  WARDEN_ASSIGN_OR_RETURN(inv.arch, f.String("arch"));
  WARDEN_ASSIGN_OR_RETURN(int64_t cpus, f.Int("cpus", 0, 1 << 16));
  inv.cpus = static_cast<int>(cpus);
  WARDEN_ASSIGN_OR_RETURN(int64_t mem, f.Int("memory_mib", 0, int64_t{1} << 40));
  inv.memory_mib = static_cast<uint64_t>(mem);
  WARDEN_ASSIGN_OR_RETURN(inv.agent_version, f.String("agent_version"));
  WARDEN_ASSIGN_OR_RETURN(inv.gpu_backend, f.String("gpu_backend"));
  if (inv.gpu_backend != "sim" && inv.gpu_backend != "nvml" && inv.gpu_backend != "none") {
    return Bad("inventory.gpu_backend", "expected \"sim\", \"nvml\" or \"none\"");
  }
  WARDEN_ASSIGN_OR_RETURN(const Json* runtimes, f.Array("container_runtimes", kMaxRuntimes));
  for (size_t i = 0; i < runtimes->size(); ++i) {
    std::string where = StrCat("inventory.container_runtimes[", i, "]");
    WARDEN_ASSIGN_OR_RETURN(Fields rf, Fields::Of((*runtimes)[i], where, {"name", "version"}));
    ContainerRuntime r;
    WARDEN_ASSIGN_OR_RETURN(r.name, rf.String("name"));
    WARDEN_ASSIGN_OR_RETURN(r.version, rf.String("version"));
    if (r.name.empty()) return Bad(rf.Name("name"), "empty");
    inv.container_runtimes.push_back(std::move(r));
  }
  WARDEN_ASSIGN_OR_RETURN(const Json* gpus, f.Array("gpus", kMaxInventoryGpus));
  std::set<std::string> uuids;
  std::set<int> indexes;
  for (size_t i = 0; i < gpus->size(); ++i) {
    std::string where = StrCat("inventory.gpus[", i, "]");
    WARDEN_ASSIGN_OR_RETURN(gpu::GpuDevice d, DecodeGpu((*gpus)[i], where));
    // Identity of a GPU is its UUID: two entries with one UUID would let a node double-count.
    if (!uuids.insert(d.uuid).second) return Bad(StrCat(where, ".uuid"), "duplicate GPU UUID");
    if (!indexes.insert(d.index).second) return Bad(StrCat(where, ".index"), "duplicate index");
    inv.gpus.push_back(std::move(d));
  }
  return inv;
}

absl::StatusOr<NodeInventory> DecodeInventoryText(std::string_view text) {
  if (text.size() > kMaxInventoryBytes) {
    return absl::InvalidArgumentError(
        StrCat("inventory larger than ", kMaxInventoryBytes, " bytes"));
  }
  common::JsonLimits limits;
  limits.max_depth = 8;
  limits.max_bytes = kMaxInventoryBytes;
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(text, limits));
  return DecodeInventory(j);
}

bool HandoffSchedulable(const std::optional<gpu::HandoffInfo>& handoff) {
  return handoff.has_value() && handoff->state == gpu::HandoffState::kAvailable;
}

absl::Status ValidateLabel(std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > 63 || !std::isalnum(static_cast<unsigned char>(key[0]))) {
    return absl::InvalidArgumentError(
        StrCat("label key \"", key, "\": 1-63 characters starting with a letter or digit"));
  }
  for (char c : key) {
    if (!LabelKeyChar(c)) {
      return absl::InvalidArgumentError(StrCat("label key \"", key, "\": only [a-z0-9./_-]"));
    }
  }
  if (value.size() > 63) {
    return absl::InvalidArgumentError(StrCat("label value for \"", key, "\": over 63 characters"));
  }
  for (char c : value) {
    if (!LabelValueChar(c)) {
      return absl::InvalidArgumentError(
          StrCat("label value for \"", key, "\": only [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTaint(const Taint& t) {
  WARDEN_RETURN_IF_ERROR(ValidateLabel(t.key, t.value));
  if (t.effect != "NoSchedule" && t.effect != "PreferNoSchedule" && t.effect != "NoExecute") {
    return absl::InvalidArgumentError(
        StrCat("taint \"", t.key, "\": effect \"", t.effect,
               "\" is not NoSchedule, PreferNoSchedule or NoExecute"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Taint> ParseTaint(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return absl::InvalidArgumentError(
        StrCat("taint \"", text, "\": expected key=value:Effect or key:Effect"));
  }
  Taint t;
  t.effect = std::string(text.substr(colon + 1));
  std::string_view kv = text.substr(0, colon);
  size_t eq = kv.find('=');
  t.key = std::string(kv.substr(0, eq));
  if (eq != std::string_view::npos) t.value = std::string(kv.substr(eq + 1));
  WARDEN_RETURN_IF_ERROR(ValidateTaint(t));
  return t;
}

}  // namespace warden::cluster
