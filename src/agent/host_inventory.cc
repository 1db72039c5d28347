// Host facts for the inventory. Everything read here comes from the local machine; the values are
// still cleaned (printable, bounded) because the server's decoder refuses anything else.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "agent/agent.h"
#include "common/strings.h"

namespace warden::agent {
namespace {

using common::StrCat;

std::string Clean(std::string s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) out.push_back(static_cast<char>(c));
  }
  if (out.size() > 200) out.resize(200);
  return out;
}

std::string OsPrettyName() {
  std::ifstream in("/etc/os-release");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      std::string v = line.substr(12);
      if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'')) v = v.substr(1, v.size() - 2);
      return Clean(v);
    }
  }
  return "unknown";
}

uint64_t MemoryMib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemTotal:") return kb / 1024;
  }
  return 0;
}

bool OnPath(const std::string& tool, std::string* path) {
  const char* env = std::getenv("PATH");
  std::stringstream dirs(env ? env
                             : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string p = StrCat(dir.empty() ? "." : dir, "/", tool);
    if (::access(p.c_str(), X_OK) == 0) {
      *path = p;
      return true;
    }
  }
  return false;
}

// The first dotted number in the tool's `--version` output ("runc version 1.1.5" -> "1.1.5").
std::string ToolVersion(const std::string& path, const char* flag) {
  // Fixed command strings only (a path found on PATH and a literal flag); stdin closed.
  std::string cmd = StrCat("'", path, "' ", flag, " </dev/null 2>&1");
  if (path.find('\'') != std::string::npos) return "";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[256];
  while (out.size() < 4096 && std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  ::pclose(p);
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(out[i]))) continue;
    size_t j = i;
    bool dot = false;
    while (j < out.size() &&
           (std::isdigit(static_cast<unsigned char>(out[j])) || out[j] == '.' || out[j] == '-' ||
            out[j] == '+' || std::isalpha(static_cast<unsigned char>(out[j])))) {
      dot = dot || out[j] == '.';
      ++j;
    }
    if (dot) return Clean(out.substr(i, std::min<size_t>(j - i, 64)));
    i = j;
  }
  return "";
}

const std::vector<cluster::ContainerRuntime>& ContainerRuntimes() {
  // Looked up once per process: versions change only with a package upgrade (the agent restarts).
  static const auto* runtimes = [] {
    auto* out = new std::vector<cluster::ContainerRuntime>();
    const std::pair<const char*, const char*> tools[] = {
        {"runc", "--version"},       {"crun", "--version"},
        {"bwrap", "--version"},      {"docker", "--version"},
        {"containerd", "--version"}, {"podman", "--version"},
        {"nvidia-ctk", "--version"}, {"nvidia-container-cli", "--version"}};
    for (const auto& [tool, flag] : tools) {
      std::string path;
      if (!OnPath(tool, &path)) continue;
      std::string v = ToolVersion(path, flag);
      out->push_back({tool, v.empty() ? "unknown" : v});
    }
    return out;
  }();
  return *runtimes;
}

}  // namespace

absl::StatusOr<cluster::NodeInventory> CollectInventory(gpu::GpuBackend* backend,
                                                        std::string_view backend_name) {
  cluster::NodeInventory inv;
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) == 0) inv.hostname = Clean(host);
  struct utsname u {};
  if (::uname(&u) == 0) {
    inv.kernel = Clean(u.release);
    inv.arch = Clean(u.machine);
  }
  inv.os = OsPrettyName();
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  inv.cpus = cpus > 0 ? static_cast<int>(cpus) : 0;
  inv.memory_mib = MemoryMib();
  inv.agent_version = WARDEN_VERSION;
  inv.gpu_backend = std::string(backend_name);
  inv.container_runtimes = ContainerRuntimes();
  if (backend != nullptr) {
    auto gpus = backend->Discover();
    if (!gpus.ok()) return gpus.status();
    for (auto& g : *gpus) {
      g.processes.clear();  // telemetry, not inventory
      g.product_name = Clean(g.product_name);
      inv.gpus.push_back(std::move(g));
    }
  }
  return inv;
}

absl::StatusOr<std::unique_ptr<gpu::GpuBackend>> MakeGpuBackend(const std::string& gpus,
                                                                const std::string& seed,
                                                                std::string* note) {
  if (gpus.rfind("sim:", 0) == 0) {
    gpu::SimOptions opts;
    opts.seed = seed;
    auto sim = gpu::SimGpuBackend::Create(std::string_view(gpus).substr(4), opts);
    if (!sim.ok()) return sim.status();
    return std::unique_ptr<gpu::GpuBackend>(std::move(*sim));
  }
  if (gpus != "nvml") {
    return absl::InvalidArgumentError(
        StrCat("--gpus \"", gpus, "\": expected nvml or sim:SPEC (e.g. sim:4xH100-80GB)"));
  }
  auto nvml = gpu::CreateNvmlBackend();
  if (!nvml.ok()) {
    *note = StrCat("NVML unavailable, reporting zero GPUs: ", nvml.status().message());
    return std::unique_ptr<gpu::GpuBackend>();
  }
  return std::move(*nvml);
}

}  // namespace warden::agent
