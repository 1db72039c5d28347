// RuntimeExecutor (executor.h): the agent's jobs in the sandbox of src/runtime (issue 7).
//
// Files, next to the runner's own jobs/<id>/ (which the runner deletes on Remove):
//   <state_dir>/specs/<id>.json    the ExecSpec, written before the runner starts the job, so an
//                                  agent that dies right after Start still finds the job (Recover)
//   <state_dir>/specs/<id>.cancel  the SIGKILL deadline (ms since the epoch) after a Cancel
//   <state_dir>/specs/warm-pairs.list  the (tenant, image) pairs whose jobs ran lately (the warm
//                                  pool's), one JSON object per line, oldest first: a restarted
//                                  agent prepares sandboxes for them
// The runner's shim turns a Cancel into SIGTERM and kills after RunnerOptions::cancel_grace (the
// longest grace allowed); a shorter grace asked for by the server is enforced here by Poll, which
// the job runner calls at least once a second while jobs run.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>

#include "agent/exec_files.h"
#include "agent/executor.h"
#include "agent/warm_pool.h"
#include "common/json.h"
#include "common/status.h"
#include "common/strings.h"

namespace warden::agent {
namespace {

using common::Json;
using common::StrCat;


int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Json SpecToJson(const ExecSpec& s) {
  Json env = Json::array();
  for (const auto& [k, v] : s.env) env.push_back(Json::array({k, v}));
  Json datasets = Json::array();
  for (const ExecDataset& d : s.datasets) {
    datasets.push_back(Json{{"name", d.name},
                            {"host_dir", d.host_dir},
                            {"container_path", d.container_path},
                            {"writable", d.writable}});
  }
  return Json{{"job_id", s.job_id},
              {"tenant", s.tenant},
              {"argv", s.argv},
              {"env", env},
              {"gpus", s.gpu_uuids},
              {"image", s.image},
              {"datasets", datasets},
              {"memory_bytes", s.memory_bytes},
              {"cpu_millis", s.cpu_millis},
              {"wall_time_ms", absl::ToInt64Milliseconds(s.wall_time)}};
}

absl::StatusOr<ExecSpec> SpecFromJson(const std::string& text) {
  WARDEN_ASSIGN_OR_RETURN(Json j, common::ParseJsonStrict(text));
  if (!j.is_object()) return absl::DataLossError("spec is not a JSON object");
  try {
    ExecSpec s;
    s.job_id = j.at("job_id").get<std::string>();
    s.tenant = j.at("tenant").get<std::string>();
    s.argv = j.at("argv").get<std::vector<std::string>>();
    for (const Json& kv : j.at("env")) s.env.emplace_back(kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
    s.gpu_uuids = j.at("gpus").get<std::vector<std::string>>();
    s.image = j.at("image").get<std::string>();
    for (const Json& d : j.at("datasets")) {
      s.datasets.push_back(ExecDataset{d.at("name").get<std::string>(), d.at("host_dir").get<std::string>(),
                                       d.at("container_path").get<std::string>(), d.at("writable").get<bool>()});
    }
    s.memory_bytes = j.at("memory_bytes").get<int64_t>();
    s.cpu_millis = j.at("cpu_millis").get<int64_t>();
    s.wall_time = absl::Milliseconds(j.at("wall_time_ms").get<int64_t>());
    return s;
  } catch (const std::exception& e) {
    return absl::DataLossError(StrCat("spec is not what this executor writes: ", e.what()));
  }
}

absl::Status WriteAtomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return absl::InternalError(StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(StrCat("cannot rename ", tmp, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Time a job gets between SIGTERM at its wall-time limit and SIGKILL.
constexpr int64_t kWallTimeGraceMs = 5000;

std::string MiB(uint64_t bytes) { return StrCat(bytes >> 20, " MiB"); }

class RuntimeExecutor final : public JobExecutor {
 public:
  RuntimeExecutor(RuntimeExecutorOptions options, std::unique_ptr<runtime::Runner> runner)
      : options_(std::move(options)),
        runner_(std::move(runner)),
        warm_(runner_.get(), options_.prepared_per_pair, options_.prepared_pairs) {
    LoadWarmPairs();
  }

  std::string_view name() const override { return "sandbox"; }

  absl::Status Start(const ExecSpec& spec) override {
    if (!SafeJobId(spec.job_id)) return absl::InvalidArgumentError(StrCat("bad job id \"", spec.job_id, "\""));
    if (spec.argv.empty()) return absl::InvalidArgumentError("empty command");
    WARDEN_ASSIGN_OR_RETURN(runtime::SandboxSpec sandbox, ToSandbox(spec));
    const std::string spec_path = SpecPath(spec.job_id);
    struct stat st;
    if (::stat(spec_path.c_str(), &st) == 0) {
      return absl::AlreadyExistsError(StrCat("job ", spec.job_id, " is already known"));
    }
    Json record = SpecToJson(spec);
    record["started_ms"] = NowMs();
    record["wall_time_ms"] = absl::ToInt64Milliseconds(sandbox.wall_time);
    WARDEN_RETURN_IF_ERROR(WriteAtomic(spec_path, record.dump()));
    absl::Status started = runner_->Start(sandbox);
    if (!started.ok()) {
      // AlreadyExists from the runner means its directory survived a lost spec file: keep both.
      if (started.code() != absl::StatusCode::kAlreadyExists) ::unlink(spec_path.c_str());
      return started;
    }
    // The tenant's next job of this image may find a sandbox waiting; the pool's recent pairs
    // are kept for a restart when they change.
    {
      std::lock_guard<std::mutex> lock(warm_file_mu_);
      if (warm_.Used(sandbox)) SaveWarmPairs();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ExecStatus> Poll(const std::string& job_id) override {
    if (!SafeJobId(job_id)) return absl::NotFoundError(StrCat("job ", job_id, " is unknown to this executor"));
    auto info = runner_->Get(job_id);
    if (!info.ok()) {
      if (info.status().code() == absl::StatusCode::kNotFound) {
        return absl::NotFoundError(StrCat("job ", job_id, " is unknown to this executor"));
      }
      return info.status();
    }
    if (info->state == runtime::JobState::kRunning) {
      const std::string cancel = ReadSmallFile(CancelPath(job_id));
      bool kill = !cancel.empty() && NowMs() >= std::strtoll(cancel.c_str(), nullptr, 10);
      // Past its wall time the shim sent SIGTERM, and kills only after the runner's (long)
      // cancel grace; an init that ignores SIGTERM (a pid namespace's init does unless it
      // handles it) would outlive its limit by that much.
      auto record = common::ParseJsonStrict(ReadSmallFile(SpecPath(job_id)));
      if (record.ok() && record->is_object()) {
        const int64_t started = record->value("started_ms", int64_t{0});
        const int64_t wall = record->value("wall_time_ms", int64_t{0});
        if (started > 0 && wall > 0 && NowMs() >= started + wall + kWallTimeGraceMs) kill = true;
      }
      // SIGKILL to the container's init ends every process of its pid namespace. (Unimplemented
      // under bubblewrap: its shim kills after the runner's cancel_grace instead.)
      if (kill) (void)runner_->Signal(job_id, SIGKILL);
      return ExecStatus{ExecState::kRunning, 0, ""};
    }
    return FromResult(job_id, *info->result);
  }

  absl::Status Cancel(const std::string& job_id, absl::Duration grace) override {
    if (!SafeJobId(job_id)) return absl::NotFoundError(StrCat("job ", job_id, " is unknown to this executor"));
    WARDEN_ASSIGN_OR_RETURN(runtime::JobInfo info, runner_->Get(job_id));
    if (info.state == runtime::JobState::kExited) return absl::OkStatus();
    struct stat st;
    if (::stat(CancelPath(job_id).c_str(), &st) == 0) return absl::OkStatus();  // idempotent
    WARDEN_RETURN_IF_ERROR(WriteAtomic(CancelPath(job_id), StrCat(NowMs() + absl::ToInt64Milliseconds(grace), "\n")));
    absl::Status s = runner_->Cancel(job_id);
    if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) return s;  // it just ended: fine
    if (grace <= absl::ZeroDuration()) (void)runner_->Signal(job_id, SIGKILL);
    return absl::OkStatus();
  }

  std::pair<std::string, std::string> LogPaths(const std::string& job_id) const override {
    const std::string d = options_.runner.state_dir + "/jobs/" + job_id;
    return {d + "/stdout.log", d + "/stderr.log"};
  }

  absl::StatusOr<std::vector<ExecSpec>> Recover() override {
    std::vector<ExecSpec> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(SpecsDir(), ec)) {
      const std::string file = e.path().filename().string();
      if (file.size() <= 5 || file.substr(file.size() - 5) != ".json") continue;
      const std::string id = file.substr(0, file.size() - 5);
      if (!SafeJobId(id)) continue;
      auto spec = SpecFromJson(ReadSmallFile(e.path().string()));
      if (!spec.ok() || spec->job_id != id) continue;  // a torn write from before a crash
      out.push_back(std::move(*spec));
    }
    if (ec) return absl::InternalError(StrCat("cannot list ", SpecsDir(), ": ", ec.message()));
    return out;
  }

  absl::Status Forget(const std::string& job_id) override {
    if (!SafeJobId(job_id)) return absl::InvalidArgumentError("bad job id");
    absl::Status removed = runner_->Remove(job_id);
    if (!removed.ok() && removed.code() != absl::StatusCode::kNotFound) return removed;
    ::unlink(SpecPath(job_id).c_str());
    ::unlink(CancelPath(job_id).c_str());
    return absl::OkStatus();
  }

 private:
  std::string SpecsDir() const { return options_.runner.state_dir + "/specs"; }
  std::string SpecPath(const std::string& id) const { return SpecsDir() + "/" + id + ".json"; }
  std::string CancelPath(const std::string& id) const { return SpecsDir() + "/" + id + ".cancel"; }
  std::string WarmPairsPath() const { return SpecsDir() + "/warm-pairs.list"; }

  // Writes the warm pool's recent pairs, oldest first. Only (tenant, image): a prepared
  // sandbox's shape depends on nothing else of the job (not its command, env or limits).
  void SaveWarmPairs() {
    auto pairs = warm_.RecentPairs();
    std::string text;
    for (auto it = pairs.rbegin(); it != pairs.rend(); ++it) {
      text += Json{{"tenant", it->first}, {"image", it->second}}.dump() + "\n";
    }
    absl::Status st = WriteAtomic(WarmPairsPath(), text);
    if (!st.ok()) std::cerr << "gpuwarden agent: " << st.message() << " (a restart will start these pairs cold)\n";
  }

  // At start: the pairs of the last run get their sandboxes prepared again, oldest first (the
  // pool keeps the newest). A line that does not parse is skipped.
  void LoadWarmPairs() {
    if (options_.prepared_per_pair <= 0) return;
    std::ifstream in(WarmPairsPath());
    std::string line;
    while (std::getline(in, line)) {
      auto j = common::ParseJsonStrict(line);
      if (!j.ok() || !j->is_object() || !(*j)["tenant"].is_string() || !(*j)["image"].is_string()) continue;
      ExecSpec shape;
      shape.job_id = "warm";
      shape.tenant = (*j)["tenant"].get<std::string>();
      shape.image = (*j)["image"].get<std::string>();
      shape.argv = {"true"};
      auto sandbox = ToSandbox(shape);
      if (sandbox.ok()) warm_.Used(*sandbox);
    }
  }

  absl::StatusOr<runtime::SandboxSpec> ToSandbox(const ExecSpec& spec) {
    runtime::SandboxSpec s;
    s.tenant = spec.tenant;
    s.job_id = spec.job_id;
    s.argv = spec.argv;
    for (const auto& [k, v] : spec.env) {
      // The runtime sets these from the resolved GPUs (DESIGN invariant 6: device nodes and both
      // variables name the same UUIDs); the job runner's values name the same UUIDs.
      if (k == "CUDA_VISIBLE_DEVICES" || k == "NVIDIA_VISIBLE_DEVICES") continue;
      s.env.emplace_back(k, v);
    }
    s.image = spec.image;
    for (const std::string& uuid : spec.gpu_uuids) {
      if (!options_.resolve_gpu) {
        return absl::FailedPreconditionError(StrCat("GPU ", uuid, " was assigned but this agent maps no GPUs"));
      }
      WARDEN_ASSIGN_OR_RETURN(runtime::GpuDevice d, options_.resolve_gpu(uuid));
      s.gpus.push_back(std::move(d));
    }
    for (const ExecDataset& d : spec.datasets) {
      s.datasets.push_back(runtime::DatasetMount{d.host_dir, d.container_path, d.writable});
    }
    s.memory_bytes = spec.memory_bytes > 0 ? static_cast<uint64_t>(spec.memory_bytes) : options_.default_memory_bytes;
    s.cpu_millis = spec.cpu_millis > 0 ? spec.cpu_millis : options_.default_cpu_millis;
    s.wall_time = spec.wall_time > absl::ZeroDuration() ? spec.wall_time : options_.default_wall_time;
    s.pids_max = options_.pids_max;
    s.scratch_bytes = options_.scratch_bytes;
    s.cwd = "/";
    return s;
  }

  ExecStatus FromResult(const std::string& job_id, const runtime::JobResult& r) {
    ExecStatus s;
    s.exit_code = r.exit_code;
    std::string how = r.signal != 0 ? StrCat("killed by signal ", r.signal, " (", strsignal(r.signal), ")")
                                    : StrCat("exited with code ", r.exit_code);
    if (r.lost) {
      s.state = ExecState::kLost;
      s.reason = r.error.empty() ? "the job's shim died before recording a result" : r.error;
      return s;
    }
    if (!r.error.empty()) {
      s.state = ExecState::kFailedToStart;
      s.exit_code = 127;
      s.reason = r.error;
      return s;
    }
    if (r.oom_killed) {
      s.state = ExecState::kOom;
      auto spec = SpecFromJson(ReadSmallFile(SpecPath(job_id)));
      uint64_t limit = spec.ok() && spec->memory_bytes > 0 ? static_cast<uint64_t>(spec->memory_bytes)
                                                           : options_.default_memory_bytes;
      s.reason = StrCat("killed for memory: the job's cgroup hit its limit of ", MiB(limit), " (", how, ")");
      return s;
    }
    const bool cancelled = r.cancelled || ::access(CancelPath(job_id).c_str(), F_OK) == 0;
    if (cancelled) {
      s.state = ExecState::kCancelled;
      s.reason = StrCat("cancelled; ", how);
      return s;
    }
    s.state = ExecState::kExited;
    s.reason = r.wall_time_exceeded ? StrCat("wall-time limit exceeded; ", how) : how;
    return s;
  }

  RuntimeExecutorOptions options_;
  std::unique_ptr<runtime::Runner> runner_;
  WarmPool warm_;  // after runner_: destroyed first
  std::mutex warm_file_mu_;  // one writer of warm-pairs.list at a time, in the pool's order
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobExecutor>> CreateRuntimeExecutor(RuntimeExecutorOptions options) {
  const std::string& dir = options.runner.state_dir;
  if (dir.empty() || dir[0] != '/') return absl::InvalidArgumentError("the sandbox state dir must be an absolute path");
  if (::mkdir(dir.c_str(), 0711) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("cannot create ", dir, ": ", std::strerror(errno)));
  }
  const std::string specs = dir + "/specs";
  if (::mkdir(specs.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(StrCat("cannot create ", specs, ": ", std::strerror(errno)));
  }
  WARDEN_ASSIGN_OR_RETURN(auto runner, runtime::CreateRunner(options.runner));
  return std::unique_ptr<JobExecutor>(std::make_unique<RuntimeExecutor>(std::move(options), std::move(runner)));
}

}  // namespace warden::agent
