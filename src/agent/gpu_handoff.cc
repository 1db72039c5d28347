// The agent's GPU handoff service and `gpuwarden agent scrub`.
#include "agent/gpu_handoff.h"

#include "agent/agent.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>

#include "common/json.h"
#include "common/strings.h"

namespace warden::agent {

using common::StrCat;

absl::StatusOr<std::unique_ptr<GpuHandoffService>> GpuHandoffService::Create(
    const Options& options, gpu::GpuBackend* backend, std::string_view backend_name) {
  if (backend == nullptr) return absl::InvalidArgumentError("GPU handoff without a GPU backend");
  std::unique_ptr<GpuHandoffService> s(new GpuHandoffService());
  s->options_ = options;
  s->backend_ = backend;
  if (backend_name == "sim") {
    auto* sim = dynamic_cast<gpu::SimGpuBackend*>(backend);
    if (sim == nullptr) return absl::InvalidArgumentError("backend \"sim\" is not simulated");
    s->scrubber_ = sim->NewScrubber();
  } else {
    s->scrubber_ = gpu::NewSubprocessScrubber({options.self_exe, "agent", "scrub", "-o", "json"},
                                              options.scrub_timeout);
  }
  gpu::HandoffOptions ho;
  ho.state_path = options.data_dir.empty() ? "" : options.data_dir + "/gpu-handoff.json";
  ho.scrub = options.scrub;
  auto c = gpu::HandoffController::Create(ho, backend, s->scrubber_.get());
  if (!c.ok()) return c.status();
  s->controller_ = std::move(*c);
  auto devices = backend->Discover();
  if (!devices.ok()) return devices.status();
  if (absl::Status st = s->controller_->Sync(*devices); !st.ok()) return st;
  return s;
}

GpuHandoffService::~GpuHandoffService() { Stop(); }

void GpuHandoffService::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void GpuHandoffService::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status GpuHandoffService::Assign(std::string_view tenant,
                                       const std::vector<std::string>& uuids) {
  for (size_t i = 0; i < uuids.size(); ++i) {
    absl::Status s = controller_->Assign(uuids[i], tenant);
    if (!s.ok()) {
      // The devices assigned so far go back through the handoff (a job never started on them,
      // but a holder was counted; quarantine is the safe undo).
      for (size_t k = 0; k < i; ++k) (void)controller_->Release(uuids[k]);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status GpuHandoffService::Release(const std::vector<std::string>& uuids) {
  absl::Status first;
  for (const std::string& u : uuids) {
    absl::Status s = controller_->Release(u);
    if (!s.ok() && first.ok()) first = s;
  }
  {
    std::lock_guard lock(mu_);
    kick_ = true;
  }
  cv_.notify_all();
  return first;
}

absl::Status GpuHandoffService::Rescan() {
  auto devices = backend_->Discover();
  if (!devices.ok()) return devices.status();
  absl::Status s = controller_->Sync(*devices);
  {
    std::lock_guard lock(mu_);
    kick_ = true;
  }
  cv_.notify_all();
  return s;
}

absl::Status GpuHandoffService::Annotate(cluster::NodeInventory& inventory) {
  absl::Status s = controller_->Sync(inventory.gpus);
  controller_->Annotate(inventory.gpus);
  return s;
}

std::vector<gpu::HandoffReport> GpuHandoffService::RunOnce() {
  std::vector<gpu::HandoffReport> out;
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  for (const gpu::DeviceHandoff& d : controller_->Snapshot()) {
    if (d.state != gpu::HandoffState::kQuarantined) continue;
    if (d.parent_uuid.empty() && d.mig_enabled) continue;  // its instances are handed off
    if (d.failures > 0) {
      absl::Duration wait = options_.retry_base * (int64_t{1} << std::min(d.failures - 1, 20));
      wait = std::min(wait, absl::Minutes(5));
      if (now - d.updated_unix < absl::ToInt64Seconds(wait)) continue;
    }
    auto r = controller_->RunHandoff(d.uuid);
    if (r.ok()) out.push_back(std::move(*r));
  }
  return out;
}

void GpuHandoffService::Loop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.poll),
                   [&] { return stop_ || kick_; });
      if (stop_) return;
      kick_ = false;
    }
    for (const gpu::HandoffReport& r : RunOnce()) {
      std::string line = StrCat("GPU handoff ", r.uuid, ": ", gpu::HandoffStateName(r.state));
      if (!r.reason.empty()) line += StrCat(" (", r.reason, ")");
      if (r.scrub) {
        line += StrCat("; scrubbed ", r.scrub->scrubbed_bytes, " bytes at ",
                       static_cast<int64_t>(r.scrub->write_gbps), " GB/s");
      }
      std::cerr << line << std::endl;
    }
  }
}

namespace {

void PrintText(const gpu::ScrubReport& r) {
  std::cout << "device          " << r.device_uuid << " (" << r.device_name << ")\n"
            << "memory          " << r.total_bytes << " bytes, " << r.free_bytes << " free\n"
            << "scrubbed        " << r.scrubbed_bytes << " bytes in " << r.chunks << " chunks ("
            << static_cast<int>(r.fraction_of_free * 1000) / 10.0 << "% of free)\n"
            << "fill            " << r.write_seconds * 1e3 << " ms, " << r.write_gbps
            << " GB/s\n"
            << "verify          " << r.verify_seconds * 1e3 << " ms, " << r.verify_gbps
            << " GB/s\n"
            << "mismatches      pattern " << r.pattern_mismatches << ", zero "
            << r.zero_mismatches << "\n"
            << "total           " << r.total_seconds * 1e3 << " ms\n"
            << "result          " << (r.passed ? "PASSED" : "FAILED: " + r.failure) << "\n";
}

}  // namespace

int RunScrubCommand(int argc, char** argv) {
  CLI::App app{"gpuwarden agent scrub: overwrite and verify one GPU's (or MIG instance's) free "
               "memory through the CUDA driver API",
               "gpuwarden agent scrub"};
  std::string uuid, output = "text", library = "libcuda.so.1";
  double min_fraction = 0.90;
  bool no_pattern = false;
  bool print_ptx = false;
  app.add_option("--uuid", uuid, "GPU-... or MIG-... UUID (as NVML / nvidia-smi -L print it)");
  app.add_flag("--print-ptx", print_ptx, "print the verify kernel's PTX and exit");
  app.add_option("-o,--output", output, "text (default) or json")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--min-fraction", min_fraction, "fail unless this share of free memory is covered")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--library", library, "the CUDA driver library to dlopen");
  app.add_flag("--no-pattern-pass", no_pattern, "only the zero pass (half the work)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (print_ptx) {
    std::cout << gpu::VerifyKernelPtx();
    return 0;
  }
  if (uuid.empty()) {
    std::cerr << "gpuwarden agent scrub: --uuid is required\n";
    return 2;
  }
  auto fail = [&](const absl::Status& s) {
    if (output == "json") {
      std::cout << common::Json{{"error", std::string(s.message())}}.dump() << "\n";
    }
    std::cerr << "gpuwarden agent scrub: " << s.message() << "\n";
    return 1;
  };
  // A MIG instance is visible to CUDA only through CUDA_VISIBLE_DEVICES, read at cuInit; naming
  // exactly this device also keeps the scrub off every other GPU.
  ::setenv("CUDA_VISIBLE_DEVICES", uuid.c_str(), 1);
  auto scrubber = gpu::CreateCudaScrubber(library);
  if (!scrubber.ok()) return fail(scrubber.status());
  gpu::ScrubOptions o;
  o.min_fraction = min_fraction;
  o.pattern_pass = !no_pattern;
  auto report = (*scrubber)->Scrub(uuid, o);
  if (!report.ok()) return fail(report.status());
  if (output == "json") {
    std::cout << gpu::ScrubReportToJson(*report) << "\n";
  } else {
    PrintText(*report);
  }
  return report->passed ? 0 : 3;
}

namespace {

common::Json ReportJson(const gpu::HandoffReport& r) {
  common::Json procs = common::Json::array();
  for (const gpu::GpuProcess& p : r.processes) procs.push_back(p.pid);
  common::Json j{{"uuid", r.uuid},
                 {"state", std::string(gpu::HandoffStateName(r.state))},
                 {"reason", r.reason},
                 {"processes", std::move(procs)}};
  if (r.scrub) j["scrub"] = common::Json::parse(gpu::ScrubReportToJson(*r.scrub));
  return j;
}

}  // namespace

int RunHandoffCommand(int argc, char** argv) {
  CLI::App app{"gpuwarden agent handoff: run the verified handoff now (process check, scrub, "
               "verify) on quarantined devices, as the agent does after a job releases them",
               "gpuwarden agent handoff"};
  std::string data_dir, gpus = "nvml", uuid, output = "text", name = "node";
  app.add_option("--data-dir", data_dir, "the agent's data dir (holds gpu-handoff.json)")
      ->required();
  app.add_option("--gpus", gpus, "GPU backend: nvml (default) or sim:SPEC");
  app.add_option("--name", name, "node name (seeds the simulated GPUs' UUIDs)");
  app.add_option("--uuid", uuid,
                 "only this device; quarantined first if it is not (\"operator requested\")");
  app.add_option("-o,--output", output, "text (default) or json")
      ->check(CLI::IsMember({"text", "json"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::string note;
  auto backend = MakeGpuBackend(gpus, name, &note);
  if (!backend.ok() || *backend == nullptr) {
    std::cerr << "gpuwarden agent handoff: "
              << (backend.ok() ? note : std::string(backend.status().message())) << "\n";
    return 1;
  }
  ::umask(077);
  auto service = GpuHandoffService::Create({.data_dir = data_dir}, backend->get(),
                                           gpus.rfind("sim:", 0) == 0 ? "sim" : "nvml");
  if (!service.ok()) {
    std::cerr << "gpuwarden agent handoff: " << service.status().message() << "\n";
    return 1;
  }
  gpu::HandoffController& c = (*service)->controller();
  std::vector<gpu::HandoffReport> reports;
  if (!uuid.empty()) {
    auto d = c.Get(uuid);
    if (!d) {
      std::cerr << "gpuwarden agent handoff: no device " << uuid << "\n";
      return 1;
    }
    if (d->state != gpu::HandoffState::kQuarantined) {
      if (absl::Status s = c.Quarantine(uuid, "operator requested a handoff"); !s.ok()) {
        std::cerr << "gpuwarden agent handoff: " << s.message() << "\n";
        return 1;
      }
    }
    auto r = c.RunHandoff(uuid);
    if (!r.ok()) {
      std::cerr << "gpuwarden agent handoff: " << r.status().message() << "\n";
      return 1;
    }
    reports.push_back(std::move(*r));
  } else {
    reports = c.RunAllHandoffs();
  }
  bool all_available = true;
  common::Json list = common::Json::array();
  for (const auto& r : reports) {
    all_available = all_available && r.state == gpu::HandoffState::kAvailable;
    list.push_back(ReportJson(r));
  }
  if (output == "json") {
    std::cout << common::Json{{"reports", std::move(list)}}.dump() << "\n";
  } else {
    for (const auto& r : reports) {
      std::cout << r.uuid << "  " << gpu::HandoffStateName(r.state)
                << (r.reason.empty() ? "" : "  (" + r.reason + ")");
      if (r.scrub) {
        std::cout << "  scrubbed " << r.scrub->scrubbed_bytes << " bytes, fill "
                  << r.scrub->write_gbps << " GB/s, mismatches "
                  << r.scrub->pattern_mismatches + r.scrub->zero_mismatches;
      }
      std::cout << "\n";
    }
  }
  return all_available ? 0 : 3;
}

}  // namespace warden::agent
