#include <gtest/gtest.h>

#include "runtime/oci_spec.h"
#include "runtime/runtime.h"

namespace warden::runtime {
namespace {

// As on the development machines (Debian 12): v1 controllers plus an empty cgroup2 mount.
constexpr char kHybrid[] =
    "25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

// As on the GPU machine (Ubuntu 24.04): pure cgroup v2.
constexpr char kV2[] =
    "25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

constexpr char kV1Combined[] =
    "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";

TEST(CgroupLayoutTest, DetectsHybridAndUsesV1Controllers) {
  auto l = ParseCgroupLayout(kHybrid);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->mode, CgroupLayout::Mode::kHybrid);
  EXPECT_TRUE(l->UsesV1());
  EXPECT_EQ(l->unified_mount, "/sys/fs/cgroup/unified");
  EXPECT_EQ(l->ControllerDir("memory", "/warden/a/j"), "/sys/fs/cgroup/memory/warden/a/j");
  EXPECT_EQ(l->ControllerDir("cpuacct", "/warden/a/j"), "/sys/fs/cgroup/cpuacct/warden/a/j");
  EXPECT_EQ(l->ControllerDir("hugetlb", "/warden/a/j"), "");
  EXPECT_EQ(l->v1_mounts.count("name=systemd"), 0u);
}

TEST(CgroupLayoutTest, DetectsPureV2) {
  auto l = ParseCgroupLayout(kV2);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->mode, CgroupLayout::Mode::kV2);
  EXPECT_FALSE(l->UsesV1());
  EXPECT_EQ(l->ControllerDir("memory", "/warden/a/j"), "/sys/fs/cgroup/warden/a/j");
}

TEST(CgroupLayoutTest, DetectsV1WithCombinedControllers) {
  auto l = ParseCgroupLayout(kV1Combined);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->mode, CgroupLayout::Mode::kV1);
  EXPECT_EQ(l->ControllerDir("cpuacct", "/w"), "/sys/fs/cgroup/cpu,cpuacct/w");
  EXPECT_EQ(l->ControllerDir("cpu", "/w"), "/sys/fs/cgroup/cpu,cpuacct/w");
}

TEST(CgroupLayoutTest, RefusesAHostWithoutCgroups) {
  auto l = ParseCgroupLayout("25 1 254:0 / / rw - ext4 /dev/vda rw\n");
  EXPECT_EQ(l.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(ParseCgroupLayout("garbage\n\n - \n").ok());
}

TEST(CgroupLayoutTest, ThisMachineIsDetected) {
  auto l = DetectCgroupLayout();
  ASSERT_TRUE(l.ok()) << l.status();
  std::cout << "cgroup layout here: " << CgroupModeName(l->mode) << "\n";
}

// A node whose driver lives on a mount of its own (as /usr/local/nvidia on the lent GPU machines),
// read-only and noexec-free, plus a noexec, noatime one.
constexpr char kDriverMounts[] =
    "25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "40 25 0:50 / /usr/local/nvidia ro,nosuid,nodev,relatime - ext4 /dev/vdb ro\n"
    "41 25 0:51 / /opt/drv rw,nosuid,noexec,noatime - tmpfs tmpfs rw\n"
    "42 25 0:52 / /opt/drv\\040x rw,relatime - tmpfs tmpfs rw\n";

TEST(MountInfoTest, FindsTheMountHoldingAPath) {
  EXPECT_EQ(MountPointOf("/usr/local/nvidia/lib64", kDriverMounts).value_or("?"), "/usr/local/nvidia");
  EXPECT_EQ(MountPointOf("/usr/local/nvidia", kDriverMounts).value_or("?"), "/usr/local/nvidia");
  EXPECT_EQ(MountPointOf("/usr/local/nvidia-other/lib", kDriverMounts).value_or("?"), "/");  // not a prefix by name only
  EXPECT_EQ(MountPointOf("/usr/lib/x86_64-linux-gnu", kDriverMounts).value_or("?"), "/");
  EXPECT_EQ(MountPointOf("/opt/drv x/lib", kDriverMounts).value_or("?"), "/opt/drv x");  // \040 unescaped
  EXPECT_FALSE(MountPointOf("/x", "").ok());
}

TEST(MountInfoTest, AReadOnlyBindKeepsTheFlagsAUserNamespaceCannotClear) {
  auto a = ReadOnlyBindOptions("/usr/local/nvidia", kDriverMounts);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, (std::vector<std::string>{"rbind", "ro", "nosuid", "nodev", "relatime"}));
  auto b = ReadOnlyBindOptions("/opt/drv/lib", kDriverMounts);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, (std::vector<std::string>{"rbind", "ro", "nosuid", "nodev", "noexec", "noatime"}));
}

}  // namespace
}  // namespace warden::runtime
