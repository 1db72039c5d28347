// The agent's MIG instances: create at the planned placement, record, destroy, reconcile.
#include "agent/mig_manager.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"
#include "gpu/handoff.h"

namespace warden::agent {
namespace {

using common::Json;
using common::StrCat;

constexpr int kStateVersion = 1;
constexpr size_t kMaxStateBytes = 1 << 20;
constexpr size_t kMaxRecords = 64 * gpu::kComputeSlices;

absl::StatusOr<std::vector<MigRecord>> Decode(const std::string& path, const std::string& text) {
  auto bad = [&](std::string_view why) {
    return absl::DataLossError(StrCat("MIG instance records ", path, ": ", why,
                                      " (fix or remove the file; nothing was destroyed)"));
  };
  auto j = common::ParseJsonStrict(text, {.max_depth = 4, .max_bytes = kMaxStateBytes});
  if (!j.ok()) return bad(std::string(j.status().message()));
  if (!j->is_object() || j->size() != 2 || !j->contains("version") || !j->contains("instances")) {
    return bad("expected {\"version\", \"instances\"}");
  }
  if (!(*j)["version"].is_number_integer() || (*j)["version"].get<int64_t>() != kStateVersion) {
    return bad(StrCat("unknown version (this agent reads version ", kStateVersion, ")"));
  }
  const Json& list = (*j)["instances"];
  if (!list.is_array() || list.size() > kMaxRecords) return bad("\"instances\" must be a list");
  std::vector<MigRecord> out;
  for (const Json& e : list) {
    if (!e.is_object() || e.size() != 5) return bad("an instance must have exactly 5 fields");
    for (const char* k : {"job", "gpu", "uuid"}) {
      if (!e.contains(k) || !e[k].is_string()) return bad(StrCat("field \"", k, "\" missing"));
    }
    for (const char* k : {"profile_id", "start"}) {
      if (!e.contains(k) || !e[k].is_number_integer()) {
        return bad(StrCat("field \"", k, "\" missing"));
      }
    }
    MigRecord r{e["job"].get<std::string>(), e["gpu"].get<std::string>(),
                e["uuid"].get<std::string>(), e["profile_id"].get<int>(), e["start"].get<int>()};
    if (r.job_id.empty() || r.gpu_uuid.empty() || r.start < 0 || r.start >= gpu::kMemorySlices) {
      return bad("an instance has an empty job/GPU or a start outside 0..7");
    }
    out.push_back(std::move(r));
  }
  return out;
}

const gpu::MigInstanceInfo* FindInstance(const std::vector<gpu::GpuDevice>& gpus,
                                         const std::string& gpu_uuid, const std::string& mig_uuid) {
  for (const gpu::GpuDevice& g : gpus) {
    if (g.uuid != gpu_uuid) continue;
    for (const gpu::MigInstanceInfo& m : g.mig_instances) {
      if (m.uuid == mig_uuid) return &m;
    }
  }
  return nullptr;
}

std::string Describe(const MigRequest& r) {
  return StrCat("profile ", r.profile_id, " at slice ", r.start, " on ", r.gpu_uuid);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MigManager>> MigManager::Create(gpu::GpuBackend* backend,
                                                               std::string state_path) {
  if (backend == nullptr) return absl::InvalidArgumentError("MIG manager without a GPU backend");
  std::unique_ptr<MigManager> m(new MigManager(backend, std::move(state_path)));
  if (m->path_.empty()) return m;
  std::ifstream in(m->path_, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return m;  // first start: no instances yet
    return absl::InternalError(StrCat("cannot read ", m->path_, ": ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  WARDEN_ASSIGN_OR_RETURN(m->records_, Decode(m->path_, ss.str()));
  return m;
}

absl::Status MigManager::SaveLocked() const {
  if (path_.empty()) return absl::OkStatus();
  Json list = Json::array();
  for (const MigRecord& r : records_) {
    list.push_back(Json{{"job", r.job_id},
                        {"gpu", r.gpu_uuid},
                        {"uuid", r.mig_uuid},
                        {"profile_id", r.profile_id},
                        {"start", r.start}});
  }
  return gpu::WriteFileAtomic(path_, Json{{"version", kStateVersion}, {"instances", list}}.dump());
}

absl::StatusOr<std::vector<std::string>> MigManager::Acquire(
    const std::string& job_id, const std::vector<MigRequest>& requests) {
  std::lock_guard lock(mu_);
  if (job_id.empty()) return absl::InvalidArgumentError("MIG instance for a job without an id");
  std::vector<std::string> out;
  std::vector<std::string> created;  // by this call, for the undo
  auto undo = [&](absl::Status s) -> absl::Status {
    for (const std::string& u : created) {
      auto it = std::find_if(records_.begin(), records_.end(),
                             [&](const MigRecord& r) { return r.mig_uuid == u; });
      if (it == records_.end()) continue;
      if (backend_->DestroyMigInstance(it->gpu_uuid, u).ok()) records_.erase(it);
    }
    (void)SaveLocked();
    return s;
  };
  for (const MigRequest& q : requests) {
    auto held = std::find_if(records_.begin(), records_.end(), [&](const MigRecord& r) {
      return r.job_id == job_id && r.gpu_uuid == q.gpu_uuid && r.start == q.start &&
             r.profile_id == q.profile_id && !r.mig_uuid.empty();
    });
    if (held != records_.end()) {
      out.push_back(held->mig_uuid);
      continue;
    }
    // The intent first: a crash after the driver created the instance leaves a record that
    // Reconcile completes from the GPU/start.
    records_.push_back(MigRecord{job_id, q.gpu_uuid, "", q.profile_id, q.start});
    if (absl::Status s = SaveLocked(); !s.ok()) {
      records_.pop_back();
      return undo(s);
    }
    auto inst = backend_->CreateMigInstanceAt(q.gpu_uuid, q.profile_id, q.start);
    if (!inst.ok()) {
      records_.pop_back();
      return undo(absl::Status(inst.status().code(),
                               StrCat("creating the MIG instance (", Describe(q),
                                      ") failed: ", inst.status().message())));
    }
    records_.back().mig_uuid = inst->uuid;
    created.push_back(inst->uuid);
    if (absl::Status s = SaveLocked(); !s.ok()) return undo(s);
    out.push_back(inst->uuid);
  }
  return out;
}

absl::Status MigManager::ReleaseLocked(const std::string& job_id) {
  absl::Status first;
  for (auto it = records_.begin(); it != records_.end();) {
    if (it->job_id != job_id) {
      ++it;
      continue;
    }
    absl::Status s = it->mig_uuid.empty()
                         ? absl::OkStatus()  // an intent whose creation never completed
                         : backend_->DestroyMigInstance(it->gpu_uuid, it->mig_uuid);
    if (s.ok() || absl::IsNotFound(s)) {
      it = records_.erase(it);
      continue;
    }
    if (first.ok()) {
      first = absl::Status(s.code(), StrCat("destroying MIG instance ", it->mig_uuid, " of job ",
                                            job_id, ": ", s.message()));
    }
    ++it;
  }
  if (absl::Status s = SaveLocked(); !s.ok() && first.ok()) first = s;
  return first;
}

absl::Status MigManager::Release(const std::string& job_id) {
  std::lock_guard lock(mu_);
  return ReleaseLocked(job_id);
}

absl::Status MigManager::ReleaseAllExcept(const std::set<std::string>& keep) {
  std::lock_guard lock(mu_);
  std::set<std::string> jobs;
  for (const MigRecord& r : records_) {
    if (!keep.count(r.job_id)) jobs.insert(r.job_id);
  }
  absl::Status first;
  for (const std::string& j : jobs) {
    absl::Status s = ReleaseLocked(j);
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

absl::StatusOr<MigReconcileReport> MigManager::Reconcile(const std::set<std::string>& live) {
  std::lock_guard lock(mu_);
  WARDEN_ASSIGN_OR_RETURN(std::vector<gpu::GpuDevice> gpus, backend_->Discover());
  // 1. Complete intents: the instance at the recorded GPU/start/profile that no other record
  //    names is the one the crashed agent created.
  for (MigRecord& r : records_) {
    if (!r.mig_uuid.empty()) continue;
    for (const gpu::GpuDevice& g : gpus) {
      if (g.uuid != r.gpu_uuid) continue;
      for (const gpu::MigInstanceInfo& m : g.mig_instances) {
        const bool named = std::any_of(records_.begin(), records_.end(),
                                       [&](const MigRecord& o) { return o.mig_uuid == m.uuid; });
        if (!named && m.start == r.start && m.profile_id == r.profile_id) r.mig_uuid = m.uuid;
      }
    }
  }
  MigReconcileReport rep;
  // 2. Records whose instance is gone (destroyed by hand, GPU reset) or never came to be.
  std::erase_if(records_, [&](const MigRecord& r) {
    return r.mig_uuid.empty() || FindInstance(gpus, r.gpu_uuid, r.mig_uuid) == nullptr;
  });
  // 3. Orphans.
  std::set<std::string> orphan_jobs;
  for (const MigRecord& r : records_) {
    (live.count(r.job_id) ? rep.kept : rep.destroyed).push_back(r);
    if (!live.count(r.job_id)) orphan_jobs.insert(r.job_id);
  }
  for (const std::string& j : orphan_jobs) {
    if (absl::Status s = ReleaseLocked(j); !s.ok()) rep.errors.push_back(std::string(s.message()));
  }
  std::erase_if(rep.destroyed, [&](const MigRecord& r) {
    return std::any_of(records_.begin(), records_.end(),
                       [&](const MigRecord& o) { return o.mig_uuid == r.mig_uuid; });
  });
  // 4. Foreign instances: on the GPU, in no record. Never touched.
  for (const gpu::GpuDevice& g : gpus) {
    for (const gpu::MigInstanceInfo& m : g.mig_instances) {
      const bool ours = std::any_of(records_.begin(), records_.end(),
                                    [&](const MigRecord& o) { return o.mig_uuid == m.uuid; }) ||
                        std::any_of(rep.destroyed.begin(), rep.destroyed.end(),
                                    [&](const MigRecord& o) { return o.mig_uuid == m.uuid; });
      if (!ours) rep.foreign.push_back(MigRecord{"", g.uuid, m.uuid, m.profile_id, m.start});
    }
  }
  WARDEN_RETURN_IF_ERROR(SaveLocked());
  return rep;
}

void MigManager::Annotate(std::vector<gpu::GpuDevice>& gpus) const {
  std::lock_guard lock(mu_);
  for (gpu::GpuDevice& g : gpus) {
    for (gpu::MigInstanceInfo& m : g.mig_instances) {
      for (const MigRecord& r : records_) {
        if (r.mig_uuid == m.uuid && r.gpu_uuid == g.uuid) m.job_id = r.job_id;
      }
    }
  }
}

std::vector<MigRecord> MigManager::records() const {
  std::lock_guard lock(mu_);
  return records_;
}

absl::StatusOr<std::vector<std::string>> MigCapNodes(const std::string& proc_root, int gpu_minor,
                                                     int gpu_instance_id,
                                                     int compute_instance_id) {
  if (gpu_minor < 0 || gpu_instance_id < 0 || compute_instance_id < 0) {
    return absl::InvalidArgumentError("MIG capability lookup needs GPU minor, GI and CI ids");
  }
  const std::string gi_dir = StrCat(proc_root, "/driver/nvidia/capabilities/gpu", gpu_minor,
                                    "/mig/gi", gpu_instance_id);
  std::vector<std::string> out;
  for (const std::string& file :
       {StrCat(gi_dir, "/access"), StrCat(gi_dir, "/ci", compute_instance_id, "/access")}) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(StrCat("no MIG capability file ", file));
    std::string line;
    int minor = -1;
    while (std::getline(in, line)) {
      constexpr std::string_view kKey = "DeviceFileMinor:";
      if (line.rfind(kKey, 0) != 0) continue;
      std::string v = line.substr(kKey.size());
      v.erase(0, v.find_first_not_of(" \t"));
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.pop_back();
      if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
        break;
      }
      minor = std::stoi(v);
    }
    if (minor < 0) return absl::DataLossError(StrCat(file, ": no DeviceFileMinor"));
    out.push_back(StrCat("/dev/nvidia-caps/nvidia-cap", minor));
  }
  return out;
}

}  // namespace warden::agent
