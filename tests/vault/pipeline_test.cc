// The two-core transfer pipeline (PieceRing) and the object store paths that use it: order,
// bounded memory, errors from either thread, and reads that trust the recorded SHA-256 through
// the content digest tag instead of re-hashing (with the attacks that must still fail).
#include "vault/pipeline.h"

#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/encoding.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "vault/object_store.h"

namespace warden::vault {
namespace {

namespace fs = std::filesystem;
using internal::PieceRing;
using testing::Pattern;
using testing::ReadAll;
using testing::TempDir;

void WriteAllTo(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

// ---- PieceRing ----

TEST(PieceRingTest, DeliversEveryPieceInOrderWithBoundedPiecesInFlight) {
  std::string got;
  std::atomic<int> calls{0};
  PieceRing ring(100, 3, [&](std::string_view p) {
    // Slow consumer (a SHA-256 per piece), so the producer runs into the bound.
    std::string h = common::Sha256Hex(p);
    got.append(p);
    EXPECT_EQ(h.size(), 64u);
    ++calls;
    return absl::OkStatus();
  });
  std::string want;
  for (int i = 0; i < 200; ++i) {
    auto buf = ring.Acquire();
    ASSERT_TRUE(buf.ok()) << buf.status();
    std::string piece = Pattern(1 + (i * 37) % 100, static_cast<uint32_t>(i));
    std::memcpy(*buf, piece.data(), piece.size());
    ASSERT_TRUE(ring.Publish(piece.size()).ok());
    want += piece;
  }
  ASSERT_TRUE(ring.Finish().ok());
  EXPECT_EQ(calls.load(), 200);
  EXPECT_EQ(got, want);
  EXPECT_LE(ring.max_in_flight(), 3u) << "memory is bounded by the ring";
  EXPECT_GE(ring.max_in_flight(), 1u);
}

TEST(PieceRingTest, ConsumerErrorStopsProducer) {
  int calls = 0;
  PieceRing ring(16, 2, [&](std::string_view) {
    return ++calls == 3 ? absl::UnavailableError("disk full") : absl::OkStatus();
  });
  absl::Status seen;
  for (int i = 0; i < 1000 && seen.ok(); ++i) {
    auto buf = ring.Acquire();
    if (!buf.ok()) {
      seen = buf.status();
      break;
    }
    seen = ring.Publish(16);
  }
  EXPECT_EQ(seen.code(), absl::StatusCode::kUnavailable) << seen;
  EXPECT_EQ(ring.Finish().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 3) << "nothing is consumed after the first error";
}

TEST(PieceRingTest, ProducerThatGivesUpStopsTheHelper) {
  std::atomic<int> calls{0};
  {
    PieceRing ring(8, 4, [&](std::string_view) {
      ++calls;
      return absl::OkStatus();
    });
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(ring.Acquire().ok());
      ASSERT_TRUE(ring.Publish(8).ok());
    }
    ASSERT_TRUE(ring.Acquire().ok());  // abandoned while holding a piece
  }                                    // must not hang
  EXPECT_LE(calls.load(), 3);
}

TEST(PieceRingTest, FinishWithNothingPublishedAndMisuse) {
  PieceRing ring(8, 2, [](std::string_view) { return absl::InternalError("never called"); });
  EXPECT_EQ(ring.Publish(1).code(), absl::StatusCode::kInternal);  // no Acquire
  ASSERT_TRUE(ring.Acquire().ok());
  EXPECT_EQ(ring.Acquire().status().code(), absl::StatusCode::kInternal);  // twice
  EXPECT_TRUE(ring.Finish().ok());
}

// ---- object store over the pipeline ----

class StorePipelineTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(true, false); }
  void Open(bool pipeline, bool rehash) {
    store_.reset();
    keyring_.reset();
    auto mk = common::MasterKey::FromBytes(std::string(32, 'P'));
    KeyringOptions ko;
    ko.dir = dir_.path() + "/vault/keys";
    keyring_ = std::move(*Keyring::Open(*mk, ko));
    ObjectStoreOptions so;
    so.root = dir_.path() + "/vault";
    so.chunk_size = 4096;
    so.pipeline = pipeline;
    so.pipeline_piece_size = 10000;  // not a multiple of the chunk: pieces split chunks
    so.pipeline_pieces = 3;
    so.rehash_on_read = rehash;
    auto s = ObjectStore::Open(*keyring_, so);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  absl::StatusOr<ObjectInfo> PutFile(const std::string& name, const std::string& data) {
    std::string in = dir_.path() + "/in.bin";
    WriteAllTo(in, data);
    return store_->PutFile("acme", name, {}, in);
  }
  // GetToFile into dir_/out.bin; returns the status and, on success, the file's bytes.
  absl::StatusOr<std::string> GetFile(const std::string& name) {
    std::string out = dir_.path() + "/out.bin";
    std::error_code ec;
    fs::remove(out, ec);
    auto r = store_->GetToFile("acme", name, 0, out);
    if (!r.ok()) return r.status();
    return ReadAll(out);
  }
  // No plaintext output and no partial file left next to it.
  void ExpectNoOutput() {
    for (const auto& f : fs::directory_iterator(dir_.path())) {
      EXPECT_EQ(f.path().filename().string().find("out.bin"), std::string::npos) << f.path();
    }
  }
  std::string ObjectDir(const ObjectInfo& i) {
    return dir_.path() + "/vault/tenants/acme/objects/" + i.object_id;
  }
  std::string ContentPath(const ObjectInfo& i) {
    return ObjectDir(i) + "/v" + std::to_string(i.version) + ".gwv";
  }
  std::string MetaPath(const ObjectInfo& i) {
    return ObjectDir(i) + "/v" + std::to_string(i.version) + ".meta.json";
  }
  void EditMeta(const ObjectInfo& i, const std::function<void(common::Json&)>& edit) {
    common::Json j = common::Json::parse(ReadAll(MetaPath(i)));
    edit(j);
    WriteAllTo(MetaPath(i), j.dump(1));
  }
  bool NothingPublishedOrPending() {
    auto list = store_->List("acme", "");
    std::error_code ec;
    bool no_uploads = !fs::exists(dir_.path() + "/vault/tenants/acme/uploads", ec) ||
                      fs::is_empty(dir_.path() + "/vault/tenants/acme/uploads", ec);
    return list.ok() && list->empty() && no_uploads;
  }

  TempDir dir_;
  std::unique_ptr<Keyring> keyring_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(StorePipelineTest, RoundTripsEverySizeWithTheSameDigestAsOneThread) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{10000},
                   size_t{30000}, size_t{30001}, size_t{123457}}) {
    std::string data = Pattern(n, static_cast<uint32_t>(n));
    auto put = PutFile("f" + std::to_string(n), data);
    ASSERT_TRUE(put.ok()) << n << ": " << put.status();
    EXPECT_EQ(put->size, n);
    EXPECT_EQ(put->sha256_hex, common::Sha256Hex(data)) << n;
    auto got = GetFile("f" + std::to_string(n));
    ASSERT_TRUE(got.ok()) << n << ": " << got.status();
    EXPECT_EQ(*got, data) << n;
  }
  // The same objects read back by the one-thread path, and with re-hashing.
  Open(false, true);
  auto got = GetFile("f123457");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Pattern(123457, 123457));
}

TEST_F(StorePipelineTest, ReadErrorOnTheCallingThreadPublishesNothing) {
  size_t served = 0;
  auto r = store_->Put("acme", "broken", {}, [&](char* buf, size_t cap) -> absl::StatusOr<size_t> {
    if (served >= 50000) return absl::UnavailableError("input device went away");
    size_t n = std::min<size_t>(cap, 7000);
    std::memset(buf, 'x', n);
    served += n;
    return n;
  });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("went away"), std::string::npos);
  EXPECT_TRUE(NothingPublishedOrPending());
}

// Write errors are injected with RLIMIT_FSIZE (writes past the limit fail with EFBIG; SIGXFSZ
// is ignored). ctest runs every test in its own process, so the limit stays in this test.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit lim = old_;
    lim.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() { ::setrlimit(RLIMIT_FSIZE, &old_); }

 private:
  rlimit old_{};
};

TEST_F(StorePipelineTest, WriteErrorDuringPutPublishesNothing) {
  std::string data = Pattern(300000);
  std::string in = dir_.path() + "/in.bin";
  WriteAllTo(in, data);
  absl::StatusOr<ObjectInfo> r;
  {
    FileSizeLimit limit(100000);
    r = store_->PutFile("acme", "big", {}, in);
  }
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(NothingPublishedOrPending());
}

// Download modes: (pipeline, rehash) = two threads opening chunks; a PieceRing whose helper
// hashes and writes; one thread.
const std::pair<bool, bool> kModes[] = {{true, false}, {true, true}, {false, false}};

TEST_F(StorePipelineTest, WriteErrorOnEitherThreadLeavesNoOutput) {
  std::string data = Pattern(300000);
  ASSERT_TRUE(PutFile("big", data).ok());
  for (auto [pipeline, rehash] : kModes) {
    Open(pipeline, rehash);
    absl::StatusOr<std::string> got;
    {
      FileSizeLimit limit(100000);  // plaintext writes past ~100 KB fail, on whichever thread
      got = GetFile("big");
    }
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << rehash << got.status();
    ExpectNoOutput();
    auto again = GetFile("big");  // nothing stuck: the next read works
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, data);
  }
}

// ---- reads that trust the recorded SHA-256 through the digest tag ----

TEST_F(StorePipelineTest, StoredVersionsCarryADigestTag) {
  auto put = PutFile("d", Pattern(20000));
  ASSERT_TRUE(put.ok());
  common::Json j = common::Json::parse(ReadAll(MetaPath(*put)));
  ASSERT_TRUE(j.contains("digest_tag"));
  EXPECT_EQ(j["digest_tag"].get<std::string>().size(), 64u);
}

// Attack: the recorded SHA-256 (what `dataset show` prints and clients compare with) is changed
// on disk. Reads do not re-hash, so only the digest tag can catch it.
TEST_F(StorePipelineTest, AlteredRecordedDigestFailsWithoutRehash) {
  std::string data = Pattern(20000);
  auto put = PutFile("d", data);
  ASSERT_TRUE(put.ok());
  EditMeta(*put, [&](common::Json& j) { j["sha256"] = common::Sha256Hex("something else"); });
  auto got = GetFile("d");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_NE(std::string(got.status().message()).find("digest tag"), std::string::npos);
  ExpectNoOutput();
  std::string seen;
  auto r = store_->Get("acme", "d", 0, [&](std::string_view b) {
    seen.append(b);
    return absl::OkStatus();
  });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(StorePipelineTest, AlteredRecordedSizeOrTagFails) {
  auto put = PutFile("d", Pattern(20000));
  ASSERT_TRUE(put.ok());
  std::string meta = ReadAll(MetaPath(*put));
  EditMeta(*put, [&](common::Json& j) { j["size"] = 19999; });
  EXPECT_EQ(GetFile("d").status().code(), absl::StatusCode::kDataLoss);
  WriteAllTo(MetaPath(*put), meta);
  EditMeta(*put, [&](common::Json& j) {
    std::string t = j["digest_tag"].get<std::string>();
    t[0] = t[0] == '0' ? '1' : '0';
    j["digest_tag"] = t;
  });
  EXPECT_EQ(GetFile("d").status().code(), absl::StatusCode::kDataLoss);
  WriteAllTo(MetaPath(*put), meta);
  EXPECT_TRUE(GetFile("d").ok());
}

// A version without a tag (written before tags existed, or the tag deleted by an attacker) is
// re-hashed: deleting the tag does not switch verification off.
TEST_F(StorePipelineTest, VersionWithoutTagIsRehashed) {
  std::string data = Pattern(20000);
  auto put = PutFile("d", data);
  ASSERT_TRUE(put.ok());
  EditMeta(*put, [&](common::Json& j) { j.erase("digest_tag"); });
  auto ok = GetFile("d");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, data);
  EditMeta(*put, [&](common::Json& j) { j["sha256"] = common::Sha256Hex("something else"); });
  auto bad = GetFile("d");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(bad.status().message()).find("SHA-256"), std::string::npos);
  ExpectNoOutput();
}

// A tag copied from another version of the same object does not vouch for this one.
TEST_F(StorePipelineTest, TagFromAnotherVersionFails) {
  auto v1 = PutFile("d", Pattern(20000, 1));
  auto v2 = PutFile("d", Pattern(20000, 2));
  ASSERT_TRUE(v1.ok() && v2.ok());
  common::Json j1 = common::Json::parse(ReadAll(MetaPath(*v1)));
  EditMeta(*v2, [&](common::Json& j) {
    j["sha256"] = j1["sha256"];
    j["digest_tag"] = j1["digest_tag"];
  });
  EXPECT_EQ(GetFile("d").status().code(), absl::StatusCode::kDataLoss);
}

// The chunk attacks, on the path that no longer re-hashes: each must fail on its own.
TEST_F(StorePipelineTest, ChunkAttacksFailOnEveryDownloadPath) {
  const size_t ct = 4096 + kChunkTagSize;
  std::string data = Pattern(5 * 4096 + 100);  // 6 chunks, the last one short
  auto put = PutFile("d", data);
  ASSERT_TRUE(put.ok());
  const std::string path = ContentPath(*put);
  const std::string good = ReadAll(path);
  const size_t header = good.size() - 5 * ct - (100 + kChunkTagSize);
  struct Attack {
    const char* what;
    std::function<std::string(std::string)> edit;
  };
  std::vector<Attack> attacks = {
      {"flipped bit in chunk 2",
       [&](std::string c) {
         c[header + 2 * ct + 7] ^= 0x40;
         return c;
       }},
      {"tampered final chunk",
       [&](std::string c) {
         c[c.size() - 1] ^= 0x01;
         return c;
       }},
      {"truncated at a chunk boundary",
       [&](std::string c) { return c.substr(0, header + 5 * ct); }},
      {"truncated mid-chunk", [&](std::string c) { return c.substr(0, header + 3 * ct + 9); }},
      {"chunks 1 and 2 swapped",
       [&](std::string c) {
         std::string a = c.substr(header + ct, ct), b = c.substr(header + 2 * ct, ct);
         c.replace(header + ct, ct, b);
         c.replace(header + 2 * ct, ct, a);
         return c;
       }},
      {"chunk 3 dropped", [&](std::string c) { return c.erase(header + 3 * ct, ct); }},
      {"chunk 0 duplicated",
       [&](std::string c) { return c.insert(header + ct, c.substr(header, ct)); }},
      {"chunk appended after the final one",
       [&](std::string c) { return c + c.substr(header, ct); }},
  };
  for (auto [pipeline, rehash] : kModes) {
    Open(pipeline, rehash);
    for (const auto& a : attacks) {
      WriteAllTo(path, a.edit(good));
      auto got = GetFile("d");
      EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss)
          << a.what << " (pipeline " << pipeline << ", rehash " << rehash << "): " << got.status();
      ExpectNoOutput();
    }
  }
  WriteAllTo(path, good);
  auto ok = GetFile("d");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, data);
}

TEST_F(StorePipelineTest, ReencryptionWritesAFreshTagAndRewrapKeepsIt) {
  std::string data = Pattern(30000);
  auto put = PutFile("d", data);
  ASSERT_TRUE(put.ok());
  std::string tag1 = common::Json::parse(ReadAll(MetaPath(*put)))["digest_tag"];
  ASSERT_TRUE(store_->RotateTenantKey("acme", false).ok());
  EXPECT_EQ(common::Json::parse(ReadAll(MetaPath(*put)))["digest_tag"], tag1);
  ASSERT_TRUE(store_->RotateTenantKey("acme", true).ok());
  std::string tag2 = common::Json::parse(ReadAll(MetaPath(*put)))["digest_tag"];
  EXPECT_EQ(tag2.size(), 64u);
  EXPECT_NE(tag2, tag1) << "a fresh data key gives a fresh tag";
  auto got = GetFile("d");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, data);
}

}  // namespace
}  // namespace warden::vault
