#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "runtime/oci_spec.h"
#include "runtime/runtime.h"

namespace warden::runtime {
namespace {

using common::Json;

SandboxSpec GoodSpec() {
  SandboxSpec s;
  s.tenant = "alpha";
  s.job_id = "job-1";
  s.argv = {"/bin/sh", "-c", "echo hi"};
  s.env = {{"FOO", "bar"}};
  s.image = "host";
  return s;
}

OciInputs Inputs() {
  OciInputs in;
  in.rootfs = "/var/lib/gpuwarden/images/alpha/x/rootfs";
  in.host_uid_base = 1u << 20;
  in.cgroups_path = "/warden/alpha/job-1";
  in.layout.mode = CgroupLayout::Mode::kV2;
  in.layout.unified_mount = "/sys/fs/cgroup";
  return in;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(SandboxSpecTest, AcceptsAGoodSpec) { EXPECT_TRUE(ValidateSandboxSpec(GoodSpec()).ok()); }

TEST(SandboxSpecTest, RefusesLoaderVariablesFromTheSpec) {
  for (const char* name : {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_DEBUG", "LD_BIND_NOW",
                           "LD_ORIGIN_PATH", "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH"}) {
    SandboxSpec s = GoodSpec();
    s.env.push_back({name, "/tmp/evil.so"});
    absl::Status st = ValidateSandboxSpec(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(Message(st).find(name), std::string::npos) << Message(st);
    EXPECT_NE(Message(st).find("loader variable"), std::string::npos) << Message(st);
  }
}

TEST(SandboxSpecTest, RefusesLoaderVariablesFromTheImageEnvWhenBuildingTheSpec) {
  OciInputs in = Inputs();
  in.image_env = {{"PATH", "/bin"}, {"LD_PRELOAD", "/usr/lib/libnvidia-evil.so"}};
  auto spec = BuildOciSpec(GoodSpec(), in);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(Message(spec.status()).find("image config env"), std::string::npos);
  EXPECT_NE(Message(spec.status()).find("LD_PRELOAD"), std::string::npos);
}

TEST(SandboxSpecTest, RefusesGpuVisibilityVariablesSetByTheJob) {
  for (const char* name : {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
                           "NVIDIA_REQUIRE_CUDA"}) {
    SandboxSpec s = GoodSpec();
    s.env.push_back({name, "all"});
    EXPECT_EQ(ValidateSandboxSpec(s).code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

TEST(SandboxSpecTest, RefusesMalformedFields) {
  auto bad = [](auto mutate, const char* needle) {
    SandboxSpec s = GoodSpec();
    mutate(s);
    absl::Status st = ValidateSandboxSpec(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << needle;
    EXPECT_NE(Message(st).find(needle), std::string::npos) << Message(st);
  };
  bad([](SandboxSpec& s) { s.tenant = "Alpha"; }, "tenant");
  bad([](SandboxSpec& s) { s.job_id = "../x"; }, "job_id");
  bad([](SandboxSpec& s) { s.job_id = ""; }, "job_id");
  bad([](SandboxSpec& s) { s.argv.clear(); }, "argv");
  bad([](SandboxSpec& s) { s.argv = {std::string("a\0b", 3)}; }, "NUL");
  bad([](SandboxSpec& s) { s.cwd = "relative"; }, "cwd");
  bad([](SandboxSpec& s) { s.cwd = "/a/../b"; }, "cwd");
  bad([](SandboxSpec& s) { s.image = "alpine:latest"; }, "image");
  bad([](SandboxSpec& s) { s.env = {{"A=B", "x"}}; }, "variable name");
  bad([](SandboxSpec& s) { s.env = {{"A", "1"}, {"A", "2"}}; }, "twice");
  bad([](SandboxSpec& s) { s.gpus = {{"GPU-1234abcd", "/dev/mem", {}}}; }, "/dev/nvidiaN");
  bad([](SandboxSpec& s) { s.gpus = {{"GPU-1234abcd", "/dev/nvidia0/../mem", {}}}; }, "/dev/nvidiaN");
  bad([](SandboxSpec& s) { s.gpus = {{"GPU-1234abcd", "/dev/nvidiactl", {}}}; }, "/dev/nvidiaN");
  bad([](SandboxSpec& s) { s.gpus = {{"not-a-uuid", "/dev/nvidia0", {}}}; }, "uuid");
  bad([](SandboxSpec& s) { s.gpus = {{"MIG-1234abcd", "/dev/nvidia0", {"/dev/sda"}}}; }, "nvidia-cap");
  bad([](SandboxSpec& s) { s.memory_bytes = 1024; }, "memory_bytes");
  bad([](SandboxSpec& s) { s.pids_max = 0; }, "pids_max");
  bad([](SandboxSpec& s) { s.cpu_millis = 1; }, "cpu_millis");
  bad([](SandboxSpec& s) { s.scratch_bytes = 0; }, "scratch_bytes");
  bad([](SandboxSpec& s) { s.wall_time = absl::ZeroDuration(); }, "wall_time");
  bad([](SandboxSpec& s) { s.datasets = {{"/run/ds", "/proc/x", false}}; }, "not under /data or /datasets");
  bad([](SandboxSpec& s) { s.datasets = {{"/run/ds", "/", false}}; }, "not under /data or /datasets");
  bad([](SandboxSpec& s) { s.datasets = {{"/run/ds", "/tmp/x", false}}; }, "not under /data or /datasets");
  bad([](SandboxSpec& s) { s.datasets = {{"/run/ds", "/database", false}}; }, "not under /data or /datasets");
  bad([](SandboxSpec& s) { s.datasets = {{"/run/a", "/data", false}, {"/run/b", "/data/x", false}}; }, "overlaps");
}

TEST(OciSpecTest, IsolatesTheJob) {
  auto spec = BuildOciSpec(GoodSpec(), Inputs());
  ASSERT_TRUE(spec.ok()) << spec.status();
  const Json& j = *spec;
  std::set<std::string> ns;
  for (const Json& n : j["linux"]["namespaces"]) ns.insert(n["type"].get<std::string>());
  EXPECT_EQ(ns, (std::set<std::string>{"pid", "ipc", "uts", "mount", "user", "cgroup", "network"}));
  // Container root is an unprivileged host uid range, not host root.
  EXPECT_EQ(j["linux"]["uidMappings"][0]["containerID"], 0);
  EXPECT_EQ(j["linux"]["uidMappings"][0]["hostID"], 1u << 20);
  EXPECT_EQ(j["linux"]["uidMappings"][0]["size"], 65536);
  EXPECT_EQ(j["process"]["user"]["uid"], kJobUid);
  for (const char* set : {"bounding", "effective", "inheritable", "permitted", "ambient"}) {
    EXPECT_TRUE(j["process"]["capabilities"][set].empty()) << set;
  }
  EXPECT_TRUE(j["process"]["noNewPrivileges"].get<bool>());
  EXPECT_TRUE(j["root"]["readonly"].get<bool>());
  EXPECT_EQ(j["linux"]["resources"]["memory"]["limit"], 512ull << 20);
  EXPECT_EQ(j["linux"]["resources"]["pids"]["limit"], 256);
  EXPECT_EQ(j["linux"]["resources"]["cpu"]["quota"], 100000);
  bool masked_nvidia = false;
  for (const Json& p : j["linux"]["maskedPaths"]) masked_nvidia |= p == "/proc/driver/nvidia";
  EXPECT_TRUE(masked_nvidia);
  bool scratch = false, tmp = false;
  for (const Json& m : j["mounts"]) {
    if (m["destination"] == "/scratch") {
      scratch = true;
      bool size = false;
      for (const Json& o : m["options"]) size |= o == "size=268435456";
      EXPECT_TRUE(size) << m.dump();
    }
    if (m["destination"] == "/tmp") tmp = m["type"] == "tmpfs";
  }
  EXPECT_TRUE(scratch);
  EXPECT_TRUE(tmp);
}

TEST(OciSpecTest, EgressSharesTheHostNetworkOnlyWhenAllowed) {
  SandboxSpec s = GoodSpec();
  s.egress_allowed = true;
  auto spec = BuildOciSpec(s, Inputs());
  ASSERT_TRUE(spec.ok());
  for (const Json& n : (*spec)["linux"]["namespaces"]) EXPECT_NE(n["type"], "network");
}

TEST(OciSpecTest, AJobWithoutGpusGetsNoGpuDeviceAtAll) {
  auto spec = BuildOciSpec(GoodSpec(), Inputs());
  ASSERT_TRUE(spec.ok());
  const Json& j = *spec;
  for (const Json& m : j["mounts"]) {
    EXPECT_EQ(m["destination"].get<std::string>().find("/dev/nvidia"), std::string::npos) << m.dump();
  }
  const Json& rules = j["linux"]["resources"]["devices"];
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_FALSE(rules[0]["allow"].get<bool>());
  EXPECT_EQ(rules[0]["access"], "rwm");
  std::set<std::string> env(j["process"]["env"].begin(), j["process"]["env"].end());
  EXPECT_TRUE(env.count("CUDA_VISIBLE_DEVICES="));
  EXPECT_TRUE(env.count("NVIDIA_VISIBLE_DEVICES=void"));
}

TEST(OciSpecTest, OnlyTheAssignedGpusAreMountedAllowedAndNamed) {
  SandboxSpec s = GoodSpec();
  s.gpus = {{"GPU-aaaa1111", "/dev/nvidia1", {}}};
  OciInputs in = Inputs();
  in.devices = {{"/dev/nvidia1", "/dev/nvidia1", 'c', 195, 1}, {"/dev/nvidiactl", "/dev/nvidiactl", 'c', 195, 255}};
  auto spec = BuildOciSpec(s, in);
  ASSERT_TRUE(spec.ok());
  const Json& j = *spec;
  std::set<std::string> nodes;
  for (const Json& m : j["mounts"]) {
    std::string d = m["destination"];
    if (d.rfind("/dev/nvidia", 0) == 0) nodes.insert(d);
  }
  EXPECT_EQ(nodes, (std::set<std::string>{"/dev/nvidia1", "/dev/nvidiactl"}));
  const Json& rules = j["linux"]["resources"]["devices"];
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_FALSE(rules[0]["allow"].get<bool>());  // deny all first
  EXPECT_EQ(rules[1]["major"], 195);
  EXPECT_EQ(rules[1]["minor"], 1);
  EXPECT_EQ(rules[2]["minor"], 255);
  std::set<std::string> env(j["process"]["env"].begin(), j["process"]["env"].end());
  EXPECT_TRUE(env.count("CUDA_VISIBLE_DEVICES=GPU-aaaa1111"));
  EXPECT_TRUE(env.count("NVIDIA_VISIBLE_DEVICES=GPU-aaaa1111"));
  EXPECT_TRUE(env.count("FOO=bar"));
}

TEST(OciSpecTest, OnlyGpuJobsGetTheDriverDirsReadOnlyAndTheirLibraryPath) {
  OciInputs in = Inputs();
  in.driver_dirs = {{"/usr/local/nvidia", {"rbind", "ro", "nosuid", "nodev"}}};
  in.driver_library_path = "/usr/local/nvidia/lib64";
  auto find_mount = [](const Json& j) -> const Json* {
    for (const Json& m : j["mounts"]) {
      if (m["destination"] == "/usr/local/nvidia") return &m;
    }
    return nullptr;
  };
  SandboxSpec gpu = GoodSpec();
  gpu.gpus = {{"GPU-aaaa1111", "/dev/nvidia1", {}}};
  auto spec = BuildOciSpec(gpu, in);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const Json* m = find_mount(*spec);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ((*m)["source"], "/usr/local/nvidia");
  std::set<std::string> opts((*m)["options"].begin(), (*m)["options"].end());
  EXPECT_TRUE(opts.count("ro") && opts.count("nosuid") && opts.count("nodev"));
  std::set<std::string> env((*spec)["process"]["env"].begin(), (*spec)["process"]["env"].end());
  EXPECT_TRUE(env.count("LD_LIBRARY_PATH=/usr/local/nvidia/lib64"));
  // A job without GPUs: neither, even with the same inputs.
  auto plain = BuildOciSpec(GoodSpec(), in);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(find_mount(*plain), nullptr);
  for (const Json& e : (*plain)["process"]["env"]) EXPECT_NE(e.get<std::string>().rfind("LD_LIBRARY_PATH=", 0), 0u);
  // The job's own LD_LIBRARY_PATH is still refused: only gpuwarden sets it.
  gpu.env = {{"LD_LIBRARY_PATH", "/tmp/evil"}};
  EXPECT_EQ(BuildOciSpec(gpu, in).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OciSpecTest, SeccompIsAnAllowListWithoutEscapeSyscalls) {
  Json p = DefaultSeccompProfile();
  EXPECT_EQ(p["defaultAction"], "SCMP_ACT_ERRNO");
  std::set<std::string> unconditional;
  for (const Json& rule : p["syscalls"]) {
    if (rule["action"] != "SCMP_ACT_ALLOW") continue;
    if (rule.contains("args")) continue;
    for (const Json& n : rule["names"]) unconditional.insert(n.get<std::string>());
  }
  EXPECT_GT(unconditional.size(), 200u);
  for (const char* bad : {"mount", "umount2", "pivot_root", "ptrace", "bpf", "keyctl", "add_key",
                          "request_key", "kexec_load", "kexec_file_load", "init_module",
                          "finit_module", "delete_module", "perf_event_open", "userfaultfd",
                          "unshare", "setns", "open_by_handle_at", "io_uring_setup", "socket",
                          "clone", "clone3", "process_vm_readv", "process_vm_writev", "chroot",
                          "fsopen", "move_mount", "iopl", "ioperm", "reboot", "personality"}) {
    EXPECT_EQ(unconditional.count(bad), 0u) << bad << " is allowed without conditions";
  }
  // socket() is allowed only for unix/inet/inet6 stream/dgram/seqpacket and netlink.
  int socket_rules = 0;
  for (const Json& rule : p["syscalls"]) {
    if (rule["names"][0] != "socket") continue;
    ++socket_rules;
    EXPECT_EQ(rule["args"][0]["op"], "SCMP_CMP_EQ");
    int family = rule["args"][0]["value"];
    EXPECT_TRUE(family == 1 || family == 2 || family == 10 || family == 16) << family;
    if (family != 16) {
      EXPECT_NE(rule["args"][1]["valueTwo"], 3) << "SOCK_RAW allowed";
    }
  }
  EXPECT_EQ(socket_rules, 10);
}

TEST(BwrapPlanTest, CarriesTheSameIsolationAsTheOciSpec) {
  SandboxSpec s = GoodSpec();
  s.gpus = {{"GPU-aaaa1111", "/dev/nvidia1", {}}};
  OciInputs in = Inputs();
  in.layout.mode = CgroupLayout::Mode::kV1;
  in.layout.v1_mounts = {{"memory", "/sys/fs/cgroup/memory"}, {"pids", "/sys/fs/cgroup/pids"},
                         {"devices", "/sys/fs/cgroup/devices"}, {"cpu", "/sys/fs/cgroup/cpu"}};
  in.devices = {{"/dev/nvidia1", "/hostdev/nvidia1", 'c', 195, 1}};
  auto oci = BuildOciSpec(s, in);
  ASSERT_TRUE(oci.ok());
  auto plan = PlanBwrap(s, in, *oci, "/usr/bin/bwrap");
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string cmd;
  for (const std::string& a : plan->args) cmd += a + " ";
  for (const char* want : {"--unshare-user ", "--unshare-pid ", "--unshare-net ", "--uid 1000 ",
                           "--ro-bind /var/lib/gpuwarden/images/alpha/x/rootfs / ", "--clearenv ",
                           "--setenv CUDA_VISIBLE_DEVICES GPU-aaaa1111 ", "--seccomp 10 -- /bin/sh -c echo hi ",
                           "--dev-bind /hostdev/nvidia1 /dev/nvidia1 ", "--size 268435456 --tmpfs /scratch "}) {
    EXPECT_NE(cmd.find(want), std::string::npos) << want << " missing from: " << cmd;
  }
  EXPECT_EQ(cmd.find("nvidia0"), std::string::npos);
  // Device rules: deny all first, then only defaults and the assigned GPU.
  std::vector<std::string> dev_rules;
  for (const auto& [file, value] : plan->cgroup_writes) {
    if (file.find("/devices.") != std::string::npos) dev_rules.push_back(file.substr(file.rfind('/') + 1) + " " + value);
  }
  ASSERT_FALSE(dev_rules.empty());
  EXPECT_EQ(dev_rules.front(), "devices.deny a");
  EXPECT_EQ(dev_rules.back(), "devices.allow c 195:1 rw");
  bool mem = false;
  for (const auto& [file, value] : plan->cgroup_writes) mem |= file == "/sys/fs/cgroup/memory/warden/alpha/job-1/memory.limit_in_bytes" && value == "536870912";
  EXPECT_TRUE(mem);
}

// Problem of issue 7: runc cannot create /data/train on a read-only root. A dataset below a root
// gets a root tmpfs (owned by the container's root, 0755, not executable) mounted before it; the
// dataset itself is a read-only bind unless writable.
TEST(OciSpecTest, DatasetsBelowARootGetARootTmpfsBeforeTheirBind) {
  SandboxSpec s = GoodSpec();
  s.datasets = {{"/dev/shm/ds/0", "/data/train", false}, {"/dev/shm/ds/1", "/datasets", true}};
  ASSERT_TRUE(ValidateSandboxSpec(s).ok());
  auto j = BuildOciSpec(s, Inputs());
  ASSERT_TRUE(j.ok()) << j.status();
  int root_tmpfs = -1, train = -1, whole = -1, i = 0;
  for (const Json& m : (*j)["mounts"]) {
    const std::string dest = m["destination"].get<std::string>();
    const auto opts = m["options"].get<std::vector<std::string>>();
    auto has = [&](const char* o) { return std::find(opts.begin(), opts.end(), o) != opts.end(); };
    if (dest == "/data") {
      root_tmpfs = i;
      EXPECT_EQ(m["type"], "tmpfs");
      EXPECT_TRUE(has("mode=0755") && has("noexec") && has("nosuid") && has("nodev")) << m.dump();
      for (const std::string& o : opts) EXPECT_EQ(o.find("uid="), std::string::npos) << "owned by the job: " << m.dump();
    }
    if (dest == "/data/train") {
      train = i;
      EXPECT_EQ(m["source"], "/dev/shm/ds/0");
      EXPECT_TRUE(has("ro") && has("noexec") && has("nosuid") && has("nodev")) << m.dump();
    }
    if (dest == "/datasets" && m["type"] == "none") {
      whole = i;
      EXPECT_TRUE(has("rw")) << m.dump();
    }
    EXPECT_FALSE(dest == "/datasets" && m["type"] == "tmpfs") << "no root tmpfs under a dataset at the root itself";
    ++i;
  }
  ASSERT_GE(root_tmpfs, 0);
  EXPECT_LT(root_tmpfs, train);
  EXPECT_GE(whole, 0);

  auto plan = PlanBwrap(s, Inputs(), *j, "/usr/bin/bwrap");
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string cmd;
  for (const std::string& a : plan->args) cmd += a + " ";
  const size_t t = cmd.find("--tmpfs /data "), b = cmd.find("--ro-bind /dev/shm/ds/0 /data/train ");
  ASSERT_NE(t, std::string::npos) << cmd;
  ASSERT_NE(b, std::string::npos) << cmd;
  EXPECT_LT(t, b);
  EXPECT_NE(cmd.find("--bind /dev/shm/ds/1 /datasets "), std::string::npos) << cmd;
  EXPECT_GT(cmd.find("--remount-ro /data "), b) << cmd;
}

TEST(BwrapPlanTest, CompilesTheSeccompProfile) {
  std::string path = ::testing::TempDir() + "/seccomp_test.bpf";
  ASSERT_TRUE(CompileSeccompBpf(DefaultSeccompProfile(), path).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_GT(st.st_size, 8 * 100);  // hundreds of instructions
  EXPECT_EQ(st.st_size % 8, 0);    // whole sock_filter entries
  unlink(path.c_str());
  EXPECT_FALSE(CompileSeccompBpf(Json{{"defaultAction", "SCMP_ACT_ALLOW"}}, path).ok());
}

TEST(OciSpecTest, UidSlotsAreStableAndSpread) {
  EXPECT_EQ(PreferredUidSlot("alpha", 4096), PreferredUidSlot("alpha", 4096));
  std::set<uint32_t> slots;
  for (int i = 0; i < 50; ++i) slots.insert(PreferredUidSlot("tenant" + std::to_string(i), 4096));
  EXPECT_GT(slots.size(), 45u);
}

}  // namespace
}  // namespace warden::runtime
