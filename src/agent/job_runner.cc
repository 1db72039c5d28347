#include "agent/job_runner.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>

#include "agent/gpu_handoff.h"
#include "common/strings.h"

namespace warden::agent {
namespace {

using common::Json;
using common::StrCat;

constexpr int64_t kChunk = 256 * 1024;
constexpr int kMaxChunksPerBeat = 16;  // 4 MiB per job and heartbeat, so one job cannot stall it

std::string ReadAt(const std::string& path, int64_t offset, int64_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  int64_t size = in.tellg();
  if (size <= offset) return "";
  in.seekg(offset);
  std::string out(static_cast<size_t>(std::min(max, size - offset)), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

}  // namespace

// The transfer worker: one thread, started with the first transfer, running them in order (one
// at a time: the image cache imports one image at a time, and a node's link is shared anyway).
class JobRunner::Worker {
 public:
  ~Worker() { Stop(); }

  std::function<void()> on_done;  // set before the first Enqueue

  std::shared_ptr<JobTransfer> Enqueue(std::function<absl::Status(JobTransfer&)> task) {
    auto t = std::make_shared<JobTransfer>();
    std::lock_guard lock(mu_);
    if (stopping_) {
      t->status = absl::CancelledError("the agent is stopping");
      t->done.store(true, std::memory_order_release);
      return t;
    }
    queue_.emplace_back(t, std::move(task));
    if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
    cv_.notify_one();
    return t;
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (auto& [t, task] : queue_) {  // never run
      t->status = absl::CancelledError("the agent is stopping");
      t->done.store(true, std::memory_order_release);
    }
    queue_.clear();
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      auto [t, task] = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      absl::Status s = task(*t);
      t->status = std::move(s);
      t->done.store(true, std::memory_order_release);
      if (on_done) on_done();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::shared_ptr<JobTransfer>, std::function<absl::Status(JobTransfer&)>>>
      queue_;
  bool stopping_ = false;
  std::thread thread_;
};

bool JobRunner::Local::busy() const {
  auto running = [](const std::shared_ptr<JobTransfer>& t) {
    return t != nullptr && !t->done.load(std::memory_order_acquire);
  };
  return running(prep) || running(wb);
}

JobRunner::JobRunner(JobExecutor* executor, std::string no_executor_reason)
    : worker_(std::make_unique<Worker>()),
      executor_(executor),
      no_executor_reason_(std::move(no_executor_reason)) {}

JobRunner::~JobRunner() { StopTransfers(); }

void JobRunner::StopTransfers() { worker_->Stop(); }

void JobRunner::SetTransferDone(std::function<void()> done) { worker_->on_done = std::move(done); }

std::shared_ptr<JobTransfer> JobRunner::Enqueue(std::function<absl::Status(JobTransfer&)> task) {
  return worker_->Enqueue(std::move(task));
}

const char* JobRunner::StateName(ExecState s) {
  switch (s) {
    case ExecState::kRunning: return "running";
    case ExecState::kExited: return "exited";
    case ExecState::kFailedToStart: return "failed_to_start";
    case ExecState::kCancelled: return "cancelled";
    case ExecState::kOom: return "oom";
    case ExecState::kLost: return "lost";
  }
  return "lost";
}

absl::Status JobRunner::Recover() {
  if (executor_ == nullptr) return absl::OkStatus();
  auto specs = executor_->Recover();
  if (!specs.ok()) return specs.status();
  for (ExecSpec& s : *specs) {
    Local l;
    l.started = true;
    l.spec = std::move(s);
    l.tenant = l.spec.tenant;
    // The handoff state file still has its GPUs assigned; released when the job ends.
    l.gpus_held = handoff_ != nullptr && !l.spec.gpu_uuids.empty();
    std::string id = l.spec.job_id;
    jobs_.emplace(id, std::move(l));
  }
  changed_ = !jobs_.empty();
  if (mig_ != nullptr) {
    // Instances of jobs that are gone (the agent died between their end and the destroy, or
    // before they started) go now; those it did not create stay and are reported.
    std::set<std::string> live;
    for (const auto& [id, job] : jobs_) live.insert(id);
    auto rep = mig_->Reconcile(live);
    if (rep.ok()) {
      mig_report_ = std::move(*rep);
    } else {  // e.g. the driver did not answer: nothing destroyed; each beat retries the orphans
      mig_report_ = {};
      mig_report_.errors.push_back(std::string(rep.status().message()));
    }
  }
  if (stager_ != nullptr) {
    // Staged data of jobs that are gone (the agent died between their end and the wipe) goes
    // now; re-attached jobs keep theirs until they end.
    std::set<std::string> keep;
    for (const auto& [id, job] : jobs_) keep.insert(id);
    if (absl::Status s = stager_->WipeAllExcept(keep); !s.ok()) return s;
  }
  return absl::OkStatus();
}

bool JobRunner::ShipLogs(Local& job, const LogShipper& ship) {
  if (!job.started || executor_ == nullptr) return true;
  auto [out, err] = executor_->LogPaths(job.spec.job_id);
  const std::string paths[2] = {out, err};
  const char* names[2] = {"stdout", "stderr"};
  for (int i = 0; i < 2; ++i) {
    for (int n = 0; n < kMaxChunksPerBeat; ++n) {
      std::string data = ReadAt(paths[i], job.shipped[i], kChunk);
      if (data.empty()) break;
      auto next = ship(job.spec.job_id, names[i], job.shipped[i], data);
      if (!next.ok()) return false;
      // The server may ask to resend from an earlier offset (a gap), never a later one.
      job.shipped[i] = std::min<int64_t>(*next, job.shipped[i] + static_cast<int64_t>(data.size()));
    }
    if (!ReadAt(paths[i], job.shipped[i], 1).empty()) return false;  // more next time
  }
  return true;
}

Json JobRunner::BuildReport(const LogShipper& ship, const std::vector<gpu::GpuDevice>& gpus,
                            bool ship_logs) {
  final_in_flight_.clear();
  Json reports = Json::array();
  std::set<std::string> held;
  for (auto& [id, job] : jobs_) {
    // (Not once the server moved it elsewhere: a preparation that returns then starts nothing.)
    if (job.waiting && job.assigned) TryStart(job);
    if (!job.ended && job.started && executor_ != nullptr) {
      auto st = executor_->Poll(id);
      if (st.ok()) {
        job.status = *st;
      } else {
        job.status = {ExecState::kLost, 0, std::string(st.status().message())};
      }
      if (job.status.state != ExecState::kRunning) {
        job.ended = true;
        changed_ = true;
      }
    }
    if (job.ended) {
      ReleaseGpus(job);
      if (!WriteBack(job)) continue;  // retried next beat; the staged data stays until then
      if (!job.busy()) WipeDatasets(id);  // else once its preparation returned (Apply)
    }
    if (!job.ended) {
      for (const auto& u : job.spec.gpu_uuids) held.insert(u);
    }
    if (job.waiting) continue;  // still placed, as far as the server is concerned
    const bool logs_done = ship_logs && ShipLogs(job, ship);
    if (!job.assigned) continue;
    if (!job.ended) {
      reports.push_back(Json{{"id", id}, {"state", "running"}});
      continue;
    }
    if (!logs_done) continue;  // the terminal report waits for the last bytes of output
    Json r{{"id", id}, {"state", StateName(job.status.state)}, {"reason", job.status.reason}};
    if (job.status.state == ExecState::kExited || job.status.state == ExecState::kCancelled) {
      r["exit_code"] = job.status.exit_code;
    }
    if (!job.write_back_error.empty()) {
      r["state"] = "write_back_failed";
      r["reason"] = job.write_back_error.substr(0, 512);
    }
    reports.push_back(std::move(r));
    final_in_flight_.insert(id);
  }
  std::set<std::string> ours, pending;  // MIG: our instances; GPUs with one still to destroy
  if (mig_ != nullptr) {
    // Instances of ended or forgotten jobs are destroyed (retried each beat while a process
    // still holds one).
    std::set<std::string> live;
    for (const auto& [id, job] : jobs_) {
      if (!job.ended) live.insert(id);
    }
    // `gpus` was discovered before this beat's destroys: what they remove is still ours there.
    for (const MigRecord& r : mig_->records()) ours.insert(r.mig_uuid);
    (void)mig_->ReleaseAllExcept(live);
    for (const MigRecord& r : mig_->records()) {
      if (!live.count(r.job_id)) pending.insert(r.gpu_uuid);
    }
  }
  Json clean = Json::array(), dirty = Json::array();
  for (const gpu::GpuDevice& g : gpus) {
    if (mig_ != nullptr && g.mig_enabled) {
      // Issue 6, MIG mode. An instance this agent did not create holds slices the scheduler
      // does not know of: the GPU is reported dirty, so the server keeps new work off it (jobs
      // on it keep running) until the instance is gone. Otherwise the GPU is clean for the
      // scheduler once no instance of an ended job is left on it: freed slices then hold no
      // instance, and every instance is created anew for its job and handed off (scrubbed and
      // verified) before the job starts, so no tenant's data reaches the next (DESIGN
      // invariant 3). The server clears only slices no job holds; running jobs stay.
      const bool foreign = std::any_of(
          g.mig_instances.begin(), g.mig_instances.end(),
          [&](const gpu::MigInstanceInfo& m) { return !ours.count(m.uuid); });
      if (foreign) {
        dirty.push_back(g.uuid);
      } else if (!pending.count(g.uuid)) {
        clean.push_back(g.uuid);
      }
      continue;
    }
    if (held.count(g.uuid)) continue;
    if (handoff_ != nullptr) {
      // Clean only once scrubbed and verified; dirty once a handoff failed; else not yet known.
      auto d = handoff_->controller().Get(g.uuid);
      if (!d) continue;
      if (d->state == gpu::HandoffState::kAvailable) {
        clean.push_back(g.uuid);
      } else if (d->state == gpu::HandoffState::kQuarantined && d->failures > 0) {
        dirty.push_back(g.uuid);
      }
      continue;
    }
    // A process on a GPU no job of ours holds is someone's leftover: not clean for handoff.
    (g.processes.empty() ? clean : dirty).push_back(g.uuid);
  }
  return Json{{"jobs", reports}, {"gpus", Json{{"clean", clean}, {"dirty", dirty}}}};
}

void JobRunner::TryStart(Local& job) {
  job.waiting = false;
  if (executor_ == nullptr) {
    job.ended = true;
    job.status = {ExecState::kFailedToStart, 127, no_executor_reason_};
    return;
  }
  if (!PrepareMig(job)) return;
  if (handoff_ != nullptr && !job.spec.gpu_uuids.empty() && !job.gpus_held) {
    absl::Status a = handoff_->Assign(job.tenant, job.spec.gpu_uuids);
    if (!a.ok()) {
      if (absl::Now() < job.wait_until) {
        job.waiting = true;  // e.g. the previous tenant's scrub is still running
        return;
      }
      job.ended = true;
      job.status = {ExecState::kFailedToStart, 127,
                    StrCat("its GPUs were not handed off clean in time: ", a.message())};
      changed_ = true;
      return;
    }
    job.gpus_held = true;
  }
  if (job.bad_datasets) {
    job.ended = true;
    job.status = {ExecState::kFailedToStart, 127, "the assignment's datasets are malformed"};
    changed_ = true;
    return;
  }
  const bool image = job.spec.image != "host";
  if (!job.prepared && (image || !job.datasets.empty())) {
    if (image && !prepare_image_) {
      job.ended = true;
      job.status = {ExecState::kFailedToStart, 127,
                    "preparing its image failed: this agent cannot run container images"};
      changed_ = true;
      return;
    }
    if (!job.datasets.empty() && (stager_ == nullptr || !fetch_)) {
      job.ended = true;
      job.status = {ExecState::kFailedToStart, 127,
                    "staging its datasets failed: this agent cannot mount datasets"};
      changed_ = true;
      return;
    }
    if (job.prep == nullptr) {
      // On the worker: the image (fetched and imported, or found verified in the cache), then
      // the datasets. The job waits meanwhile; the heartbeat goes on.
      job.prep = Enqueue([spec = job.spec, datasets = job.datasets, prepare = prepare_image_,
                          stager = stager_, fetch = fetch_](JobTransfer& t) -> absl::Status {
        if (spec.image != "host") {
          if (absl::Status s = prepare(spec); !s.ok()) {
            return absl::Status(s.code(), StrCat("preparing its image failed: ", s.message()));
          }
        }
        if (!datasets.empty()) {
          auto staged = stager->Stage(spec.job_id, datasets, fetch);
          if (!staged.ok()) {
            return absl::Status(staged.status().code(), StrCat("staging its datasets failed: ",
                                                               staged.status().message()));
          }
          t.staged = std::move(*staged);
        }
        return absl::OkStatus();
      });
    }
    if (!job.prep->done.load(std::memory_order_acquire)) {
      job.waiting = true;
      return;
    }
    std::shared_ptr<JobTransfer> prep = std::move(job.prep);
    if (!prep->status.ok()) {
      job.ended = true;
      job.status = {ExecState::kFailedToStart, 127, std::string(prep->status.message())};
      changed_ = true;
      return;
    }
    job.spec.datasets = std::move(prep->staged);
    job.prepared = true;
  }
  if (absl::Status s = executor_->Start(job.spec); !s.ok()) {
    job.ended = true;
    job.status = {ExecState::kFailedToStart, 127, std::string(s.message())};
    WipeDatasets(job.spec.job_id);
  } else {
    job.started = true;
  }
  changed_ = true;
}

bool JobRunner::PrepareMig(Local& job) {
  if (!job.mig_ready && !job.mig.empty()) {
    absl::Status s;
    if (mig_ == nullptr) {
      s = absl::FailedPreconditionError("this agent cannot create MIG instances");
    } else {
      auto uuids = mig_->Acquire(job.spec.job_id, job.mig);
      if (uuids.ok()) {
        for (const std::string& u : *uuids) job.spec.gpu_uuids.push_back(u);
        job.mig_ready = true;
        // The new instances start quarantined: the handoff scrubs them before Assign passes.
        if (handoff_ != nullptr) (void)handoff_->Rescan();  // else the next beat syncs it
      } else {
        s = uuids.status();
      }
    }
    if (!s.ok()) {
      // Slices still held by the previous job's instance (its process is exiting) free up soon.
      if (absl::IsResourceExhausted(s) && absl::Now() < job.wait_until) {
        job.waiting = true;
        return false;
      }
      job.ended = true;
      job.status = {ExecState::kFailedToStart, 127, StrCat("MIG: ", s.message())};
      changed_ = true;
      return false;
    }
  }
  // DESIGN invariant 6: both variables name exactly the assigned devices (MIG UUIDs for MIG
  // instances, never the parent GPU); none means none.
  std::string visible;
  for (const std::string& u : job.spec.gpu_uuids) visible += StrCat(visible.empty() ? "" : ",", u);
  std::erase_if(job.spec.env, [](const auto& kv) {
    return kv.first == "CUDA_VISIBLE_DEVICES" || kv.first == "NVIDIA_VISIBLE_DEVICES";
  });
  job.spec.env.emplace_back("CUDA_VISIBLE_DEVICES", visible);
  job.spec.env.emplace_back("NVIDIA_VISIBLE_DEVICES", visible.empty() ? "void" : visible);
  return true;
}

void JobRunner::ReleaseGpus(Local& job) {
  if (!job.gpus_held || handoff_ == nullptr) return;
  job.gpus_held = false;
  (void)handoff_->Release(job.spec.gpu_uuids);  // an error leaves the device quarantined
}

bool JobRunner::WriteBack(Local& job) {
  if (job.write_back_done) return true;
  bool any = false;
  for (const ExecDataset& d : job.spec.datasets) any = any || d.writable;
  if (!any || !job.started || job.status.state != ExecState::kExited || job.status.exit_code != 0) {
    job.write_back_done = true;  // nothing to write, or a job that failed: nothing is written
    return true;
  }
  absl::Status s;
  if (stager_ == nullptr || !upload_) {
    s = absl::FailedPreconditionError("this agent cannot write datasets back");
  } else {
    // On the worker (a job's output can be large); this beat and the next ones go on meanwhile.
    if (job.wb == nullptr) {
      job.wb = Enqueue([id = job.spec.job_id, datasets = job.spec.datasets, stager = stager_,
                        upload = upload_](JobTransfer&) {
        return stager->WriteBack(id, datasets, upload);
      });
    }
    if (!job.wb->done.load(std::memory_order_acquire)) return false;
    s = std::move(job.wb->status);
    job.wb.reset();
  }
  const bool transient = s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
  if (!s.ok() && transient && ++job.write_back_attempts < kMaxWriteBackAttempts) return false;
  if (!s.ok()) job.write_back_error = std::string(s.message());
  job.write_back_done = true;
  changed_ = true;
  return true;
}

void JobRunner::WipeDatasets(const std::string& id) {
  if (stager_ == nullptr) return;
  (void)stager_->Wipe(id);  // idempotent; a failure is retried at the next end or restart
}

void JobRunner::Apply(const Json& assignments) {
  for (const std::string& id : final_in_flight_) {
    // A job cancelled while its preparation runs is forgotten (below, as unassigned) only once
    // that transfer returned: its staged data is wiped after, never under it.
    if (jobs_[id].busy()) continue;
    WipeDatasets(id);
    if (executor_ != nullptr && jobs_[id].started) (void)executor_->Forget(id);
    jobs_.erase(id);
    changed_ = true;
  }
  final_in_flight_.clear();
  std::set<std::string> assigned;
  for (const Json& a : assignments.is_array() ? assignments : Json::array()) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_string()) continue;
    const std::string id = a["id"].get<std::string>();
    assigned.insert(id);
    const bool cancel = a.contains("cancel_grace_ms");
    const int64_t grace_ms = cancel ? a.value("cancel_grace_ms", int64_t{0}) : 0;
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      changed_ = true;
      Local l;
      l.spec.job_id = id;
      if (cancel) {  // cancelled before it ever started here
        l.ended = true;
        l.status = {ExecState::kCancelled, 0, "cancelled before it started"};
        jobs_.emplace(id, std::move(l));
        continue;
      }
      const Json run = a.value("run", Json::object());
      for (const auto& arg : run.value("command", Json::array())) {
        if (arg.is_string()) l.spec.argv.push_back(arg.get<std::string>());
      }
      l.spec.env = {{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                    {"HOME", "/tmp"},
                    {"LANG", "C.UTF-8"},
                    {"GPUWARDEN_JOB_ID", id},
                    {"GPUWARDEN_JOB_NAME", a.value("name", "")}};
      const Json env = run.value("env", Json::object());
      for (const auto& [k, v] : env.items()) {
        // The server refuses these at submit; checked again here (defence in depth, DESIGN 6).
        if (k.rfind("LD_", 0) == 0 || k == "CUDA_VISIBLE_DEVICES" || k == "NVIDIA_VISIBLE_DEVICES") {
          continue;
        }
        if (v.is_string()) l.spec.env.emplace_back(k, v.get<std::string>());
      }
      for (const auto& g : a.value("gpus", Json::array())) {
        if (!g.is_object()) continue;
        std::string uuid = g.value("uuid", "");
        if (uuid.empty()) continue;
        // A MIG assignment names the parent GPU and the planned instance: the job gets the
        // instance PrepareMig creates, never the parent (CUDA/NVIDIA_VISIBLE_DEVICES are set there).
        if (g.contains("mig_profile_id") && g["mig_profile_id"].is_number_integer() &&
            g["mig_profile_id"].get<int64_t>() >= 0) {
          const Json st = g.value("mig_start", Json());
          l.mig.push_back(MigRequest{uuid, g["mig_profile_id"].get<int>(),
                                     st.is_number_integer() ? st.get<int>() : -1});
          continue;
        }
        l.spec.gpu_uuids.push_back(uuid);
      }
      l.tenant = a.value("tenant", "");
      l.spec.tenant = l.tenant;
      l.spec.image = run.value("image", "host");
      // Limits the scheduler reserved (enforced by the sandbox executor).
      const Json limits = a.value("limits", Json::object());
      if (limits.is_object()) {
        const int64_t mib = limits.value("memory_mib", int64_t{0});
        if (mib > 0 && mib <= (int64_t{1} << 24)) l.spec.memory_bytes = mib << 20;
        const int64_t cpu = limits.value("cpu_millis", int64_t{0});
        if (cpu > 0) l.spec.cpu_millis = cpu;
      }
      absl::Duration wall;
      if (run.contains("time_limit") && run["time_limit"].is_string() &&
          absl::ParseDuration(run["time_limit"].get<std::string>(), &wall) && wall > absl::ZeroDuration()) {
        l.spec.wall_time = wall;
      }
      const Json ds = run.value("datasets", Json::array());
      if (!ds.is_array()) l.bad_datasets = true;
      for (size_t i = 0; ds.is_array() && i < ds.size(); ++i) {
        const Json& d = ds[i];
        // A write dataset has no content to verify (it starts empty): no sha256; size = limit.
        const bool write = d.is_object() && d.contains("write") && (!d["write"].is_boolean() || d["write"].get<bool>());
        if (!d.is_object() || !d.contains("name") || !d["name"].is_string() ||
            !d.contains("path") || !d["path"].is_string() ||
            (!write && (!d.contains("sha256") || !d["sha256"].is_string())) ||
            !d.contains("size") || !d["size"].is_number_unsigned()) {
          l.bad_datasets = true;
          break;
        }
        l.datasets.push_back(DatasetToStage{i, d["name"].get<std::string>(), d["path"].get<std::string>(), write,
                                            d["size"].get<uint64_t>(), d.value("sha256", std::string())});
      }
      l.waiting = true;
      l.wait_until = absl::Now() + kHandoffWait;
      TryStart(l);
      jobs_.emplace(id, std::move(l));
      continue;
    }
    Local& job = it->second;
    job.assigned = true;
    if (cancel && job.waiting) {  // cancelled while waiting for its GPUs' handoff
      job.waiting = false;
      job.ended = true;
      job.status = {ExecState::kCancelled, 0, "cancelled before it started"};
      changed_ = true;
    }
    if (cancel && !job.cancel_sent && !job.ended && job.started) {
      (void)executor_->Cancel(id, absl::Milliseconds(grace_ms));
      job.cancel_sent = true;
      changed_ = true;
    }
  }
  // What the server no longer places here is stopped (a requeued job's old copy, a job removed
  // while this agent was away) and forgotten once it has ended.
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    Local& job = it->second;
    if (assigned.count(it->first)) {
      ++it;
      continue;
    }
    job.assigned = false;
    if (!job.ended && job.started && !job.cancel_sent) {
      (void)executor_->Cancel(it->first, absl::Seconds(5));
      job.cancel_sent = true;
    }
    if (job.busy()) {  // forgotten at a later beat, once its transfer returned
      ++it;
      continue;
    }
    if (job.ended || !job.started) {
      ReleaseGpus(job);
      WipeDatasets(it->first);
      if (executor_ != nullptr && job.started) (void)executor_->Forget(it->first);
      it = jobs_.erase(it);
      continue;
    }
    ++it;
  }
}

absl::Duration JobRunner::NextBeat(absl::Duration interval) {
  if (changed_) {
    changed_ = false;
    return std::min(interval, absl::Milliseconds(50));
  }
  for (const auto& [id, job] : jobs_) {
    if (!job.ended) return std::min(interval, absl::Seconds(1));
  }
  return interval;
}

}  // namespace warden::agent
