// cgroup layout detection (v2, v1, hybrid) and the per-job statistics the shim reads before the
// runtime deletes the job's cgroup; also the other mountinfo lookups (which mount holds a path,
// and the flags a read-only bind of it must keep).
#include <fstream>
#include <optional>
#include <sstream>

#include "common/strings.h"
#include "runtime/oci_spec.h"
#include "runtime/shim_support.h"

namespace warden::runtime {
namespace {

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(sep, i);
    if (j == std::string_view::npos) j = s.size();
    out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7') {
          ok = false;
          break;
        }
        v = v * 8 + (s[i + k] - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}



}  // namespace

std::string CgroupLayout::ControllerDir(std::string_view controller, std::string_view cgroups_path) const {
  std::string base;
  if (mode == Mode::kV2) {
    base = unified_mount;
  } else {
    auto it = v1_mounts.find(std::string(controller));
    if (it == v1_mounts.end()) return "";
    base = it->second;
  }
  if (base.empty()) return "";
  return common::StrCat(base, cgroups_path);
}

std::string_view CgroupModeName(CgroupLayout::Mode mode) {
  switch (mode) {
    case CgroupLayout::Mode::kV2: return "v2";
    case CgroupLayout::Mode::kV1: return "v1";
    case CgroupLayout::Mode::kHybrid: return "hybrid";
  }
  return "?";
}

absl::StatusOr<CgroupLayout> ParseCgroupLayout(std::string_view mountinfo) {
  CgroupLayout layout;
  for (std::string_view line : Split(mountinfo, '\n')) {
    if (line.empty()) continue;
    size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    std::vector<std::string_view> pre = Split(line.substr(0, dash), ' ');
    std::vector<std::string_view> post = Split(line.substr(dash + 3), ' ');
    if (pre.size() < 5 || post.size() < 3) continue;
    std::string mount_point = Unescape(pre[4]);
    std::string_view fstype = post[0];
    if (fstype == "cgroup2") {
      if (layout.unified_mount.empty()) layout.unified_mount = mount_point;
    } else if (fstype == "cgroup") {
      for (std::string_view opt : Split(post[2], ',')) {
        if (opt == "rw" || opt == "ro" || opt.empty() || opt.find('=') != std::string_view::npos) continue;
        layout.v1_mounts.emplace(std::string(opt), mount_point);
      }
    }
  }
  // Named hierarchies (name=systemd) carry no controllers; only real ones count.
  bool has_v1 = false;
  for (const auto& [ctrl, mp] : layout.v1_mounts) {
    if (ctrl == "memory" || ctrl == "pids" || ctrl == "cpu" || ctrl == "devices") has_v1 = true;
  }
  if (!has_v1 && layout.unified_mount.empty()) {
    return absl::FailedPreconditionError("no cgroup v1 controllers or cgroup2 mount in mountinfo");
  }
  if (!has_v1) {
    layout.mode = CgroupLayout::Mode::kV2;
    layout.v1_mounts.clear();
  } else if (!layout.unified_mount.empty()) {
    layout.mode = CgroupLayout::Mode::kHybrid;
  } else {
    layout.mode = CgroupLayout::Mode::kV1;
  }
  return layout;
}

namespace {

struct MountLine {
  std::string mount_point;
  std::string options;  // per-mount options (mountinfo field 6)
};

// The mount whose mount point is the longest path prefix of `path` (the last such line when
// several share it: a later mount covers an earlier one).
std::optional<MountLine> MountHolding(std::string_view path, std::string_view mountinfo) {
  std::optional<MountLine> best;
  for (std::string_view line : Split(mountinfo, '\n')) {
    size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    std::vector<std::string_view> pre = Split(line.substr(0, dash), ' ');
    if (pre.size() < 6) continue;
    std::string mp = Unescape(pre[4]);
    const bool holds = mp == "/" || IsUnder(path, mp);
    if (holds && (!best || mp.size() >= best->mount_point.size())) best = MountLine{mp, std::string(pre[5])};
  }
  return best;
}

}  // namespace

absl::StatusOr<std::string> MountPointOf(std::string_view path, std::string_view mountinfo) {
  auto m = MountHolding(path, mountinfo);
  if (!m) return absl::NotFoundError(common::StrCat("no mount in mountinfo holds ", path));
  return m->mount_point;
}

absl::StatusOr<std::vector<std::string>> ReadOnlyBindOptions(std::string_view dir, std::string_view mountinfo) {
  auto m = MountHolding(dir, mountinfo);
  if (!m) return absl::NotFoundError(common::StrCat("no mount in mountinfo holds ", dir));
  std::vector<std::string> opts = {"rbind", "ro", "nosuid", "nodev"};
  // A user namespace may not clear these flags of the mount it binds from (the kernel locks
  // them), so a read-only remount without them would fail.
  for (std::string_view o : Split(m->options, ',')) {
    if (o == "noexec" || o == "noatime" || o == "nodiratime" || o == "relatime" || o == "strictatime") {
      opts.emplace_back(o);
    }
  }
  return opts;
}

std::string ReadMountInfo() { return ReadSmallFile("/proc/self/mountinfo"); }

absl::StatusOr<CgroupLayout> DetectCgroupLayout() {
  std::string text = ReadMountInfo();
  if (text.empty()) return absl::FailedPreconditionError("cannot read /proc/self/mountinfo");
  return ParseCgroupLayout(text);
}

CgroupStats ReadCgroupStats(const CgroupLayout& layout, std::string_view cgroups_path) {
  shim::CgroupCounters c = shim::ReadCgroupCounters(
      layout.ControllerDir("memory", cgroups_path),
      layout.ControllerDir(layout.UsesV1() ? "cpuacct" : "memory", cgroups_path), layout.UsesV1());
  return CgroupStats{c.oom_kills, c.peak_memory_bytes, c.cpu_time_usec};
}

}  // namespace warden::runtime
