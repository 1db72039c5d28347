// ImageCache with a fake fetcher that serves local archives: a fetched image is verified and
// reused without a second fetch, a corrupted cache is refetched, and a fetch that fails or
// returns another image never becomes usable.
#include "agent/image_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "runtime/image.h"

namespace warden::agent {
namespace {

namespace fs = std::filesystem;

class ImageCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("image_cache_" + std::to_string(getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
  }
  void TearDown() override { fs::remove_all(base_); }

  // An OCI archive of a busybox image with `env`; returns its digest, archive at base_/name.tar.
  std::string Archive(const std::string& name, const std::string& env) {
    const std::string dir = (base_ / name).string();
    const std::string cmd = "bash tools/build-busybox-rootfs.sh " + dir + " --env " + env + " > " + dir + ".digest && tar -C " +
                            dir + "/oci -cf " + dir + ".tar .";
    fs::create_directories(dir);
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream in(dir + ".digest");
    std::string digest;
    std::getline(in, digest);
    return digest;
  }

  ImageFetcher Serving(const std::string& archive) {
    return [this, archive](const std::string& job, const std::string&, const std::string& dest) {
      ++calls_;
      last_job_ = job;
      fs::copy_file(archive, dest);
      return absl::OkStatus();
    };
  }

  std::string Root() { return (base_ / "cache").string(); }
  fs::path base_;
  int calls_ = 0;
  std::string last_job_;
};

TEST_F(ImageCacheTest, FetchesOnceThenReusesAndRefetchesACorruptedCache) {
  const std::string digest = Archive("a", "A=1");
  const std::string tar = (base_ / "a.tar").string();
  ImageCache cache(Root());
  ASSERT_TRUE(cache.Ensure("ten_a", "job_1", digest, Serving(tar)).ok());
  EXPECT_EQ(calls_, 1);
  EXPECT_EQ(last_job_, "job_1");
  auto info = runtime::LookupImage(Root(), "ten_a", digest);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(cache.Ensure("ten_a", "job_2", digest, Serving(tar)).ok());
  EXPECT_EQ(calls_, 1);  // reused
  EXPECT_EQ(cache.hits(), 1u);
  // Another tenant's job gets its own copy (fetched: the server decided it may use it).
  ASSERT_TRUE(cache.Ensure("ten_b", "job_3", digest, Serving(tar)).ok());
  EXPECT_EQ(calls_, 2);
  // A byte changed in the cached rootfs: detected, dropped, fetched again, intact afterwards.
  std::ofstream(info->rootfs + "/etc/passwd", std::ios::app) << "evil::0:0::/:/bin/sh\n";
  ASSERT_TRUE(cache.Ensure("ten_a", "job_4", digest, Serving(tar)).ok());
  EXPECT_EQ(calls_, 3);
  EXPECT_EQ(cache.corrupted(), 1u);
  auto again = runtime::LookupImage(Root(), "ten_a", digest);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(runtime::VerifyImageRootfs(*again).ok());
  std::ifstream passwd(again->rootfs + "/etc/passwd");
  std::string text((std::istreambuf_iterator<char>(passwd)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("evil"), std::string::npos);
}

TEST_F(ImageCacheTest, AFailedOrWrongFetchLeavesNothingUsable) {
  const std::string want = Archive("a", "A=1");
  const std::string other = Archive("b", "B=2");
  ASSERT_NE(want, other);
  ImageCache cache(Root());
  // The server refuses.
  absl::Status refused = cache.Ensure("ten_a", "job_1", want, [](const std::string&, const std::string&, const std::string&) {
    return absl::NotFoundError("HTTP 404: job is not assigned to this node");
  });
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(refused.message()).find(want), std::string::npos) << refused;
  // The server sends another (valid) image: refused, and neither image is left usable.
  absl::Status wrong = cache.Ensure("ten_a", "job_1", want, Serving((base_ / "b.tar").string()));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kDataLoss) << wrong;
  EXPECT_FALSE(runtime::LookupImage(Root(), "ten_a", want).ok());
  EXPECT_FALSE(runtime::LookupImage(Root(), "ten_a", other).ok());
  // A tampered archive fails verification (the agent does not trust the server's bytes).
  const std::string bad = (base_ / "bad.tar").string();
  fs::copy_file(base_ / "a.tar", bad);
  {
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<std::streamoff>(f.tellg());
    f.seekp(size / 2);
    f.put('\x5a');
  }
  absl::Status tampered = cache.Ensure("ten_a", "job_1", want, Serving(bad));
  EXPECT_FALSE(tampered.ok());
  EXPECT_FALSE(runtime::LookupImage(Root(), "ten_a", want).ok());
  // No temporary archive is left behind.
  for (const auto& e : fs::directory_iterator(Root() + "/ten_a")) {
    EXPECT_EQ(e.path().filename().string().rfind(".fetch-", 0), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace warden::agent
