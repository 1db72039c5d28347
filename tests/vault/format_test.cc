#include "vault/format.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace warden::vault {
namespace {

constexpr uint32_t kChunk = 4096;
constexpr size_t kCt = kChunk + kChunkTagSize;

std::string Pattern(size_t n, uint32_t seed = 1) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

ObjectHeader Header(std::string tenant = "acme", std::string object = "obj_a", uint64_t v = 1) {
  ObjectHeader h;
  h.chunk_size = kChunk;
  h.salt = std::string(32, 's');
  h.tenant = std::move(tenant);
  h.object_id = std::move(object);
  h.version = v;
  return h;
}

const std::string kKey(32, 'K');

std::string Encrypt(const std::string& plain, const ObjectHeader& h = Header(),
                    const std::string& key = kKey, size_t step = 1000) {
  std::string out;
  auto e = ObjectEncryptor::Create(key, h, [&](std::string_view b) {
    out.append(b);
    return absl::OkStatus();
  });
  EXPECT_TRUE(e.ok()) << e.status();
  for (size_t i = 0; i < plain.size(); i += step) {
    EXPECT_TRUE((*e)->Update(std::string_view(plain).substr(i, step)).ok());
  }
  EXPECT_TRUE((*e)->Finish().ok());
  return out;
}

struct DecryptResult {
  absl::Status status;
  std::string released;  // everything the sink was given
};

DecryptResult Decrypt(const std::string& ct, ObjectDecryptor::Expect expect = {"acme", "obj_a", 1},
                      const std::string& key = kKey, size_t step = 777) {
  DecryptResult r;
  auto d = ObjectDecryptor::Create(key, expect, [&](std::string_view b) {
    r.released.append(b);
    return absl::OkStatus();
  });
  if (!d.ok()) {
    r.status = d.status();
    return r;
  }
  for (size_t i = 0; i < ct.size() && r.status.ok(); i += step) {
    r.status = (*d)->Update(std::string_view(ct).substr(i, step));
  }
  if (r.status.ok()) r.status = (*d)->Finish();
  return r;
}

size_t HeaderLen(const std::string& ct) {
  size_t n = 0;
  EXPECT_TRUE(ParseHeader(ct, &n).ok());
  return n;
}

TEST(ObjectFormatTest, RoundTripsAtChunkEdges) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{kChunk - 1}, size_t{kChunk}, size_t{kChunk + 1},
                   size_t{3 * kChunk}, size_t{3 * kChunk + 5}}) {
    for (size_t step : {size_t{1} << 20, size_t{1000}, size_t{kChunk}}) {
      std::string plain = Pattern(n);
      std::string ct = Encrypt(plain, Header(), kKey, step);
      size_t chunks = n / kChunk + 1;  // a full last chunk is the final one when nothing follows
      if (n > 0 && n % kChunk == 0) chunks = n / kChunk;
      EXPECT_EQ(ct.size(), HeaderLen(ct) + n + chunks * kChunkTagSize) << n;
      auto r = Decrypt(ct);
      ASSERT_TRUE(r.status.ok()) << n << ": " << r.status;
      EXPECT_EQ(r.released, plain);
    }
  }
}

TEST(ObjectFormatTest, HashOfPlaintextMatchesBothWays) {
  std::string plain = Pattern(10000);
  std::string ct;
  auto e = ObjectEncryptor::Create(kKey, Header(), [&](std::string_view b) {
    ct.append(b);
    return absl::OkStatus();
  });
  ASSERT_TRUE((*e)->Update(plain).ok());
  ASSERT_TRUE((*e)->Finish().ok());
  auto d = ObjectDecryptor::Create(kKey, {"acme", "obj_a", 1},
                                   [](std::string_view) { return absl::OkStatus(); });
  ASSERT_TRUE((*d)->Update(ct).ok());
  ASSERT_TRUE((*d)->Finish().ok());
  internal::Sha256Stream h;
  h.Update(plain);
  std::string expect = h.Finish();
  EXPECT_EQ((*e)->sha256(), expect);
  EXPECT_EQ((*d)->sha256(), expect);
}

// Attack: a flipped bit anywhere (header, any chunk body, any tag) fails, and the chunk it is in
// never reaches the sink: only chunks before it (already verified) were released.
TEST(ObjectFormatAttackTest, FlippedBitAnywhereFailsAndReleasesNothingOfThatChunk) {
  std::string plain = Pattern(3 * kChunk + 100);
  std::string ct = Encrypt(plain);
  size_t h = HeaderLen(ct);
  for (size_t pos = 0; pos < ct.size(); pos += (pos < h ? 1 : 7)) {
    std::string bad = ct;
    bad[pos] ^= static_cast<char>(1u << (pos % 8));
    auto r = Decrypt(bad);
    ASSERT_FALSE(r.status.ok()) << "flip at " << pos;
    size_t chunk = pos < h ? 0 : (pos - h) / kCt;
    EXPECT_LE(r.released.size(), chunk * kChunk) << pos;
    EXPECT_EQ(r.released, plain.substr(0, r.released.size()));
  }
}

TEST(ObjectFormatAttackTest, DroppedChunkFails) {
  std::string plain = Pattern(3 * kChunk + 100);
  std::string ct = Encrypt(plain);
  size_t h = HeaderLen(ct);
  for (int i = 0; i < 4; ++i) {
    std::string bad = ct;
    bad.erase(h + i * kCt, kCt);
    auto r = Decrypt(bad);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss) << "dropped chunk " << i;
  }
}

TEST(ObjectFormatAttackTest, TruncationAtAnyPointFails) {
  std::string plain = Pattern(2 * kChunk + 10);
  std::string ct = Encrypt(plain);
  for (size_t len = 0; len < ct.size(); len += 13) {
    auto r = Decrypt(ct.substr(0, len));
    EXPECT_FALSE(r.status.ok()) << len;
  }
  EXPECT_FALSE(Decrypt(ct.substr(0, HeaderLen(ct) + 2 * kCt)).status.ok())
      << "cut exactly after the last full chunk";
}

TEST(ObjectFormatAttackTest, SwappedChunksFail) {
  std::string plain = Pattern(3 * kChunk + 100);
  std::string ct = Encrypt(plain);
  size_t h = HeaderLen(ct);
  std::string bad = ct;
  bad.replace(h, kCt, ct.substr(h + kCt, kCt));
  bad.replace(h + kCt, kCt, ct.substr(h, kCt));
  auto r = Decrypt(bad);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.released.empty());
}

TEST(ObjectFormatAttackTest, AppendedChunkFails) {
  std::string plain = Pattern(2 * kChunk);  // ends on a full final chunk
  std::string ct = Encrypt(plain);
  size_t h = HeaderLen(ct);
  EXPECT_FALSE(Decrypt(ct + ct.substr(h, kCt)).status.ok()) << "a copy of chunk 0 appended";
  // A chunk from a longer encryption of the same prefix under the same key appended.
  std::string longer = Encrypt(Pattern(3 * kChunk));
  EXPECT_FALSE(Decrypt(ct + longer.substr(h + 2 * kCt)).status.ok());
  EXPECT_FALSE(Decrypt(ct + "x").status.ok()) << "one trailing byte";
}

TEST(ObjectFormatAttackTest, CiphertextMovedToAnotherObjectVersionOrTenantFails) {
  std::string plain = Pattern(kChunk + 7);
  std::string ct = Encrypt(plain);
  // Presented as another object / version / tenant: the header does not match.
  EXPECT_EQ(Decrypt(ct, {"acme", "obj_b", 1}).status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Decrypt(ct, {"acme", "obj_a", 2}).status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Decrypt(ct, {"other", "obj_a", 1}).status.code(), absl::StatusCode::kDataLoss);
  // Header rewritten to name the target object (same key, as if the data key were reused): the
  // chunk keys and the associated data differ, so every chunk fails.
  std::string other = Encrypt(plain, Header("acme", "obj_b", 1));
  size_t ho = HeaderLen(other);
  size_t ha = HeaderLen(ct);
  std::string spliced = other.substr(0, ho) + ct.substr(ha);
  auto r = Decrypt(spliced, {"acme", "obj_b", 1});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.released.empty());
  // One chunk of object b placed into object a.
  std::string mixed = ct;
  mixed.replace(ha, kCt, other.substr(ho, kCt));
  EXPECT_EQ(Decrypt(mixed).status.code(), absl::StatusCode::kDataLoss);
}

TEST(ObjectFormatAttackTest, WrongKeyFails) {
  std::string ct = Encrypt(Pattern(100));
  auto r = Decrypt(ct, {"acme", "obj_a", 1}, std::string(32, 'X'));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.released.empty());
}

TEST(ObjectFormatTest, AChunkWrittenAheadIsSealedAgainOverItself) {
  // A sink that writes at a position, as a file does: WriteHeldAhead's copy of the held chunk is
  // overwritten by its next sealing (not final: the same bytes; final: a different nonce).
  for (size_t more : {size_t{0}, size_t{1}, size_t{kChunk} + 5}) {
    SCOPED_TRACE(more);
    const std::string plain = Pattern(2 * kChunk + more);
    std::string file;
    size_t pos = 0;
    auto e = ObjectEncryptor::Create(kKey, Header(), [&](std::string_view b) {
      if (file.size() < pos + b.size()) file.resize(pos + b.size());
      file.replace(pos, b.size(), b);
      pos += b.size();
      return absl::OkStatus();
    });
    ASSERT_TRUE(e.ok());
    ASSERT_TRUE((*e)->Update(std::string_view(plain).substr(0, 2 * kChunk)).ok());
    EXPECT_EQ((*e)->chunks_written(), 1u) << "the second chunk is held back";
    ASSERT_TRUE((*e)->WriteHeldAhead().ok());
    EXPECT_EQ((*e)->chunks_written(), 2u) << "and now on the sink too";
    const std::string ahead = file.substr(HeaderLen(file) + (kChunk + kChunkTagSize));
    // Its ciphertext opens as a non-final chunk: a reload keeps it.
    auto d = ObjectDecryptor::Create(
        kKey, {"acme", "obj_a", 1}, [](std::string_view) { return absl::OkStatus(); },
        /*expect_final=*/false);
    ASSERT_TRUE((*d)->Update(file).ok());
    ASSERT_TRUE((*d)->Finish().ok());
    EXPECT_EQ((*d)->chunks(), 2u);
    pos -= kChunk + kChunkTagSize;  // the owner seeks back over the copy
    ASSERT_TRUE((*e)->Update(std::string_view(plain).substr(2 * kChunk)).ok());
    ASSERT_TRUE((*e)->Finish().ok());
    file.resize(pos);
    const std::string again = file.substr(HeaderLen(file) + (kChunk + kChunkTagSize), ahead.size());
    if (more > 0) {
      EXPECT_EQ(again, ahead) << "not final again: the same bytes under the same nonce";
    } else {
      EXPECT_NE(again, ahead) << "final: its own nonce";
    }
    auto out = Decrypt(file);
    ASSERT_TRUE(out.status.ok()) << out.status;
    EXPECT_EQ(out.released, plain);
    EXPECT_EQ(file, Encrypt(plain)) << "the same object as without the write-ahead";
  }
}

TEST(ObjectHeaderTest, ParserRefusesMalformedHeaders) {
  std::string h = EncodeHeader(Header());
  size_t n = 0;
  ASSERT_TRUE(ParseHeader(h, &n).ok());
  EXPECT_EQ(n, h.size());
  EXPECT_TRUE(absl::IsUnavailable(ParseHeader(h.substr(0, 10), &n).status()));
  auto mutate = [&](size_t pos, char v) {
    std::string b = h;
    b[pos] = v;
    return ParseHeader(b, &n).status();
  };
  EXPECT_EQ(mutate(0, 'X').code(), absl::StatusCode::kDataLoss);   // magic
  EXPECT_EQ(mutate(4, 2).code(), absl::StatusCode::kDataLoss);     // format version
  EXPECT_EQ(mutate(5, 9).code(), absl::StatusCode::kDataLoss);     // algorithm
  EXPECT_EQ(mutate(7, 1).code(), absl::StatusCode::kDataLoss);     // length
  EXPECT_EQ(mutate(10, 3).code(), absl::StatusCode::kDataLoss);    // chunk size not 2^k
  EXPECT_EQ(mutate(44, 60).code(), absl::StatusCode::kDataLoss);   // tenant length
  EXPECT_EQ(mutate(45, '/').code(), absl::StatusCode::kDataLoss);  // tenant char
  std::string zero = h;
  for (size_t i = h.size() - 8; i < h.size(); ++i) zero[i] = 0;
  EXPECT_EQ(ParseHeader(zero, &n).status().code(), absl::StatusCode::kDataLoss);  // version 0
}

TEST(ObjectNameTest, RefusesTraversalAndOddNames) {
  for (const char* ok : {"a", "datasets/imagenet/train.tar", "ckpt-1.bin", "a.b/c_d", ".hidden"}) {
    EXPECT_TRUE(ValidateObjectName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "..", "../x", "a/../b", "a/..", "./a", "a/./b", "/abs", "a/", "a//b",
                          "a\\b", "a b", "a\nb", "%2e%2e/x"}) {
    EXPECT_EQ(ValidateObjectName(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ValidateObjectName(std::string(256, 'a')).ok());
  EXPECT_FALSE(ValidateObjectName(std::string("a\0b", 3)).ok());
}

}  // namespace
}  // namespace warden::vault
