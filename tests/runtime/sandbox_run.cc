// sandbox_run: runs one job through runtime::Runner from the command line, for scripts
// (tests/gpu/sandbox_gpu.sh) and manual checks until the agent wires the runner in.
//
//   sandbox_run --state DIR --shim PATH --tenant T --job ID [--image host|sha256:..]
//               [--image-root DIR] [--import LAYOUT] [--gpu UUID=/dev/nvidiaN]... [--host-dev DIR]
//               [--bwrap] [--runtime PATH] [--memory-mib N] [--pids N] [--wall-s N] [--env K=V]... -- ARGV...
//
// Prints the job's stdout and stderr, then one line "result {json}". Exit code: the job's.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "runtime/image.h"
#include "runtime/job_files.h"
#include "runtime/runtime.h"

using namespace warden::runtime;

int main(int argc, char** argv) {
  RunnerOptions o;
  SandboxSpec s;
  std::string import_layout;
  int i = 1;
  auto need = [&](const char* flag) -> std::string {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "sandbox_run: %s needs a value\n", flag);
      std::exit(2);
    }
    return argv[++i];
  };
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "--state") o.state_dir = need("--state");
    else if (a == "--bwrap") o.runtime = RuntimeKind::kBwrap;
    else if (a == "--shim") o.shim_command = {need("--shim")};
    else if (a == "--runtime") o.runtime_path = need("--runtime");
    else if (a == "--image-root") o.image_root = need("--image-root");
    else if (a == "--host-dev") o.host_dev_dir = need("--host-dev");
    else if (a == "--tenant") s.tenant = need("--tenant");
    else if (a == "--job") s.job_id = need("--job");
    else if (a == "--image") s.image = need("--image");
    else if (a == "--import") import_layout = need("--import");
    else if (a == "--memory-mib") s.memory_bytes = std::stoull(need("--memory-mib")) << 20;
    else if (a == "--pids") s.pids_max = std::stoll(need("--pids"));
    else if (a == "--wall-s") s.wall_time = absl::Seconds(std::stoll(need("--wall-s")));
    else if (a == "--env") {
      std::string kv = need("--env");
      size_t eq = kv.find('=');
      s.env.emplace_back(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
    } else if (a == "--gpu") {
      std::string g = need("--gpu");
      size_t eq = g.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "sandbox_run: --gpu wants UUID=/dev/nvidiaN\n");
        return 2;
      }
      s.gpus.push_back({g.substr(0, eq), g.substr(eq + 1), {}});
    } else {
      std::fprintf(stderr, "sandbox_run: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  for (; i < argc; ++i) s.argv.push_back(argv[i]);
  if (!import_layout.empty()) {
    auto img = ImportImage(o.image_root, s.tenant, import_layout);
    if (!img.ok()) {
      std::fprintf(stderr, "sandbox_run: import: %s\n", std::string(img.status().message()).c_str());
      return 1;
    }
    s.image = img->digest;
  }
  auto runner = CreateRunner(o);
  if (!runner.ok()) {
    std::fprintf(stderr, "sandbox_run: %s\n", std::string(runner.status().message()).c_str());
    return 1;
  }
  absl::Status st = (*runner)->Start(s);
  if (!st.ok()) {
    std::fprintf(stderr, "sandbox_run: start: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  auto res = (*runner)->Wait(s.job_id, absl::Hours(24));
  auto info = (*runner)->Get(s.job_id);
  if (!res.ok() || !info.ok()) {
    std::fprintf(stderr, "sandbox_run: wait failed\n");
    return 1;
  }
  std::cout << ReadFileToString(info->stdout_path).value_or("");
  std::cerr << ReadFileToString(info->stderr_path).value_or("");
  std::cout << "result " << EncodeJobResult(*res) << std::endl;
  (void)(*runner)->Remove(s.job_id);
  return res->exit_code < 0 ? 1 : res->exit_code;
}
