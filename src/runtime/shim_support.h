// Private to runtime: the job-directory formats and file helpers shared by the runner and the
// shim, without Abseil. The shim is linked statically from these alone, because the dynamic
// loader's work for ~30 Abseil libraries was a visible part of each job's start latency
// (bench/RESULTS.md "Sandbox").
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/job_result.h"

namespace warden::runtime {

// job.json: what the shim needs, written by the runner before the shim starts.
struct JobRecord {
  std::string job_id;
  std::string tenant;
  std::string runtime_path;
  std::string runtime_root;
  std::string cgroups_path;
  // Where the shim reads the job's statistics; resolved by the runner from the cgroup layout.
  std::string memory_dir;
  std::string cpu_dir;
  bool cgroup_v1 = false;
  int64_t wall_time_ms = 0;
  int64_t grace_ms = 0;
  // "oci" (runc/crun run the bundle) or "bwrap" (the shim sets up the cgroup and runs bubblewrap
  // as the tenant's unprivileged host uid with exec_args).
  std::string kind = "oci";
  std::vector<std::string> exec_args;
  uint32_t run_uid = 0;
  uint32_t run_gid = 0;
  std::vector<std::string> cgroup_dirs;                             // created, later removed
  std::vector<std::pair<std::string, std::string>> cgroup_writes;  // file, value, in order
  std::vector<std::string> cgroup_procs;                            // cgroup.procs files to join
  std::string seccomp_file;                                         // compiled BPF for bwrap
  // The runtime's container id; empty means job_id. A prepared sandbox keeps the id it was
  // created with ("prep-..."), so after the hand-over it differs from the job id.
  std::string container_id;
  // Started as a prepared sandbox (runtime/README.md "Prepared sandboxes"): pid 1 is the
  // launcher and the shim takes the hand-over on its control pipe.
  bool prepared = false;
  const std::string& ContainerId() const { return container_id.empty() ? job_id : container_id; }
};

namespace shim {

inline bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

// Writes via a temporary file and rename, so readers see the old or the new content. `durable`
// adds an fsync: only for state that must survive a node crash (jobs do not: a reboot ends them).
inline bool WriteFileAtomic(const std::string& path, const std::string& content, int mode, bool durable,
                            std::string* err) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    if (err) *err = "cannot create " + tmp + ": " + std::strerror(errno);
    return false;
  }
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (err) *err = "cannot write " + tmp + ": " + std::strerror(errno);
      close(fd);
      unlink(tmp.c_str());
      return false;
    }
    off += static_cast<size_t>(n);
  }
  if (durable) fsync(fd);
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    if (err) *err = "cannot rename to " + path + ": " + std::strerror(errno);
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

// The start time (clock ticks since boot, /proc/<pid>/stat field 22) of `pid`; 0 if it is gone
// or a zombie.
inline uint64_t ProcessStartTime(int pid) {
  if (pid <= 0) return 0;
  std::string text;
  if (!ReadFile("/proc/" + std::to_string(pid) + "/stat", &text)) return 0;
  // The command name (field 2) may hold spaces and ')': fields restart after the last ')'.
  size_t p = text.rfind(')');
  if (p == std::string::npos || p + 2 > text.size()) return 0;
  std::istringstream in(text.substr(p + 2));
  std::string state, field;
  in >> state;
  if (state == "Z" || state == "X") return 0;
  for (int i = 4; i <= 22; ++i) {
    if (!(in >> field)) return 0;
  }
  return std::strtoull(field.c_str(), nullptr, 10);
}

// The last error line of a runc/crun JSON log, for messages.
inline std::string LastRuntimeError(const std::string& log_path) {
  std::string text;
  if (!ReadFile(log_path, &text)) return "";
  std::string last, line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    if (line.find("error") != std::string::npos) last = line;
  }
  nlohmann::json j = nlohmann::json::parse(last, nullptr, false);
  if (j.is_object() && j.contains("msg") && j["msg"].is_string()) return j["msg"].get<std::string>();
  return last;
}

inline std::string EncodeJobRecord(const JobRecord& r) {
  return nlohmann::json{{"job_id", r.job_id},           {"tenant", r.tenant},
                        {"runtime_path", r.runtime_path}, {"runtime_root", r.runtime_root},
                        {"cgroups_path", r.cgroups_path}, {"memory_dir", r.memory_dir},
                        {"cpu_dir", r.cpu_dir},           {"cgroup_v1", r.cgroup_v1},
                        {"wall_time_ms", r.wall_time_ms}, {"grace_ms", r.grace_ms},
                        {"kind", r.kind},                 {"exec_args", r.exec_args},
                        {"run_uid", r.run_uid},           {"run_gid", r.run_gid},
                        {"cgroup_dirs", r.cgroup_dirs},   {"cgroup_writes", r.cgroup_writes},
                        {"cgroup_procs", r.cgroup_procs}, {"seccomp_file", r.seccomp_file},
                        {"container_id", r.container_id}, {"prepared", r.prepared}}
      .dump();
}

// False (with `err`) when the record is malformed.
inline bool DecodeJobRecord(const std::string& text, JobRecord* r, std::string* err) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) {
    *err = "job.json is not a JSON object";
    return false;
  }
  try {
    r->job_id = j.at("job_id").get<std::string>();
    r->tenant = j.at("tenant").get<std::string>();
    r->runtime_path = j.at("runtime_path").get<std::string>();
    r->runtime_root = j.at("runtime_root").get<std::string>();
    r->cgroups_path = j.at("cgroups_path").get<std::string>();
    r->memory_dir = j.at("memory_dir").get<std::string>();
    r->cpu_dir = j.at("cpu_dir").get<std::string>();
    r->cgroup_v1 = j.at("cgroup_v1").get<bool>();
    r->wall_time_ms = j.at("wall_time_ms").get<int64_t>();
    r->grace_ms = j.at("grace_ms").get<int64_t>();
    r->kind = j.at("kind").get<std::string>();
    r->exec_args = j.at("exec_args").get<std::vector<std::string>>();
    r->run_uid = j.at("run_uid").get<uint32_t>();
    r->run_gid = j.at("run_gid").get<uint32_t>();
    r->cgroup_dirs = j.at("cgroup_dirs").get<std::vector<std::string>>();
    r->cgroup_writes = j.at("cgroup_writes").get<std::vector<std::pair<std::string, std::string>>>();
    r->cgroup_procs = j.at("cgroup_procs").get<std::vector<std::string>>();
    r->seccomp_file = j.at("seccomp_file").get<std::string>();
    // Absent in records written before prepared sandboxes existed.
    r->container_id = j.value("container_id", std::string());
    r->prepared = j.value("prepared", false);
  } catch (const std::exception& e) {
    *err = std::string("job.json: ") + e.what();
    return false;
  }
  return true;
}

inline std::string EncodeJobResult(const JobResult& r) {
  return nlohmann::json{{"exit_code", r.exit_code},
                        {"signal", r.signal},
                        {"oom_killed", r.oom_killed},
                        {"wall_time_exceeded", r.wall_time_exceeded},
                        {"cancelled", r.cancelled},
                        {"lost", r.lost},
                        {"peak_memory_bytes", r.usage.peak_memory_bytes},
                        {"cpu_time_usec", r.usage.cpu_time_usec},
                        {"error", r.error}}
      .dump();
}

inline uint64_t ParseU64(const std::string& s, size_t pos = 0) {
  uint64_t v = 0;
  for (size_t i = pos; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) v = v * 10 + static_cast<uint64_t>(s[i] - '0');
  return v;
}

// The value of "key N" in a keyed cgroup file (memory.events, cpu.stat, memory.oom_control).
inline uint64_t KeyedValue(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 && line[key.size()] == ' ') {
      return ParseU64(line, key.size() + 1);
    }
  }
  return 0;
}

struct CgroupCounters {
  uint64_t oom_kills = 0;
  uint64_t peak_memory_bytes = 0;
  uint64_t cpu_time_usec = 0;
};

// Reads what it can; missing files leave fields at 0. v1: memory.oom_control's oom_kill,
// memory.max_usage_in_bytes, cpuacct.usage (ns). v2: memory.events' oom_kill, memory.peak,
// cpu.stat's usage_usec.
inline CgroupCounters ReadCgroupCounters(const std::string& memory_dir, const std::string& cpu_dir, bool v1) {
  CgroupCounters c;
  std::string text;
  if (v1) {
    if (!memory_dir.empty()) {
      if (ReadFile(memory_dir + "/memory.oom_control", &text)) c.oom_kills = KeyedValue(text, "oom_kill");
      if (ReadFile(memory_dir + "/memory.max_usage_in_bytes", &text)) c.peak_memory_bytes = ParseU64(text);
    }
    if (!cpu_dir.empty() && ReadFile(cpu_dir + "/cpuacct.usage", &text)) c.cpu_time_usec = ParseU64(text) / 1000;
  } else if (!memory_dir.empty()) {
    if (ReadFile(memory_dir + "/memory.events", &text)) c.oom_kills = KeyedValue(text, "oom_kill");
    if (ReadFile(memory_dir + "/memory.peak", &text)) c.peak_memory_bytes = ParseU64(text);
    if (ReadFile(memory_dir + "/cpu.stat", &text)) c.cpu_time_usec = KeyedValue(text, "usage_usec");
  }
  return c;
}

}  // namespace shim

// The shim's entry point (also declared in runtime.h): argv = {..., job_dir}.
int ShimMain(int argc, char** argv);

}  // namespace warden::runtime
