// `gpuwarden agent mig create|destroy|ls`: the GPU backend's MIG instance calls, one per run,
// for operators and tests/gpu/mig_check.sh (which compares them with `nvidia-smi mig -lgi`).
// Never changes MIG mode. A GPU with MIG off answers "MIG mode is off" (exit 3).
#include <CLI/CLI.hpp>
#include <iostream>

#include "agent/agent.h"
#include "agent/mig_manager.h"
#include "common/json.h"
#include "common/strings.h"

namespace warden::agent {

using common::Json;

namespace {

Json InstanceJson(const std::string& gpu, const gpu::MigInstanceInfo& m) {
  return Json{{"gpu", gpu},
              {"uuid", m.uuid},
              {"profile_id", m.profile_id},
              {"profile_name", m.profile_name},
              {"start", m.start},
              {"memory_mib", m.memory_mib},
              {"gpu_instance_id", m.gpu_instance_id},
              {"compute_instance_id", m.compute_instance_id}};
}

int Fail(const absl::Status& s) {
  std::cout << Json{{"error", std::string(s.message())}}.dump() << "\n";
  std::cerr << "gpuwarden agent mig: " << s.message() << "\n";
  return absl::IsFailedPrecondition(s) ? 3 : 1;
}

}  // namespace

int RunMigCommand(int argc, char** argv) {
  CLI::App app{"gpuwarden agent mig: create, destroy or list MIG instances through the GPU "
               "backend (never changes MIG mode; prints JSON)",
               "gpuwarden agent mig"};
  std::string gpus = "nvml", gpu_uuid, mig_uuid, profile;
  int start = -1;
  app.add_option("--gpus", gpus, "GPU backend: nvml (default) or sim:SPEC");
  auto* create = app.add_subcommand("create", "create a GPU instance and its compute instance");
  create->add_option("--gpu", gpu_uuid, "the parent GPU's UUID")->required();
  create->add_option("--profile", profile, "profile id (19) or name (1g.10gb)")->required();
  create->add_option("--start", start, "first memory slice (0..7)")->required();
  auto* destroy = app.add_subcommand("destroy", "destroy one MIG instance");
  destroy->add_option("--gpu", gpu_uuid, "the parent GPU's UUID")->required();
  destroy->add_option("--uuid", mig_uuid, "the MIG device UUID")->required();
  auto* ls = app.add_subcommand("ls", "list every GPU's MIG mode and instances");
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::string note;
  auto backend = MakeGpuBackend(gpus, "node", &note);
  if (!backend.ok()) return Fail(backend.status());
  if (*backend == nullptr) return Fail(absl::NotFoundError(note));
  gpu::GpuBackend& b = **backend;
  if (ls->parsed()) {
    auto devices = b.Discover();
    if (!devices.ok()) return Fail(devices.status());
    Json out = Json::array();
    for (const gpu::GpuDevice& d : *devices) {
      Json inst = Json::array();
      for (const auto& m : d.mig_instances) inst.push_back(InstanceJson(d.uuid, m));
      out.push_back(Json{{"uuid", d.uuid},
                         {"index", d.index},
                         {"model", d.model},
                         {"mig_capable", d.mig_capable},
                         {"mig_enabled", d.mig_enabled},
                         {"instances", inst}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (destroy->parsed()) {
    if (absl::Status s = b.DestroyMigInstance(gpu_uuid, mig_uuid); !s.ok()) return Fail(s);
    std::cout << Json{{"destroyed", mig_uuid}}.dump() << "\n";
    return 0;
  }
  (void)create;
  // A profile name resolves against the GPU's model.
  int profile_id = -1;
  if (!profile.empty() && profile.find_first_not_of("0123456789") == std::string::npos &&
      profile.size() < 4) {
    profile_id = std::stoi(profile);
  } else {
    auto devices = b.Discover();
    if (!devices.ok()) return Fail(devices.status());
    for (const gpu::GpuDevice& d : *devices) {
      if (d.uuid != gpu_uuid) continue;
      const gpu::GpuModel* model = gpu::FindGpuModel(d.model);
      const gpu::MigProfile* p = model ? model->FindProfileByName(profile) : nullptr;
      if (p != nullptr) profile_id = p->id;
    }
    if (profile_id < 0) {
      return Fail(absl::InvalidArgumentError(
          common::StrCat("profile \"", profile.substr(0, 32), "\" is not one of GPU ",
                         gpu_uuid.substr(0, 64), "'s")));
    }
  }
  auto inst = b.CreateMigInstanceAt(gpu_uuid, profile_id, start);
  if (!inst.ok()) return Fail(inst.status());
  std::cout << InstanceJson(gpu_uuid, *inst).dump() << "\n";
  return 0;
}

}  // namespace warden::agent
