#include "vault/object_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/encoding.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace warden::vault {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::Pattern;
using testing::ReadAll;

ByteSource FromString(const std::string& data) {
  auto pos = std::make_shared<size_t>(0);
  return [&data, pos](char* buf, size_t cap) -> absl::StatusOr<size_t> {
    size_t n = std::min(cap, data.size() - *pos);
    std::memcpy(buf, data.data() + *pos, n);
    *pos += n;
    return n;
  };
}

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen(uint64_t max_wraps = uint64_t{1} << 31) {
    store_.reset();
    keyring_.reset();
    auto mk = common::MasterKey::FromBytes(std::string(32, 'M'));
    KeyringOptions ko;
    ko.dir = dir_.path() + "/vault/keys";
    ko.max_wraps_per_version = max_wraps;
    keyring_ = std::move(*Keyring::Open(*mk, ko));
    ObjectStoreOptions so;
    so.root = dir_.path() + "/vault";
    so.chunk_size = 4096;
    auto s = ObjectStore::Open(*keyring_, so);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  absl::StatusOr<ObjectInfo> Put(std::string_view tenant, std::string_view name,
                                 const std::string& data, Labels labels = {}) {
    return store_->Put(tenant, name, labels, FromString(data));
  }
  struct Got {
    absl::Status status;
    std::string data;
    ObjectInfo info;
  };
  Got Get(std::string_view tenant, std::string_view name, uint64_t version = 0) {
    Got g;
    auto r = store_->Get(tenant, name, version, [&](std::string_view b) {
      g.data.append(b);
      return absl::OkStatus();
    });
    g.status = r.status();
    if (r.ok()) g.info = *r;
    return g;
  }
  std::string ContentPath(const ObjectInfo& i) {
    return dir_.path() + "/vault/tenants/" + i.tenant + "/objects/" + i.object_id + "/v" +
           std::to_string(i.version) + ".gwv";
  }
  std::string MetaPath(const ObjectInfo& i) {
    return dir_.path() + "/vault/tenants/" + i.tenant + "/objects/" + i.object_id + "/v" +
           std::to_string(i.version) + ".meta.json";
  }

  TempDir dir_;
  std::unique_ptr<Keyring> keyring_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(ObjectStoreTest, PutGetRoundTripWithMetadata) {
  std::string data = Pattern(3 * 4096 + 11);
  auto put = Put("acme", "datasets/mnist/train.bin", data, {{"kind", "dataset"}});
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->version, 1u);
  EXPECT_EQ(put->size, data.size());
  EXPECT_EQ(put->sha256_hex, common::Sha256Hex(data));
  EXPECT_EQ(put->labels.at("kind"), "dataset");
  auto got = Get("acme", "datasets/mnist/train.bin");
  ASSERT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(got.data, data);
  // The plaintext does not appear in the stored file.
  EXPECT_EQ(ReadAll(ContentPath(*put)).find(data.substr(100, 64)), std::string::npos);
  Reopen();
  auto again = Get("acme", "datasets/mnist/train.bin");
  ASSERT_TRUE(again.status.ok()) << again.status;
  EXPECT_EQ(again.data, data);
}

TEST_F(ObjectStoreTest, VersionsListAndDelete) {
  ASSERT_TRUE(Put("acme", "ckpt/a", "one").ok());
  ASSERT_TRUE(Put("acme", "ckpt/a", "two").ok());
  ASSERT_TRUE(Put("acme", "ckpt/b", "bee").ok());
  ASSERT_TRUE(Put("acme", "data/x", "").ok());
  EXPECT_EQ(Get("acme", "ckpt/a").data, "two");
  EXPECT_EQ(Get("acme", "ckpt/a", 1).data, "one");
  EXPECT_EQ(Get("acme", "data/x").data, "");
  auto list = store_->List("acme", "ckpt/");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "ckpt/a");
  EXPECT_EQ((*list)[0].version, 2u);
  EXPECT_EQ(store_->Versions("acme", "ckpt/a")->size(), 2u);
  ASSERT_TRUE(store_->Delete("acme", "ckpt/a").ok());
  EXPECT_EQ(Get("acme", "ckpt/a").status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->List("acme", "ckpt/")->size(), 1u);
  auto v3 = Put("acme", "ckpt/a", "three");
  EXPECT_EQ(v3->version, 3u) << "version numbers are never reused";
}

TEST_F(ObjectStoreTest, RefusesTraversalNamesAndBadTenants) {
  for (const char* bad : {"../../etc/passwd", "a/../../b", "/abs", "..", "a//b"}) {
    EXPECT_EQ(Put("acme", bad, "x").status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(Put("../acme", "x", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Get("acme", "../x").status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Put("acme", "x", "x", {{"bad key/", "v"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was created outside the vault root.
  EXPECT_FALSE(fs::exists(dir_.path() + "/etc"));
}

// Attack: tenant B asks for tenant A's object by its (guessed or leaked) id.
TEST_F(ObjectStoreTest, TenantCannotReadAnotherTenantsObjectById) {
  auto a = Put("acme", "secret", "acme's data");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(Put("beta", "own", "beta's data").ok());
  std::string got;
  auto sink = [&](std::string_view b) {
    got.append(b);
    return absl::OkStatus();
  };
  EXPECT_EQ(store_->GetById("beta", a->object_id, 0, sink).status().code(),
            absl::StatusCode::kNotFound);
  // Even with A's files copied into B's tree, metadata and ciphertext are bound to tenant A.
  std::string src = dir_.path() + "/vault/tenants/acme/objects/" + a->object_id;
  std::string dst = dir_.path() + "/vault/tenants/beta/objects/" + a->object_id;
  fs::copy(src, dst, fs::copy_options::recursive);
  EXPECT_EQ(store_->GetById("beta", a->object_id, 0, sink).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(got.empty());
}

// Attack: content file tampered on disk -> integrity error, and GetToFile leaves no plaintext.
TEST_F(ObjectStoreTest, TamperedContentFailsAndGetToFileLeavesNothing) {
  std::string data = Pattern(5 * 4096);
  auto put = Put("acme", "d", data);
  ASSERT_TRUE(put.ok());
  std::string path = ContentPath(*put);
  std::string ct = ReadAll(path);
  ct[ct.size() - 100] ^= 0x01;  // last chunk
  std::ofstream(path, std::ios::binary | std::ios::trunc) << ct;
  std::string out = dir_.path() + "/out.bin";
  auto r = store_->GetToFile("acme", "d", 0, out);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(out));
  for (const auto& f : fs::directory_iterator(dir_.path())) {
    EXPECT_EQ(f.path().filename().string().find("out.bin"), std::string::npos) << f.path();
  }
}

// Attack: the content (and metadata) of one object moved over another object of the tenant.
TEST_F(ObjectStoreTest, CiphertextMovedToAnotherObjectFails) {
  auto a = Put("acme", "a", Pattern(9000, 1));
  auto b = Put("acme", "b", Pattern(9000, 2));
  ASSERT_TRUE(a.ok() && b.ok());
  fs::copy_file(ContentPath(*a), ContentPath(*b), fs::copy_options::overwrite_existing);
  auto g = Get("acme", "b");
  EXPECT_EQ(g.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(g.data.empty());
  fs::copy_file(MetaPath(*a), MetaPath(*b), fs::copy_options::overwrite_existing);
  EXPECT_EQ(Get("acme", "b").status.code(), absl::StatusCode::kDataLoss);
}

TEST_F(ObjectStoreTest, RotationRewrapsWithoutTouchingContent) {
  auto a = Put("acme", "a", Pattern(20000, 1));
  auto b = Put("acme", "b", Pattern(100, 2));
  ASSERT_TRUE(a.ok() && b.ok());
  struct stat before_a {
  }, before_b{};
  ASSERT_EQ(::stat(ContentPath(*a).c_str(), &before_a), 0);
  ASSERT_EQ(::stat(ContentPath(*b).c_str(), &before_b), 0);
  std::string bytes_a = ReadAll(ContentPath(*a));
  std::string meta_a = ReadAll(MetaPath(*a));
  auto rep = store_->RotateTenantKey("acme", /*reencrypt=*/false);
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_EQ(rep->new_version, 2u);
  EXPECT_EQ(rep->rewrapped, 2u);
  struct stat after_a {
  }, after_b{};
  ASSERT_EQ(::stat(ContentPath(*a).c_str(), &after_a), 0);
  ASSERT_EQ(::stat(ContentPath(*b).c_str(), &after_b), 0);
  EXPECT_EQ(ReadAll(ContentPath(*a)), bytes_a) << "content bytes changed";
  EXPECT_EQ(before_a.st_ino, after_a.st_ino);
  EXPECT_EQ(before_a.st_mtim.tv_sec, after_a.st_mtim.tv_sec);
  EXPECT_EQ(before_a.st_mtim.tv_nsec, after_a.st_mtim.tv_nsec);
  EXPECT_EQ(before_b.st_ino, after_b.st_ino);
  EXPECT_EQ(before_b.st_mtim.tv_nsec, after_b.st_mtim.tv_nsec);
  EXPECT_NE(ReadAll(MetaPath(*a)), meta_a) << "metadata should carry the rewrapped key";
  // Old objects still read, now under version 2; new writes use version 2.
  auto g = Get("acme", "a");
  ASSERT_TRUE(g.status.ok()) << g.status;
  EXPECT_EQ(g.info.kek_version, 2u);
  EXPECT_EQ(g.data, Pattern(20000, 1));
  EXPECT_EQ(Put("acme", "c", "new")->kek_version, 2u);
  // Raising the minimum is safe after a complete rewrap.
  ASSERT_TRUE(keyring_->SetMinVersion("acme", 2, /*destroy_below=*/true).ok());
  EXPECT_TRUE(Get("acme", "a").status.ok());
  EXPECT_TRUE(Get("acme", "b").status.ok());
}

// Attack: a metadata file from before the rotation (an old backup) is put back after the
// minimum version was raised: its key version is refused.
TEST_F(ObjectStoreTest, KeyVersionBelowMinimumIsRefused) {
  auto a = Put("acme", "a", "payload");
  ASSERT_TRUE(a.ok());
  std::string old_meta = ReadAll(MetaPath(*a));
  ASSERT_TRUE(store_->RotateTenantKey("acme", false).ok());
  ASSERT_TRUE(keyring_->SetMinVersion("acme", 2, false).ok());
  std::ofstream(MetaPath(*a), std::ios::binary | std::ios::trunc) << old_meta;
  auto g = Get("acme", "a");
  EXPECT_EQ(g.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(g.status.message()).find("below the minimum"), std::string::npos);
  EXPECT_TRUE(g.data.empty());
}

TEST_F(ObjectStoreTest, ReencryptionReplacesContentAndKeepsPlaintext) {
  std::string data = Pattern(10000);
  auto a = Put("acme", "a", data);
  ASSERT_TRUE(a.ok());
  std::string before = ReadAll(ContentPath(*a));
  auto rep = store_->RotateTenantKey("acme", /*reencrypt=*/true);
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_EQ(rep->reencrypted, 1u);
  EXPECT_FALSE(fs::exists(ContentPath(*a))) << "old content file removed";
  auto g = Get("acme", "a");
  ASSERT_TRUE(g.status.ok()) << g.status;
  EXPECT_EQ(g.data, data);
  EXPECT_EQ(g.info.kek_version, 2u);
  Reopen();  // recovery must keep the new content file (it is referenced)
  EXPECT_EQ(Get("acme", "a").data, data);
}

TEST_F(ObjectStoreTest, UsageCounterRotatesTenantKeyAutomatically) {
  Reopen(/*max_wraps=*/2);
  EXPECT_EQ(Put("acme", "a", "1")->kek_version, 1u);
  EXPECT_EQ(Put("acme", "b", "2")->kek_version, 1u);
  EXPECT_EQ(Put("acme", "c", "3")->kek_version, 2u);
  EXPECT_EQ(Get("acme", "a").data, "1");
}

// Attack: read after the tenant's keys were shredded, even with the files restored from backup.
TEST_F(ObjectStoreTest, ReadAfterShredFailsEvenWithFilesRestored) {
  ASSERT_TRUE(Put("acme", "a", "secret").ok());
  ASSERT_TRUE(Put("beta", "b", "other").ok());
  std::string backup = dir_.path() + "/backup";
  fs::copy(dir_.path() + "/vault/tenants/acme", backup, fs::copy_options::recursive);
  ASSERT_TRUE(store_->ShredTenant("acme").ok());
  EXPECT_FALSE(fs::exists(dir_.path() + "/vault/tenants/acme"));
  fs::copy(backup, dir_.path() + "/vault/tenants/acme", fs::copy_options::recursive);
  auto g = Get("acme", "a");
  EXPECT_EQ(g.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(g.data.empty());
  EXPECT_EQ(Put("acme", "new", "x").status().code(), absl::StatusCode::kFailedPrecondition);
  Reopen();
  EXPECT_EQ(Get("acme", "a").status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get("beta", "b").data, "other") << "other tenants unaffected";
}

TEST_F(ObjectStoreTest, ResumableUploadSurvivesRestart) {
  std::string data = Pattern(10 * 4096 + 123);
  auto up = store_->BeginUpload("acme", "big", {{"k", "v"}});
  ASSERT_TRUE(up.ok()) << up.status();
  auto s1 = store_->AppendUpload("acme", up->upload_id, 0, std::string_view(data).substr(0, 15000));
  ASSERT_TRUE(s1.ok()) << s1.status();
  EXPECT_EQ(s1->received, 15000u);
  EXPECT_EQ(s1->durable, 3u * 4096);
  EXPECT_EQ(store_->AppendUpload("acme", up->upload_id, 100, "x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->List("acme", "")->empty()) << "an unfinished upload is invisible";
  Reopen();  // the buffered tail is lost; the durable prefix is verified and kept
  auto st = store_->UploadStatus("acme", up->upload_id);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->received, 3u * 4096);
  auto s2 = store_->AppendUpload("acme", up->upload_id, st->received,
                                 std::string_view(data).substr(st->received));
  ASSERT_TRUE(s2.ok()) << s2.status();
  auto info = store_->CommitUpload("acme", up->upload_id, common::Sha256Hex(data));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, data.size());
  EXPECT_EQ(Get("acme", "big").data, data);
  EXPECT_FALSE(fs::exists(dir_.path() + "/vault/tenants/acme/uploads/" + up->upload_id));
}

// The single file (other than state.json) ending in `suffix` under `dir`, or "".
std::string OnlyFileEnding(const std::string& dir, const std::string& suffix) {
  std::string found;
  for (const auto& f : fs::recursive_directory_iterator(dir)) {
    const std::string p = f.path().string();
    if (p.size() > suffix.size() && p.substr(p.size() - suffix.size()) == suffix) {
      if (!found.empty()) return "";
      found = p;
    }
  }
  return found;
}

std::string Xor(std::string_view a, std::string_view b) {
  std::string out(std::min(a.size(), b.size()), '\0');
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
  return out;
}

TEST_F(ObjectStoreTest, AttackAResumedUploadNeverSealsNewBytesUnderATornChunksNonce) {
  // A crash tears chunk 3 on the disk (its ciphertext half written, under plaintext A). The
  // client resumes and sends different bytes B for chunk 3. Sealing B under the same key and
  // nonce would make ciphertext(A) XOR ciphertext(B) = A XOR B visible to anyone holding a copy
  // of the disk from between crash and resume. The resumed upload must be under a new key.
  const std::string a = Pattern(5 * 4096 + 100, 1);
  std::string b = a;
  for (size_t i = 3 * 4096; i < b.size(); ++i) b[i] = static_cast<char>(b[i] ^ 0x5a);
  auto up = store_->BeginUpload("acme", "torn", {});
  ASSERT_TRUE(up.ok()) << up.status();
  auto s1 = store_->AppendUpload("acme", up->upload_id, 0, std::string_view(a).substr(0, 4 * 4096 + 100));
  ASSERT_TRUE(s1.ok()) << s1.status();
  ASSERT_EQ(s1->durable, 4u * 4096) << "chunk 3 is sealed and on disk";
  const std::string udir = dir_.path() + "/vault/tenants/acme/uploads/" + up->upload_id;
  const std::string part = OnlyFileEnding(udir, ".part");
  ASSERT_FALSE(part.empty());
  std::string header_bytes = ReadAll(part).substr(0, kMaxHeaderSize);
  size_t header_len = 0;
  ASSERT_TRUE(ParseHeader(header_bytes, &header_len).ok());
  const size_t ct = 4096 + kChunkTagSize;
  // The crash: the file ends halfway into chunk 3.
  const std::string torn = ReadAll(part).substr(header_len + 3 * ct, ct / 2);
  const std::string old_prefix = ReadAll(part).substr(header_len, 3 * ct);
  store_.reset();
  ASSERT_EQ(::truncate(part.c_str(), static_cast<off_t>(header_len + 3 * ct + ct / 2)), 0);
  Reopen();
  auto st = store_->UploadStatus("acme", up->upload_id);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->received, 3u * 4096) << "the torn chunk is not kept";
  ASSERT_TRUE(store_->AppendUpload("acme", up->upload_id, st->received,
                                   std::string_view(b).substr(st->received)).ok());
  auto info = store_->CommitUpload("acme", up->upload_id, common::Sha256Hex(b));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(Get("acme", "torn").data, b);
  const std::string content = ReadAll(OnlyFileEnding(dir_.path() + "/vault/tenants/acme/objects", ".gwv"));
  ASSERT_TRUE(ParseHeader(content.substr(0, kMaxHeaderSize), &header_len).ok());
  const std::string sealed_b = content.substr(header_len + 3 * ct, torn.size());
  ASSERT_EQ(sealed_b.size(), torn.size());
  EXPECT_TRUE(Xor(torn, sealed_b) != Xor(std::string_view(a).substr(3 * 4096, torn.size()),
                                          std::string_view(b).substr(3 * 4096, torn.size())))
      << "chunk 3 was sealed twice under one key and nonce";
  // The kept prefix was re-encrypted under the new key, and the old file is gone.
  EXPECT_TRUE(content.substr(header_len, 3 * ct) != old_prefix) << "the prefix kept its old key";
  EXPECT_FALSE(fs::exists(part));
}

TEST_F(ObjectStoreTest, AResumedUploadKeepsItsDurablePrefixAcrossRestarts) {
  // The re-key on resume writes every verified chunk to the new file (the last one provisionally,
  // not final): another restart before any new data must not lose it, and a commit with no new
  // data seals it final over its provisional copy (no empty final chunk for range reads).
  const std::string data = Pattern(2 * 4096 + 1, 3);
  auto up = store_->BeginUpload("acme", "twice", {});
  ASSERT_TRUE(up.ok()) << up.status();
  auto s1 = store_->AppendUpload("acme", up->upload_id, 0, data);
  ASSERT_TRUE(s1.ok()) << s1.status();
  ASSERT_EQ(s1->durable, 2u * 4096);
  for (int restart = 0; restart < 3; ++restart) {
    Reopen();
    auto st = store_->UploadStatus("acme", up->upload_id);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->received, 2u * 4096) << "restart " << restart;
    EXPECT_EQ(st->durable, 2u * 4096) << "restart " << restart;
  }
  // The client's data ends here (its last byte never arrived): commit the two whole chunks.
  const std::string kept = data.substr(0, 2 * 4096);
  auto info = store_->CommitUpload("acme", up->upload_id, common::Sha256Hex(kept));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, kept.size());
  EXPECT_EQ(Get("acme", "twice").data, kept);
  std::string ranged;
  auto r = store_->ReadChunks("acme", "twice", 0, 0, 16, [&](std::string_view b) {
    ranged.append(b);
    return absl::OkStatus();
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ranged, kept);
  const std::string content = ReadAll(OnlyFileEnding(dir_.path() + "/vault/tenants/acme/objects", ".gwv"));
  size_t header_len = 0;
  ASSERT_TRUE(ParseHeader(content.substr(0, kMaxHeaderSize), &header_len).ok());
  EXPECT_EQ(content.size(), header_len + 2 * (4096 + kChunkTagSize)) << "no chunk after the final one";
}

TEST_F(ObjectStoreTest, ANewerClaimStopsAnOlderStreamingWriter) {
  // A killed client's PUT can still be appending what was in flight when its successor reads
  // the status: after the successor's claim, the old writer's appends fail and `received` holds.
  std::string data = Pattern(3 * 4096);
  auto up = store_->BeginUpload("acme", "claimed", {});
  ASSERT_TRUE(up.ok()) << up.status();
  auto old_claim = store_->ClaimUpload("acme", up->upload_id);
  ASSERT_TRUE(old_claim.ok()) << old_claim.status();
  ASSERT_TRUE(store_->AppendUpload("acme", up->upload_id, 0, std::string_view(data).substr(0, 4096),
                                   old_claim->writer).ok());
  auto new_claim = store_->ClaimUpload("acme", up->upload_id);
  ASSERT_TRUE(new_claim.ok()) << new_claim.status();
  EXPECT_GT(new_claim->writer, old_claim->writer);
  EXPECT_EQ(new_claim->received, 4096u);
  auto late = store_->AppendUpload("acme", up->upload_id, 4096,
                                   std::string_view(data).substr(4096, 4096), old_claim->writer);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kAborted) << late.status();
  EXPECT_EQ(store_->UploadStatus("acme", up->upload_id)->received, 4096u);
  ASSERT_TRUE(store_->AppendUpload("acme", up->upload_id, 4096, std::string_view(data).substr(4096),
                                   new_claim->writer).ok());
  auto info = store_->CommitUpload("acme", up->upload_id, common::Sha256Hex(data));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(Get("acme", "claimed").data, data);
}

TEST_F(ObjectStoreTest, CommitWithWrongHashPublishesNothing) {
  auto up = store_->BeginUpload("acme", "x", {});
  ASSERT_TRUE(store_->AppendUpload("acme", up->upload_id, 0, "hello").ok());
  auto r = store_->CommitUpload("acme", up->upload_id, common::Sha256Hex("other"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Get("acme", "x").status.code(), absl::StatusCode::kNotFound);
}

TEST_F(ObjectStoreTest, RotationRewrapsUnfinishedUploads) {
  auto up = store_->BeginUpload("acme", "x", {});
  ASSERT_TRUE(store_->AppendUpload("acme", up->upload_id, 0, Pattern(9000)).ok());
  auto rep = store_->RotateTenantKey("acme", false);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->uploads_rewrapped, 1u);
  Reopen();
  ASSERT_TRUE(keyring_->SetMinVersion("acme", 2, true).ok());
  auto st = store_->UploadStatus("acme", up->upload_id);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_TRUE(store_
                  ->AppendUpload("acme", up->upload_id, st->received,
                                 std::string_view(Pattern(9000)).substr(st->received))
                  .ok());
  auto info = store_->CommitUpload("acme", up->upload_id, std::nullopt);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->kek_version, 2u);
  EXPECT_EQ(Get("acme", "x").data, Pattern(9000));
}

}  // namespace
}  // namespace warden::vault

namespace warden::vault {
namespace {

class ObjectStoreRangeTest : public ObjectStoreTest {
 protected:
  struct Range {
    absl::Status status;
    std::string data;
  };
  Range Read(std::string_view name, uint64_t first, uint64_t n) {
    Range r;
    r.status = store_
                   ->ReadChunks("acme", name, 0, first, n,
                                [&](std::string_view b) {
                                  r.data.append(b);
                                  return absl::OkStatus();
                                })
                   .status();
    return r;
  }
};

TEST_F(ObjectStoreRangeTest, ReadsWholeChunksInRanges) {
  for (size_t size : {size_t{0}, size_t{100}, size_t{4096}, size_t{3 * 4096 + 7}}) {
    std::string data = Pattern(size, static_cast<uint32_t>(size));
    std::string name = "r" + std::to_string(size);
    ASSERT_TRUE(Put("acme", name, data).ok());
    std::string joined;
    for (uint64_t first = 0;; first += 2) {
      auto r = Read(name, first, 2);
      if (r.status.code() == absl::StatusCode::kOutOfRange) break;
      ASSERT_TRUE(r.status.ok()) << size << " " << first << ": " << r.status;
      EXPECT_EQ(r.data, data.substr(std::min<size_t>(first * 4096, data.size()), 2 * 4096));
      joined += r.data;
    }
    EXPECT_EQ(joined, data) << size;
  }
}

// Attack: a range read of a tampered chunk, or with the recorded size changed so that another
// chunk would pass as the last one, fails and releases nothing of that chunk.
TEST_F(ObjectStoreRangeTest, TamperedChunkOrSizeFails) {
  std::string data = Pattern(4 * 4096 + 10);
  auto put = Put("acme", "t", data);
  ASSERT_TRUE(put.ok());
  std::string meta = ReadAll(MetaPath(*put));
  // Size shrunk to 3 full chunks: chunk 2 would be "final", but it was sealed as non-final.
  std::string shrunk = meta;
  std::string from = "\"size\": " + std::to_string(data.size());
  ASSERT_NE(shrunk.find(from), std::string::npos) << meta;
  shrunk.replace(shrunk.find(from), from.size(), "\"size\": " + std::to_string(3 * 4096));
  std::ofstream(MetaPath(*put), std::ios::binary | std::ios::trunc) << shrunk;
  auto r = Read("t", 2, 1);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.data.empty());
  std::ofstream(MetaPath(*put), std::ios::binary | std::ios::trunc) << meta;
  ASSERT_TRUE(Read("t", 2, 1).status.ok());
  std::string ct = ReadAll(ContentPath(*put));
  ct[ct.size() - 20] ^= 4;  // inside the last chunk
  std::ofstream(ContentPath(*put), std::ios::binary | std::ios::trunc) << ct;
  auto bad = Read("t", 3, 5);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(bad.data, data.substr(3 * 4096, 4096)) << "only the verified chunk before it";
}

}  // namespace
}  // namespace warden::vault
