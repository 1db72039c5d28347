#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "runtime/tar.h"

namespace warden::runtime {
namespace {

namespace fs = std::filesystem;

// A minimal ustar writer for building hostile archives.
class TarWriter {
 public:
  void Add(const std::string& name, char type, const std::string& data = "", uint32_t mode = 0644,
           const std::string& link = "") {
    char h[512] = {};
    std::strncpy(h, name.c_str(), 100);
    std::snprintf(h + 100, 8, "%07o", mode);
    std::snprintf(h + 108, 8, "%07o", 0);
    std::snprintf(h + 116, 8, "%07o", 0);
    std::snprintf(h + 124, 12, "%011lo", static_cast<unsigned long>(type == '0' ? data.size() : 0));
    std::snprintf(h + 136, 12, "%011o", 0);
    h[156] = type;
    std::strncpy(h + 157, link.c_str(), 100);
    std::memcpy(h + 257, "ustar", 6);
    std::memcpy(h + 263, "00", 2);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : std::string(h, 512)) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    out_.append(h, 512);
    if (type == '0') {
      out_ += data;
      out_.append((512 - data.size() % 512) % 512, '\0');
    }
  }
  std::string Finish() { return out_ + std::string(1024, '\0'); }

 private:
  std::string out_;
};

// Reads `data` (which must outlive the source) in pieces.
ByteSource FromString(const std::string& data) {
  auto pos = std::make_shared<size_t>(0);
  return [&data, pos](char* b, size_t n) -> absl::StatusOr<size_t> {
    size_t k = std::min(n, data.size() - *pos);
    std::memcpy(b, data.data() + *pos, k);
    *pos += k;
    return k;
  };
}

class TarExtractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("tar_test_" + std::to_string(getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "root");
    fs::create_directories(base_ / "outside");
  }
  void TearDown() override { fs::remove_all(base_); }

  absl::StatusOr<ExtractStats> Extract(const std::string& archive, ExtractOptions opts = {}) {
    TarReader r(FromString(archive));
    return ExtractTar(r, (base_ / "root").string(), opts);
  }
  fs::path base_;
};

TEST_F(TarExtractTest, ExtractsFilesDirsAndLinks) {
  TarWriter w;
  w.Add("./bin/", '5', "", 0755);
  w.Add("./bin/tool", '0', "#!/bin/sh\n", 0755);
  w.Add("./bin/alias", '2', "", 0777, "tool");
  w.Add("./bin/hard", '1', "", 0755, "./bin/tool");
  auto st = Extract(w.Finish());
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(fs::is_regular_file(base_ / "root/bin/tool"));
  EXPECT_TRUE(fs::is_symlink(base_ / "root/bin/alias"));
  EXPECT_EQ(fs::read_symlink(base_ / "root/bin/alias"), "tool");
  EXPECT_EQ(fs::hard_link_count(base_ / "root/bin/tool"), 2u);
}

TEST_F(TarExtractTest, RefusesDotDotTraversal) {
  TarWriter w;
  w.Add("../outside/pwned", '0', "x");
  auto st = Extract(w.Finish());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(base_ / "outside/pwned"));
  TarWriter w2;
  w2.Add("a/../../outside/pwned", '0', "x");
  EXPECT_FALSE(Extract(w2.Finish()).ok());
  EXPECT_FALSE(fs::exists(base_ / "outside/pwned"));
}

TEST_F(TarExtractTest, AbsolutePathsStayInsideTheRoot) {
  TarWriter w;
  w.Add((base_ / "outside/abs").string(), '0', "x");
  ASSERT_TRUE(Extract(w.Finish()).ok());
  EXPECT_FALSE(fs::exists(base_ / "outside/abs"));
  EXPECT_TRUE(fs::exists(base_ / "root" / fs::path(base_.string().substr(1)) / "outside/abs"));
}

TEST_F(TarExtractTest, NeverWritesThroughAPlantedSymlink) {
  // Entry 1 plants "evil" -> the outside dir; entry 2 writes "evil/pwned". A naive extractor
  // follows the link and writes outside the root.
  TarWriter w;
  w.Add("evil", '2', "", 0777, (base_ / "outside").string());
  w.Add("evil/pwned", '0', "owned");
  auto st = Extract(w.Finish());
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(fs::exists(base_ / "outside/pwned"));
  // Relative variant.
  TarWriter w2;
  w2.Add("up", '2', "", 0777, "../outside");
  w2.Add("up/pwned2", '0', "owned");
  EXPECT_FALSE(Extract(w2.Finish()).ok());
  EXPECT_FALSE(fs::exists(base_ / "outside/pwned2"));
}

TEST_F(TarExtractTest, AFileReplacesASymlinkInsteadOfFollowingIt) {
  std::ofstream(base_ / "outside/target") << "original";
  TarWriter w;
  w.Add("link", '2', "", 0777, (base_ / "outside/target").string());
  w.Add("link", '0', "replaced");
  ASSERT_TRUE(Extract(w.Finish()).ok());
  std::ifstream in(base_ / "outside/target");
  std::string s;
  in >> s;
  EXPECT_EQ(s, "original");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(base_ / "root/link")));
}

TEST_F(TarExtractTest, HardLinksCannotReachOutside) {
  std::ofstream(base_ / "outside/secret") << "secret";
  TarWriter w;
  w.Add("h", '1', "", 0644, "../outside/secret");
  EXPECT_FALSE(Extract(w.Finish()).ok());
  TarWriter w2;
  w2.Add("l", '2', "", 0777, (base_ / "outside").string());
  w2.Add("h2", '1', "", 0644, "l/secret");
  EXPECT_FALSE(Extract(w2.Finish()).ok());
  EXPECT_FALSE(fs::exists(base_ / "root/h2"));
}

TEST_F(TarExtractTest, DropsDevicesAndSetuidBits) {
  TarWriter w;
  w.Add("mem", '3', "", 0666);
  w.Add("sda", '4', "", 0666);
  w.Add("fifo", '6', "", 0666);
  w.Add("su", '0', "binary", 04755);
  w.Add("sg", '0', "binary", 02755);
  auto st = Extract(w.Finish());
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->dropped_devices, 3u);
  EXPECT_EQ(st->dropped_setid_bits, 2u);
  EXPECT_FALSE(fs::exists(base_ / "root/mem"));
  EXPECT_FALSE(fs::exists(base_ / "root/fifo"));
  struct stat s;
  ASSERT_EQ(stat((base_ / "root/su").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0755u);
  ASSERT_EQ(stat((base_ / "root/sg").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0755u);
}

TEST_F(TarExtractTest, AppliesWhiteouts) {
  TarWriter w;
  w.Add("d/", '5', "", 0755);
  w.Add("d/a", '0', "a");
  w.Add("d/b", '0', "b");
  w.Add("e/", '5', "", 0755);
  w.Add("e/x", '0', "x");
  ASSERT_TRUE(Extract(w.Finish()).ok());
  TarWriter up;
  up.Add("d/.wh.a", '0', "");
  up.Add("e/.wh..wh..opq", '0', "");
  up.Add("e/y", '0', "y");
  ASSERT_TRUE(Extract(up.Finish()).ok());
  EXPECT_FALSE(fs::exists(base_ / "root/d/a"));
  EXPECT_TRUE(fs::exists(base_ / "root/d/b"));
  EXPECT_FALSE(fs::exists(base_ / "root/e/x"));
  EXPECT_TRUE(fs::exists(base_ / "root/e/y"));
  EXPECT_FALSE(fs::exists(base_ / "root/d/.wh.a"));
}

TEST_F(TarExtractTest, LinksRefusedWhereNotAllowed) {
  TarWriter w;
  w.Add("l", '2', "", 0777, "x");
  ExtractOptions o;
  o.allow_links = false;
  EXPECT_FALSE(Extract(w.Finish(), o).ok());
}

TEST(TarHeaderTest, RejectsBadChecksumAndTruncation) {
  TarWriter w;
  w.Add("f", '0', "hello");
  std::string a = w.Finish();
  a[0] = 'g';
  EXPECT_FALSE(ParseTarHeader(a.substr(0, 512)).ok());
  std::string zero(512, '\0');
  auto z = ParseTarHeader(zero);
  ASSERT_TRUE(z.ok());
  EXPECT_FALSE(z->has_value());
  TarWriter w2;
  w2.Add("f", '0', std::string(2000, 'x'));
  std::string t = w2.Finish().substr(0, 1024);
  TarReader r(FromString(t));
  auto e = r.Next();
  ASSERT_TRUE(e.ok());
  char buf[4096];
  EXPECT_FALSE(r.ReadData(buf, sizeof(buf)).ok() && r.ReadData(buf, sizeof(buf)).ok());
}

TEST(TarHeaderTest, CleanArchivePath) {
  EXPECT_EQ(*CleanArchivePath("./a//b/./c/"), "a/b/c");
  EXPECT_EQ(*CleanArchivePath("/etc/passwd"), "etc/passwd");
  EXPECT_EQ(*CleanArchivePath("."), "");
  EXPECT_FALSE(CleanArchivePath("a/../b").ok());
  EXPECT_FALSE(CleanArchivePath(std::string("a\0b", 3)).ok());
}

}  // namespace
}  // namespace warden::runtime
