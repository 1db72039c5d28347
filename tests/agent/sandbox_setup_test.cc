// --gpu-driver-dirs (sandbox_setup.h): which host directories GPU jobs get for the NVIDIA
// driver's libraries, from where the loader finds them and the node's mounts.
#include "agent/sandbox_setup.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "gtest/gtest.h"

namespace warden::agent {
namespace {

// As on the lent GPU machines: the driver is a read-only mount of its own at /usr/local/nvidia.
constexpr char kMounts[] =
    "25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "40 25 0:50 / /usr/local/nvidia ro,nosuid,nodev,relatime - ext4 /dev/vdb ro\n";

std::function<std::string(const char*)> Loader(std::map<std::string, std::string> found) {
  return [found](const char* soname) {
    auto it = found.find(soname);
    return it == found.end() ? std::string() : it->second;
  };
}

TEST(DriverDirsTest, AutoBindsTheDriversOwnMountAndPointsTheLoaderThere) {
  auto d = ResolveDriverDirs("auto", kMounts,
                             Loader({{"libcuda.so.1", "/usr/local/nvidia/lib64"},
                                     {"libnvidia-ml.so.1", "/usr/local/nvidia/lib64"}}));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dirs, std::vector<std::string>{"/usr/local/nvidia"});
  EXPECT_EQ(d->library_path, "/usr/local/nvidia/lib64");  // once, though both libraries are there
  EXPECT_NE(d->note.find("/usr/local/nvidia"), std::string::npos) << d->note;
}

TEST(DriverDirsTest, AutoBindsNothingForLibrariesOnTheRootFileSystemOrNoDriver) {
  // A bare-metal node: the host image already shows /usr/lib/x86_64-linux-gnu, and binding the
  // whole directory into an image would replace the image's own libraries.
  auto d = ResolveDriverDirs("auto", kMounts, Loader({{"libcuda.so.1", "/usr/lib/x86_64-linux-gnu"}}));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->dirs.empty());
  EXPECT_TRUE(d->library_path.empty());
  auto none = ResolveDriverDirs("auto", kMounts, Loader({}));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->dirs.empty());
}

TEST(DriverDirsTest, NoneAndExplicitDirs) {
  auto off = ResolveDriverDirs("none", kMounts, Loader({{"libcuda.so.1", "/usr/local/nvidia/lib64"}}));
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(off->dirs.empty());
  const std::string dir = ::testing::TempDir() + "drv_" + std::to_string(getpid());
  std::filesystem::create_directories(dir + "/lib64");
  std::ofstream(dir + "/lib64/libcuda.so.1") << "x";
  auto given = ResolveDriverDirs(dir, kMounts, Loader({}));
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(given->dirs, std::vector<std::string>{dir});
  EXPECT_EQ(given->library_path, dir + "/lib64");
  std::filesystem::remove_all(dir);
  auto bad = ResolveDriverDirs("usr/local/nvidia", kMounts, Loader({}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("--gpu-driver-dirs"), std::string::npos);
}

}  // namespace
}  // namespace warden::agent
