#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/json.h"
#include "runtime/image.h"

namespace warden::runtime {
namespace {

namespace fs = std::filesystem;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

class ImageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("image_test_" + std::to_string(getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
  }
  void TearDown() override { fs::remove_all(base_); }

  // Builds a busybox image layout with tools/build-busybox-rootfs.sh; returns the layout dir.
  std::string Build(const std::string& name, const std::string& extra = "") {
    std::string dir = (base_ / name).string();
    std::string cmd = "bash tools/build-busybox-rootfs.sh " + dir + " " + extra + " >/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return dir + "/oci";
  }
  std::string Store() { return (base_ / "store").string(); }
  fs::path base_;
};

TEST_F(ImageStoreTest, ImportsAVerifiedLayoutForOneTenantOnly) {
  std::string layout = Build("bb");
  auto info = ImportImage(Store(), "alpha", layout);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->digest.substr(0, 7), "sha256:");
  EXPECT_TRUE(fs::exists(info->rootfs + "/bin/busybox"));
  EXPECT_TRUE(fs::is_directory(info->rootfs + "/scratch"));
  EXPECT_EQ(info->cmd, std::vector<std::string>{"/bin/sh"});
  auto again = LookupImage(Store(), "alpha", info->digest);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->rootfs, info->rootfs);
  // Another tenant cannot name it.
  EXPECT_EQ(LookupImage(Store(), "beta", info->digest).status().code(), absl::StatusCode::kNotFound);
  // Importing again is idempotent.
  EXPECT_TRUE(ImportImage(Store(), "alpha", layout).ok());
}

TEST_F(ImageStoreTest, ImportsATarOfALayout) {
  std::string layout = Build("bb");
  std::string tar = (base_ / "image.tar").string();
  ASSERT_EQ(std::system(("tar -C " + layout + " -cf " + tar + " .").c_str()), 0);
  auto info = ImportImage(Store(), "alpha", tar);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(fs::exists(info->rootfs + "/bin/busybox"));
}

TEST_F(ImageStoreTest, RefusesATamperedLayer) {
  std::string layout = Build("bb");
  // Flip a byte in the largest blob (the layer).
  fs::path biggest;
  for (auto& e : fs::directory_iterator(layout + "/blobs/sha256")) {
    if (biggest.empty() || fs::file_size(e) > fs::file_size(biggest)) biggest = e.path();
  }
  {
    std::fstream f(biggest, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  auto info = ImportImage(Store(), "alpha", layout);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss) << info.status();
  // Nothing is left in the store.
  for (auto& e : fs::directory_iterator(Store() + "/alpha")) ADD_FAILURE() << "left behind: " << e.path();
}

TEST_F(ImageStoreTest, RefusesLoaderVariablesInTheImageEnv) {
  std::string layout = Build("evil", "--env LD_PRELOAD=/lib/evil.so");
  auto info = ImportImage(Store(), "alpha", layout);
  ASSERT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Message(info.status()).find("LD_PRELOAD"), std::string::npos);
  std::string layout2 = Build("evil2", "--env LD_LIBRARY_PATH=/evil");
  EXPECT_EQ(ImportImage(Store(), "alpha", layout2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ImageStoreTest, ACachedImageThatChangedOnDiskFailsVerification) {
  auto info = ImportImage(Store(), "alpha", Build("bb"));
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->rootfs_digest.substr(0, 7), "sha256:");
  auto again = LookupImage(Store(), "alpha", info->digest);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->rootfs_digest, info->rootfs_digest);
  EXPECT_TRUE(VerifyImageRootfs(*again).ok());
  // An empty directory (a runtime's mount point) is not a change a job could read.
  fs::create_directories(info->rootfs + "/mnt/point");
  EXPECT_TRUE(VerifyImageRootfs(*again).ok());
  // One byte of one file, a mode change, an added file and a retargeted symlink each are.
  const std::string passwd = info->rootfs + "/etc/passwd";
  {
    std::fstream f(passwd, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.put('R');
  }
  absl::Status s = VerifyImageRootfs(*again);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(Message(s).find(info->digest), std::string::npos) << s;
  {
    std::fstream f(passwd, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.put('r');
  }
  ASSERT_TRUE(VerifyImageRootfs(*again).ok());
  chmod(passwd.c_str(), 0777);
  EXPECT_EQ(VerifyImageRootfs(*again).code(), absl::StatusCode::kDataLoss);
  chmod(passwd.c_str(), 0644);
  ASSERT_TRUE(VerifyImageRootfs(*again).ok());
  std::ofstream(info->rootfs + "/bin/planted") << "x";
  EXPECT_EQ(VerifyImageRootfs(*again).code(), absl::StatusCode::kDataLoss);
  fs::remove(info->rootfs + "/bin/planted");
  ASSERT_TRUE(VerifyImageRootfs(*again).ok());
  fs::remove(info->rootfs + "/bin/ls");
  fs::create_symlink("/proc/self/root", info->rootfs + "/bin/ls");
  EXPECT_EQ(VerifyImageRootfs(*again).code(), absl::StatusCode::kDataLoss);
}

TEST_F(ImageStoreTest, RemoveImageIsIdempotentAndPerTenant) {
  std::string layout = Build("bb");
  auto a = ImportImage(Store(), "alpha", layout);
  auto b = ImportImage(Store(), "beta", layout);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(RemoveImage(Store(), "alpha", a->digest).ok());
  EXPECT_EQ(LookupImage(Store(), "alpha", a->digest).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(LookupImage(Store(), "beta", a->digest).ok());  // beta's copy is beta's
  EXPECT_TRUE(RemoveImage(Store(), "alpha", a->digest).ok());
  EXPECT_EQ(RemoveImage(Store(), "alpha", "sha256:../../beta").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RemoveImage(Store(), "../beta", a->digest).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ImageStoreTest, ImportsADockerSaveStyleArchiveWithLegacyLinks) {
  // docker save (25+) writes the OCI layout plus manifest.json and "<id>/layer.tar" symlinks
  // into blobs/: the links are skipped, the blobs still verified.
  std::string layout = Build("bb");
  fs::path layer;
  for (auto& e : fs::directory_iterator(layout + "/blobs/sha256")) {
    if (layer.empty() || fs::file_size(e) > fs::file_size(layer)) layer = e.path();
  }
  fs::create_directories(layout + "/abc123");
  fs::create_symlink("../blobs/sha256/" + layer.filename().string(), layout + "/abc123/layer.tar");
  std::ofstream(layout + "/manifest.json") << "[]";
  std::string tar = (base_ / "saved.tar").string();
  ASSERT_EQ(std::system(("tar -C " + layout + " -cf " + tar + " .").c_str()), 0);
  auto info = ImportImage(Store(), "alpha", tar);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(fs::exists(info->rootfs + "/bin/busybox"));
  // A link standing in for a blob is not followed: the blob is missing, and the import says so.
  fs::path blob = layer;
  fs::rename(blob, base_ / "moved");
  fs::create_symlink((base_ / "moved").string(), blob);
  std::string tar2 = (base_ / "linked.tar").string();
  ASSERT_EQ(std::system(("tar -C " + layout + " -cf " + tar2 + " .").c_str()), 0);
  auto bad = ImportImage(Store(), "beta", tar2);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(Message(bad.status()).find("missing"), std::string::npos) << bad.status();
}

// Docker before 25 (e.g. Debian 12's docker.io 20.10) saves manifest.json, "<config hex>.json"
// and uncompressed "<id>/layer.tar" files, with no OCI layout: imported through a synthesized
// layout, verified the same way (the config's diff_ids against the layers).
TEST_F(ImageStoreTest, ImportsALegacyDockerSaveArchive) {
  std::string layout = Build("bb");
  auto blob = [&](const std::string& digest) { return layout + "/blobs/sha256/" + digest.substr(7); };
  auto read = [](const std::string& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  common::Json index = common::Json::parse(read(layout + "/index.json"));
  common::Json manifest =
      common::Json::parse(read(blob(index["manifests"][0]["digest"].get<std::string>())));
  const std::string config = manifest["config"]["digest"];
  const std::string layer = manifest["layers"][0]["digest"];
  const fs::path legacy = base_ / "legacy";
  fs::create_directories(legacy / "5e1d0c9a");
  fs::copy_file(blob(config), legacy / (config.substr(7) + ".json"));
  ASSERT_EQ(std::system(("gzip -dc " + blob(layer) + " > " + (legacy / "5e1d0c9a/layer.tar").string())
                            .c_str()),
            0);
  auto write_manifest = [&](const std::string& layer_path) {
    std::ofstream(legacy / "manifest.json")
        << R"([{"Config":")" << config.substr(7) << R"(.json","RepoTags":["bb:latest"],"Layers":[")"
        << layer_path << R"("]}])";
  };
  write_manifest("5e1d0c9a/layer.tar");
  std::ofstream(legacy / "repositories") << R"({"bb":{"latest":"5e1d0c9a"}})";
  auto pack = [&](const std::string& name) {
    std::string tar = (base_ / name).string();
    EXPECT_EQ(std::system(("tar -C " + legacy.string() + " -cf " + tar + " .").c_str()), 0);
    return tar;
  };
  const std::string tar = pack("legacy.tar");
  auto info = ImportImage(Store(), "alpha", tar);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(fs::exists(info->rootfs + "/bin/busybox"));
  EXPECT_EQ(info->cmd, std::vector<std::string>{"/bin/sh"});
  // The digest depends on the content alone: the same archive gives the same image elsewhere.
  auto again = ImportImage(Store(), "beta", tar);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->digest, info->digest);

  // A layer path that leaves the archive is refused by name.
  write_manifest("../../etc/passwd");
  auto escape = ImportImage(Store(), "gamma", pack("escape.tar"));
  ASSERT_FALSE(escape.ok());
  EXPECT_NE(Message(escape.status()).find("leaves the archive"), std::string::npos) << escape.status();
  // A layer whose content differs from the config's diff_id is refused.
  write_manifest("5e1d0c9a/layer.tar");
  {
    std::fstream f(legacy / "5e1d0c9a/layer.tar", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0, std::ios::end);
    f << std::string(1024, '\0');  // two more zero blocks: a valid tar, another digest
  }
  auto tampered = ImportImage(Store(), "gamma", pack("tampered.tar"));
  ASSERT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.status().code(), absl::StatusCode::kDataLoss) << tampered.status();
  EXPECT_FALSE(LookupImage(Store(), "gamma", info->digest).ok());
}

TEST(ImageParserTest, DockerArchiveManifest) {
  auto m = ParseDockerArchiveManifest(
      R"([{"Config":"abc.json","RepoTags":["x:1"],"Layers":["d1/layer.tar","d2/layer.tar"]}])");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config, "abc.json");
  EXPECT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->repo_tags, std::vector<std::string>{"x:1"});
  for (const char* bad :
       {"{}", "[]", R"([{"Config":"a"},{"Config":"b"}])", R"([{"Layers":[]}])",
        R"([{"Config":"/etc/shadow","Layers":[]}])", R"([{"Config":"a","Layers":["x/../../y"]}])",
        R"([{"Config":"a","Layers":[1]}])", R"([{"Config":"a","Layers":["a//b"]}])"}) {
    EXPECT_EQ(ParseDockerArchiveManifest(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST_F(ImageStoreTest, RefusesANonLayout) {
  fs::create_directories(base_ / "empty");
  EXPECT_FALSE(ImportImage(Store(), "alpha", (base_ / "empty").string()).ok());
  EXPECT_FALSE(ImportImage(Store(), "Bad Tenant", (base_ / "empty").string()).ok());
}

TEST(ImageParserTest, IndexManifestAndConfig) {
  std::string d = "sha256:" + std::string(64, 'a');
  EXPECT_TRUE(ParseImageIndex(R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + d + R"(","size":10}]})").ok());
  EXPECT_FALSE(ParseImageIndex(R"({"schemaVersion":2,"manifests":[]})").ok());
  EXPECT_FALSE(ParseImageIndex(R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc","size":10}]})").ok());
  EXPECT_FALSE(ParseImageIndex(R"({"schemaVersion":2,"schemaVersion":2,"manifests":[]})").ok());
  auto m = ParseImageManifest(R"({"schemaVersion":2,"config":{"mediaType":"x","digest":")" + d + R"(","size":1},"layers":[{"mediaType":"y","digest":")" + d + R"(","size":-1}]})");
  EXPECT_FALSE(m.ok());
  auto c = ParseImageConfig(R"({"config":{"Env":["A=1","B=x=y"]},"rootfs":{"type":"layers","diff_ids":[]}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->env.size(), 2u);
  EXPECT_EQ(c->env[1].second, "x=y");
  EXPECT_FALSE(ParseImageConfig(R"({"config":{"Env":["NOEQUALS"]},"rootfs":{"type":"layers","diff_ids":[]}})").ok());
}

}  // namespace
}  // namespace warden::runtime
