// Sandbox overhead against plain `runc run` of the same bundle (issue 7, "Must show" 4).
//
//   sandbox_bench SHIM_PATH IMAGE_LAYOUT [RUNS]
//
// Imports IMAGE_LAYOUT (tools/build-busybox-rootfs.sh DIR -> DIR/oci) into a temp store, then
// alternates, RUNS times each:
//   gpuwarden: Runner::Start + Wait + Remove of /bin/true (validation, OCI spec, bundle, shim,
//              `runc run --detach`, cgroup statistics, `runc delete`, result file);
//   peer:      `runc run --bundle B ID` of the very config.json the runner wrote (same
//              namespaces, seccomp, cgroups, mounts), stdout to /dev/null;
//   prepared:  Runner::Prepare (not timed), then Start + Wait + Remove of /bin/true handed to the
//              prepared sandbox (warden-sandbox-launcher next to SHIM_PATH).
// Prints p50/p99 of each and the ratio. Interleaving the three keeps machine load fair to all.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/image.h"
#include "runtime/job_files.h"
#include "runtime/runtime.h"

namespace fs = std::filesystem;
using namespace warden::runtime;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int RunRunc(const std::string& root, const std::string& bundle, const std::string& id) {
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execlp("runc", "runc", "--root", root.c_str(), "run", "--bundle", bundle.c_str(), id.c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SHIM_PATH IMAGE_LAYOUT [RUNS]\n", argv[0]);
    return 2;
  }
  const int runs = argc > 3 ? std::atoi(argv[3]) : 100;
  fs::path base = fs::temp_directory_path() / ("sandbox_bench_" + std::to_string(getpid()));
  fs::create_directories(base);
  fs::permissions(base, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  auto image = ImportImage((base / "images").string(), "bench", argv[2]);
  if (!image.ok()) {
    std::fprintf(stderr, "import: %s\n", std::string(image.status().message()).c_str());
    return 1;
  }
  RunnerOptions o;
  o.state_dir = (base / "state").string();
  o.shim_command = {argv[1]};
  const std::string shim = argv[1];
  o.launcher_path = shim.substr(0, shim.rfind('/') + 1) + "warden-sandbox-launcher";
  o.image_root = (base / "images").string();
  auto runner = CreateRunner(o);
  if (!runner.ok()) {
    std::fprintf(stderr, "runner: %s\n", std::string(runner.status().message()).c_str());
    return 1;
  }
  auto spec_for = [&](int i) {
    SandboxSpec s;
    s.tenant = "bench";
    s.job_id = "bench-" + std::to_string(i);
    s.argv = {"/bin/true"};
    s.image = image->digest;
    return s;
  };
  // Keep one bundle for the peer.
  fs::path peer_bundle = base / "peer-bundle";
  {
    SandboxSpec s = spec_for(-1);
    s.job_id = "bench-template";
    if (!(*runner)->Start(s).ok() || !(*runner)->Wait(s.job_id, absl::Seconds(30)).ok()) {
      std::fprintf(stderr, "template job failed\n");
      return 1;
    }
    fs::create_directories(peer_bundle);
    fs::copy_file(base / "state/jobs/bench-template/bundle/config.json", peer_bundle / "config.json");
    (void)(*runner)->Remove(s.job_id);
  }
  // The template's cgroup path would be shared by every peer run (runc run deletes it each time).
  const std::string peer_root = (base / "peer-root").string();
  std::vector<double> ours, peer, starts, warm, warm_starts;
  int cold_in_warm = 0;
  int failures = 0;
  // One timed Start + Wait (+ untimed Remove); false if the job was not handed to a prepared
  // sandbox.
  auto timed_job = [&](const SandboxSpec& s, std::vector<double>& total, std::vector<double>& to_running) {
    auto t0 = Clock::now();
    absl::Status st = (*runner)->Start(s);
    to_running.push_back(Ms(Clock::now() - t0));
    auto res = st.ok() ? (*runner)->Wait(s.job_id, absl::Seconds(30)) : absl::StatusOr<JobResult>(st);
    total.push_back(Ms(Clock::now() - t0));
    if (!res.ok() || res->exit_code != 0) ++failures;
    auto info = (*runner)->Get(s.job_id);
    (void)(*runner)->Remove(s.job_id);
    return info.ok() && info->prepared;
  };
  for (int i = 0; i < runs; ++i) {
    timed_job(spec_for(i), ours, starts);

    auto p0 = Clock::now();
    int rc = RunRunc(peer_root, peer_bundle.string(), "peer-" + std::to_string(i));
    auto p1 = Clock::now();
    if (rc != 0) ++failures;
    peer.push_back(Ms(p1 - p0));

    SandboxSpec w = spec_for(i);
    w.job_id = "warm-" + std::to_string(i);
    if (!(*runner)->Prepare(w).ok()) {
      ++failures;
      continue;
    }
    if (!timed_job(w, warm, warm_starts)) ++cold_in_warm;
  }
  double o50 = Pct(ours, 0.5), o99 = Pct(ours, 0.99), p50 = Pct(peer, 0.5), p99 = Pct(peer, 0.99);
  std::printf("runs=%d failures=%d\n", runs, failures);
  std::printf("gpuwarden Start+Wait /bin/true: p50 %.1f ms  p99 %.1f ms\n", o50, o99);
  std::printf("  of which Start() (to running): p50 %.1f ms\n", Pct(starts, 0.5));
  std::printf("runc run (same bundle):         p50 %.1f ms  p99 %.1f ms\n", p50, p99);
  std::printf("ratio p50 %.2fx  p99 %.2fx (target <= 1.2x)\n", o50 / p50, o99 / p99);
  if (!warm.empty()) {
    std::printf("prepared sandbox Start+Wait:     p50 %.1f ms  p99 %.1f ms (%d of %zu started cold)\n",
                Pct(warm, 0.5), Pct(warm, 0.99), cold_in_warm, warm.size());
    std::printf("  of which Start() (to running): p50 %.1f ms  p99 %.1f ms\n", Pct(warm_starts, 0.5),
                Pct(warm_starts, 0.99));
  }
  fs::remove_all(base);
  return failures == 0 ? 0 : 1;
}
