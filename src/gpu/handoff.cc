// The handoff state machine and its state file. Threat answered: tenant B reading what tenant A
// left in GPU memory (or attaching to A's leftover process) after the scheduler moved the device
// from A to B. The defence fails closed: every path that does not end in a passed verification,
// including an agent crash at any point and a corrupt state file, leaves the device quarantined.
#include "gpu/handoff.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::gpu {
namespace {

using common::Json;
using common::StrCat;

constexpr int kStateVersion = 1;
constexpr size_t kMaxStateBytes = 4 << 20;
constexpr size_t kMaxReason = 512;

std::string Shorten(std::string s) {
  if (s.size() > kMaxReason) s.resize(kMaxReason);
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

std::string ProcessList(const std::vector<GpuProcess>& procs) {
  std::string out;
  for (size_t i = 0; i < procs.size() && i < 8; ++i) {
    out += StrCat(i ? ", " : "", procs[i].pid);
  }
  if (procs.size() > 8) out += ", ...";
  return out;
}

}  // namespace

absl::Status WriteFileAtomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(StrCat("create ", tmp, ": ", std::strerror(errno)));
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(StrCat("write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string_view HandoffStateName(HandoffState s) {
  switch (s) {
    case HandoffState::kAvailable: return "available";
    case HandoffState::kAssigned: return "assigned";
    case HandoffState::kQuarantined: return "quarantined";
    case HandoffState::kScrubbing: return "scrubbing";
    case HandoffState::kVerified: return "verified";
  }
  return "quarantined";
}

std::optional<HandoffState> ParseHandoffState(std::string_view name) {
  for (HandoffState s : {HandoffState::kAvailable, HandoffState::kAssigned,
                         HandoffState::kQuarantined, HandoffState::kScrubbing,
                         HandoffState::kVerified}) {
    if (HandoffStateName(s) == name) return s;
  }
  return std::nullopt;
}

absl::StatusOr<MigInstanceInfo> GpuBackend::CreateMigInstanceAt(std::string_view, int, int) {
  return absl::UnimplementedError(
      StrCat("the ", name(), " GPU backend cannot create MIG instances at a placement"));
}

absl::StatusOr<std::vector<GpuProcess>> GpuBackend::RunningProcesses(std::string_view) {
  return absl::UnimplementedError(
      StrCat("the ", name(), " GPU backend cannot list a device's processes"));
}

// ---------------------------------------------------------------------------------------------
// State file

std::string EncodeHandoffState(const std::map<std::string, DeviceHandoff, std::less<>>& devices) {
  Json list = Json::array();
  for (const auto& [uuid, d] : devices) {
    list.push_back(Json{{"uuid", d.uuid},
                        {"parent_uuid", d.parent_uuid},
                        {"mig_enabled", d.mig_enabled},
                        {"state", std::string(HandoffStateName(d.state))},
                        {"tenant", d.tenant},
                        {"holders", d.holders},
                        {"reason", d.reason},
                        {"failures", d.failures},
                        {"updated_unix", d.updated_unix},
                        {"last_scrub_bytes", d.last_scrub_bytes},
                        {"last_scrub_gbps", d.last_scrub_gbps},
                        {"last_scrub_mismatches", d.last_scrub_mismatches}});
  }
  return Json{{"version", kStateVersion}, {"devices", std::move(list)}}.dump(1) + "\n";
}

absl::StatusOr<std::map<std::string, DeviceHandoff, std::less<>>> DecodeHandoffState(
    std::string_view text) {
  auto bad = [](std::string_view why) {
    return absl::DataLossError(StrCat("GPU handoff state file: ", why));
  };
  if (text.size() > kMaxStateBytes) return bad("too large");
  auto parsed = common::ParseJsonStrict(text, {.max_depth = 4, .max_bytes = kMaxStateBytes});
  if (!parsed.ok()) return bad(std::string(parsed.status().message()));
  const Json& j = *parsed;
  if (!j.is_object() || j.size() != 2 || !j.contains("version") || !j.contains("devices")) {
    return bad("expected {\"version\", \"devices\"}");
  }
  if (!j["version"].is_number_integer() || j["version"].get<int64_t>() != kStateVersion) {
    return bad(StrCat("unknown version (this agent reads version ", kStateVersion, ")"));
  }
  if (!j["devices"].is_array()) return bad("devices is not an array");
  std::map<std::string, DeviceHandoff, std::less<>> out;
  static const std::set<std::string> kKeys = {
      "uuid",   "parent_uuid", "mig_enabled",  "state",           "tenant",          "holders",
      "reason", "failures",    "updated_unix", "last_scrub_bytes", "last_scrub_gbps",
      "last_scrub_mismatches"};
  for (const Json& e : j["devices"]) {
    if (!e.is_object() || e.size() != kKeys.size()) return bad("a device entry has wrong keys");
    for (const auto& [k, v] : e.items()) {
      if (!kKeys.count(k)) return bad(StrCat("unknown key ", k));
    }
    try {
      DeviceHandoff d;
      d.uuid = e.at("uuid").get<std::string>();
      d.parent_uuid = e.at("parent_uuid").get<std::string>();
      d.mig_enabled = e.at("mig_enabled").get<bool>();
      auto state = ParseHandoffState(e.at("state").get<std::string>());
      if (!state) return bad(StrCat("device ", d.uuid, ": unknown state"));
      d.state = *state;
      d.tenant = e.at("tenant").get<std::string>();
      d.holders = e.at("holders").get<int>();
      d.reason = e.at("reason").get<std::string>();
      d.failures = e.at("failures").get<int>();
      d.updated_unix = e.at("updated_unix").get<int64_t>();
      d.last_scrub_bytes = e.at("last_scrub_bytes").get<uint64_t>();
      d.last_scrub_gbps = e.at("last_scrub_gbps").get<double>();
      d.last_scrub_mismatches = e.at("last_scrub_mismatches").get<uint64_t>();
      if (d.uuid.empty()) return bad("a device has an empty uuid");
      if (d.holders < 0 || d.failures < 0) return bad(StrCat("device ", d.uuid, ": negative count"));
      if (!out.emplace(d.uuid, d).second) return bad(StrCat("device ", d.uuid, " listed twice"));
    } catch (const Json::exception& ex) {
      return bad(StrCat("a device entry has a wrong type: ", ex.what()));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Controller

HandoffController::HandoffController(const HandoffOptions& options, GpuBackend* backend,
                                     MemoryScrubber* scrubber)
    : options_(options),
      backend_(backend),
      scrubber_(scrubber),
      clock_(options.clock ? options.clock : &common::RealClock::Get()) {}

absl::StatusOr<std::unique_ptr<HandoffController>> HandoffController::Create(
    const HandoffOptions& options, GpuBackend* backend, MemoryScrubber* scrubber) {
  if (backend == nullptr || scrubber == nullptr) {
    return absl::InvalidArgumentError("the GPU handoff needs a GPU backend and a scrubber");
  }
  std::unique_ptr<HandoffController> c(new HandoffController(options, backend, scrubber));
  std::lock_guard lock(c->mu_);
  WARDEN_RETURN_IF_ERROR(c->LoadLocked());
  return c;
}

absl::Status HandoffController::LoadLocked() {
  if (options_.state_path.empty()) return absl::OkStatus();
  if (::access(options_.state_path.c_str(), F_OK) != 0 && errno == ENOENT) {
    return absl::OkStatus();  // first start: every device starts quarantined (Sync)
  }
  std::ifstream in(options_.state_path, std::ios::binary);
  if (!in) {
    return absl::InternalError(StrCat("cannot read ", options_.state_path, ": ",
                                      std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto decoded = DecodeHandoffState(ss.str());
  if (!decoded.ok()) {
    // No record survives; Sync then adds every device as quarantined with this reason, and the
    // next save replaces the file. Availability suffers, isolation does not.
    corrupt_reason_ = StrCat("state file unreadable (", decoded.status().message(), ")");
    return absl::OkStatus();
  }
  devices_ = std::move(*decoded);
  for (auto& [uuid, d] : devices_) {
    if (d.state == HandoffState::kScrubbing || d.state == HandoffState::kVerified) {
      SetLocked(d, HandoffState::kQuarantined, "the agent stopped during the handoff");
    }
  }
  return absl::OkStatus();
}

absl::Status HandoffController::SaveLocked() {
  if (options_.state_path.empty()) return absl::OkStatus();
  return WriteFileAtomic(options_.state_path, EncodeHandoffState(devices_));
}

void HandoffController::SetLocked(DeviceHandoff& d, HandoffState s, std::string reason) {
  d.state = s;
  d.reason = Shorten(std::move(reason));
  d.updated_unix = clock_->NowUnix();
}

DeviceHandoff* HandoffController::FindLocked(std::string_view uuid) {
  auto it = devices_.find(uuid);
  return it == devices_.end() ? nullptr : &it->second;
}

absl::Status HandoffController::Sync(const std::vector<GpuDevice>& devices) {
  std::lock_guard lock(mu_);
  std::set<std::string, std::less<>> present;
  // Saved only when something changed: this runs on every heartbeat.
  bool changed = !corrupt_reason_.empty();
  const std::string fresh =
      corrupt_reason_.empty() ? "never verified by this agent" : corrupt_reason_;
  auto add = [&](const std::string& uuid, const std::string& parent, bool mig_enabled) {
    present.insert(uuid);
    auto it = devices_.find(uuid);
    if (it == devices_.end()) {
      DeviceHandoff d;
      d.uuid = uuid;
      d.parent_uuid = parent;
      d.mig_enabled = mig_enabled;
      SetLocked(d, HandoffState::kQuarantined, fresh);
      devices_.emplace(uuid, std::move(d));
      changed = true;
      return;
    }
    DeviceHandoff& d = it->second;
    if (parent.empty() && d.mig_enabled != mig_enabled) {
      // Re-partitioning moves memory between instances and the whole GPU.
      d.mig_enabled = mig_enabled;
      changed = true;
      if (d.state != HandoffState::kAssigned) {
        SetLocked(d, HandoffState::kQuarantined, "MIG mode changed");
      }
    }
  };
  for (const GpuDevice& g : devices) {
    add(g.uuid, "", g.mig_enabled);
    for (const MigInstanceInfo& m : g.mig_instances) add(m.uuid, g.uuid, false);
  }
  for (auto it = devices_.begin(); it != devices_.end();) {
    if (present.count(it->first)) {
      ++it;
    } else {
      it = devices_.erase(it);
      changed = true;
    }
  }
  corrupt_reason_.clear();
  return changed ? SaveLocked() : absl::OkStatus();
}

absl::Status HandoffController::Assign(std::string_view uuid, std::string_view tenant) {
  std::lock_guard lock(mu_);
  if (tenant.empty()) return absl::InvalidArgumentError("assign: empty tenant");
  DeviceHandoff* d = FindLocked(uuid);
  if (d == nullptr) return absl::NotFoundError(StrCat("no GPU device ", uuid.substr(0, 64)));
  if (d->state == HandoffState::kAssigned) {
    if (d->tenant != tenant) {
      return absl::FailedPreconditionError(
          StrCat("device ", d->uuid, " is assigned to another tenant"));
    }
    ++d->holders;
    return SaveLocked();
  }
  if (d->state != HandoffState::kAvailable) {
    return absl::FailedPreconditionError(
        StrCat("device ", d->uuid, " is ", HandoffStateName(d->state),
               d->reason.empty() ? "" : StrCat(" (", d->reason, ")"),
               ": only a verified, available device can be assigned"));
  }
  d->tenant = std::string(tenant);
  d->holders = 1;
  SetLocked(*d, HandoffState::kAssigned, "");
  return SaveLocked();
}

absl::Status HandoffController::Release(std::string_view uuid) {
  std::lock_guard lock(mu_);
  DeviceHandoff* d = FindLocked(uuid);
  if (d == nullptr) return absl::NotFoundError(StrCat("no GPU device ", uuid.substr(0, 64)));
  if (d->state != HandoffState::kAssigned) {
    return absl::FailedPreconditionError(
        StrCat("device ", d->uuid, " is ", HandoffStateName(d->state), ", not assigned"));
  }
  if (--d->holders > 0) return SaveLocked();
  d->holders = 0;
  SetLocked(*d, HandoffState::kQuarantined,
            StrCat("released by tenant ", d->tenant, "; awaiting verification"));
  return SaveLocked();
}

absl::Status HandoffController::Quarantine(std::string_view uuid, std::string_view reason) {
  std::lock_guard lock(mu_);
  DeviceHandoff* d = FindLocked(uuid);
  if (d == nullptr) return absl::NotFoundError(StrCat("no GPU device ", uuid.substr(0, 64)));
  d->holders = 0;
  SetLocked(*d, HandoffState::kQuarantined, std::string(reason));
  return SaveLocked();
}

absl::StatusOr<HandoffReport> HandoffController::Fail(const std::string& uuid,
                                                       HandoffReport report, std::string reason) {
  std::lock_guard lock(mu_);
  report.state = HandoffState::kQuarantined;
  report.reason = Shorten(reason);
  DeviceHandoff* d = FindLocked(uuid);
  if (d != nullptr) {
    ++d->failures;
    SetLocked(*d, HandoffState::kQuarantined, std::move(reason));
    WARDEN_RETURN_IF_ERROR(SaveLocked());
  }
  return report;
}

absl::StatusOr<HandoffReport> HandoffController::RunHandoff(std::string_view uuid_view) {
  const std::string uuid(uuid_view);
  HandoffReport report;
  report.uuid = uuid;
  {
    std::lock_guard lock(mu_);
    DeviceHandoff* d = FindLocked(uuid);
    if (d == nullptr) return absl::NotFoundError(StrCat("no GPU device ", uuid.substr(0, 64)));
    if (d->state != HandoffState::kQuarantined) {
      return absl::FailedPreconditionError(StrCat("device ", uuid, " is ",
                                                  HandoffStateName(d->state),
                                                  "; only a quarantined device is handed off"));
    }
    // A whole GPU in MIG mode is never scheduled as a whole, and its memory is reachable only
    // through its instances, each handed off on its own. Its record tracks the mode only.
    if (d->parent_uuid.empty() && d->mig_enabled) {
      report.reason = "MIG mode is on: its instances are handed off one by one";
      return report;
    }
  }
  // 1. No process may be left: a leftover process could still read or write the memory after
  //    the scrub (CUDA contexts outlive the job's sandbox if a process escaped the cgroup).
  auto procs = backend_->RunningProcesses(uuid);
  if (!procs.ok()) {
    return Fail(uuid, std::move(report),
                StrCat("process check failed: ", procs.status().message()));
  }
  if (!procs->empty()) {
    report.processes = *procs;
    return Fail(uuid, std::move(report),
                StrCat(procs->size(), " process(es) still on the device (pid ",
                       ProcessList(*procs), ")"));
  }
  {
    std::lock_guard lock(mu_);
    DeviceHandoff* d = FindLocked(uuid);
    if (d == nullptr || d->state != HandoffState::kQuarantined) {
      return absl::AbortedError(StrCat("device ", uuid, " changed during its handoff"));
    }
    SetLocked(*d, HandoffState::kScrubbing, "");
    WARDEN_RETURN_IF_ERROR(SaveLocked());
  }
  // 2. Overwrite and verify the memory (the mutex is not held: this takes a while).
  auto scrub = scrubber_->Scrub(uuid, options_.scrub);
  if (!scrub.ok()) {
    return Fail(uuid, std::move(report), StrCat("scrub failed: ", scrub.status().message()));
  }
  report.scrub = *scrub;
  {
    std::lock_guard lock(mu_);
    DeviceHandoff* d = FindLocked(uuid);
    if (d != nullptr) {
      d->last_scrub_bytes = scrub->scrubbed_bytes;
      d->last_scrub_gbps = scrub->write_gbps;
      d->last_scrub_mismatches = scrub->pattern_mismatches + scrub->zero_mismatches;
    }
  }
  if (!scrub->passed) {
    return Fail(uuid, std::move(report),
                StrCat("verification failed: ",
                       scrub->failure.empty() ? "the scrub did not pass" : scrub->failure));
  }
  {
    std::lock_guard lock(mu_);
    DeviceHandoff* d = FindLocked(uuid);
    if (d == nullptr) return absl::AbortedError(StrCat("device ", uuid, " vanished"));
    SetLocked(*d, HandoffState::kVerified, "");
    WARDEN_RETURN_IF_ERROR(SaveLocked());
  }
  // 3. Nothing attached while the scrub ran.
  procs = backend_->RunningProcesses(uuid);
  if (!procs.ok() || !procs->empty()) {
    if (procs.ok()) report.processes = *procs;
    return Fail(uuid, std::move(report),
                procs.ok() ? StrCat("a process appeared during the scrub (pid ",
                                    ProcessList(*procs), ")")
                           : StrCat("process check failed: ", procs.status().message()));
  }
  std::lock_guard lock(mu_);
  DeviceHandoff* d = FindLocked(uuid);
  if (d == nullptr) return absl::AbortedError(StrCat("device ", uuid, " vanished"));
  d->failures = 0;
  SetLocked(*d, HandoffState::kAvailable, "");
  if (absl::Status s = SaveLocked(); !s.ok()) {
    // Not durable: do not leave it available in memory either.
    SetLocked(*d, HandoffState::kQuarantined, StrCat("state not saved: ", s.message()));
    return s;
  }
  report.state = HandoffState::kAvailable;
  return report;
}

std::vector<HandoffReport> HandoffController::RunAllHandoffs() {
  std::vector<std::string> todo;
  {
    std::lock_guard lock(mu_);
    for (const auto& [uuid, d] : devices_) {
      if (d.state == HandoffState::kQuarantined && !(d.parent_uuid.empty() && d.mig_enabled)) {
        todo.push_back(uuid);
      }
    }
  }
  std::vector<HandoffReport> out;
  for (const std::string& uuid : todo) {
    auto r = RunHandoff(uuid);
    if (r.ok()) {
      out.push_back(std::move(*r));
    } else {
      HandoffReport failed;
      failed.uuid = uuid;
      failed.reason = std::string(r.status().message());
      out.push_back(std::move(failed));
    }
  }
  return out;
}

bool HandoffController::Schedulable(std::string_view uuid) const {
  std::lock_guard lock(mu_);
  auto it = devices_.find(uuid);
  return it != devices_.end() && it->second.state == HandoffState::kAvailable;
}

std::optional<DeviceHandoff> HandoffController::Get(std::string_view uuid) const {
  std::lock_guard lock(mu_);
  auto it = devices_.find(uuid);
  if (it == devices_.end()) return std::nullopt;
  return it->second;
}

std::vector<DeviceHandoff> HandoffController::Snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<DeviceHandoff> out;
  for (const auto& [uuid, d] : devices_) out.push_back(d);
  return out;
}

void HandoffController::Annotate(std::vector<GpuDevice>& devices) const {
  std::lock_guard lock(mu_);
  auto info = [&](const std::string& uuid) {
    auto it = devices_.find(uuid);
    if (it == devices_.end()) {
      return HandoffInfo{HandoffState::kQuarantined, "not yet seen by the handoff", 0};
    }
    return it->second.Info();
  };
  for (GpuDevice& g : devices) {
    g.handoff = info(g.uuid);
    for (MigInstanceInfo& m : g.mig_instances) m.handoff = info(m.uuid);
  }
}

}  // namespace warden::gpu
