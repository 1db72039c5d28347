#include "audit/checkpoint.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace warden::audit {
namespace {

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

AuditSigningKey NewKey() {
  absl::StatusOr<AuditSigningKey> key = AuditSigningKey::Generate();
  EXPECT_TRUE(key.ok()) << key.status();
  return *std::move(key);
}

MerkleTree TreeOf(uint64_t n) {
  MerkleTree tree;
  for (uint64_t i = 0; i < n; ++i) tree.Append(LeafHash("event " + std::to_string(i)));
  return tree;
}

// A chain of checkpoints over `tree` at the given sizes, one second apart.
std::vector<Checkpoint> ChainOf(const AuditSigningKey& key, const MerkleTree& tree,
                                const std::vector<uint64_t>& sizes) {
  std::vector<Checkpoint> chain;
  for (uint64_t size : sizes) {
    absl::StatusOr<MerkleHash> root = tree.RootAt(size);
    EXPECT_TRUE(root.ok());
    absl::StatusOr<Checkpoint> cp =
        SignNextCheckpoint(key, chain.empty() ? nullptr : &chain.back(), size, *root,
                           1'700'000'000'000 + static_cast<int64_t>(chain.size()) * 1000);
    EXPECT_TRUE(cp.ok()) << cp.status();
    chain.push_back(*std::move(cp));
  }
  return chain;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ckpt_test_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
    EXPECT_FALSE(path_.empty());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Checkpoint Sample(const AuditSigningKey& key) {
  MerkleTree tree = TreeOf(7);
  absl::StatusOr<Checkpoint> cp = SignCheckpoint(key, 3, 7, tree.Root(), 1'700'000'123'456,
                                                 LeafHash("previous body"));
  EXPECT_TRUE(cp.ok()) << cp.status();
  return *std::move(cp);
}

// ---- Keys ----

TEST(AuditSigningKeyTest, KeyIdIsSixteenHexOfPublicKeyHash) {
  AuditSigningKey key = NewKey();
  EXPECT_EQ(key.KeyId().size(), 16u);
  EXPECT_EQ(key.RawPublicKey().size(), 32u);
  AuditSigningKey other = NewKey();
  EXPECT_NE(key.KeyId(), other.KeyId());
  absl::StatusOr<AuditVerifyingKey> pub = AuditVerifyingKey::FromPem(key.PublicKeyPem());
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(pub->KeyId(), key.KeyId());
  EXPECT_NE(key.PublicKeyPem().find("BEGIN PUBLIC KEY"), std::string::npos);
}

TEST(AuditSigningKeyTest, LoadOrCreateCreatesMode0600AndLoadsTheSameKeyAgain) {
  TempDir dir;
  std::string path = dir.path() + "/audit.key";
  absl::StatusOr<AuditSigningKey> created = AuditSigningKey::LoadOrCreate(path);
  ASSERT_TRUE(created.ok()) << created.status();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(path);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(contents.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);

  absl::StatusOr<AuditSigningKey> loaded = AuditSigningKey::LoadOrCreate(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->KeyId(), created->KeyId());
  EXPECT_EQ(loaded->PublicKeyPem(), created->PublicKeyPem());
  // A checkpoint signed by the loaded key verifies with the created key's public key.
  EXPECT_TRUE(VerifyCheckpoint(Sample(*loaded), created->PublicKeyPem()).ok());
}

TEST(AuditSigningKeyTest, RefusesKeyFileReadableByOthers) {
  TempDir dir;
  std::string path = dir.path() + "/audit.key";
  ASSERT_TRUE(AuditSigningKey::LoadOrCreate(path).ok());
  for (mode_t mode : {0644, 0640, 0604, 0602, 0620}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    absl::StatusOr<AuditSigningKey> key = AuditSigningKey::LoadOrCreate(path);
    ASSERT_FALSE(key.ok()) << std::oct << mode;
    EXPECT_EQ(key.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(Msg(key.status()).find(path), std::string::npos) << key.status();
  }
}

TEST(AuditSigningKeyTest, UnparsableKeyFileIsDataLossNamingTheFile) {
  TempDir dir;
  std::string path = dir.path() + "/audit.key";
  for (std::string contents : {std::string("not a key\n"), std::string(""),
                               std::string("-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                           "-----END PRIVATE KEY-----\n")}) {
    std::filesystem::remove(path);
    { std::ofstream(path) << contents; }
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    absl::StatusOr<AuditSigningKey> key = AuditSigningKey::LoadOrCreate(path);
    ASSERT_FALSE(key.ok());
    EXPECT_EQ(key.status().code(), absl::StatusCode::kDataLoss) << key.status();
    EXPECT_NE(Msg(key.status()).find(path), std::string::npos) << key.status();
  }
}

TEST(AuditSigningKeyTest, RefusesSymlinkedKeyFile) {
  TempDir dir;
  std::string target = dir.path() + "/real.key";
  std::string link = dir.path() + "/audit.key";
  ASSERT_TRUE(AuditSigningKey::LoadOrCreate(target).ok());
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  absl::StatusOr<AuditSigningKey> key = AuditSigningKey::LoadOrCreate(link);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kFailedPrecondition) << key.status();
}

TEST(AuditVerifyingKeyTest, RejectsGarbageAndNonEd25519Pem) {
  EXPECT_EQ(AuditVerifyingKey::FromPem("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AuditVerifyingKey::FromPem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // A P-256 public key: valid PEM, wrong algorithm.
  EVP_PKEY* ec = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(ec, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PUBKEY(bio, ec), 1);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  absl::StatusOr<AuditVerifyingKey> p256 = AuditVerifyingKey::FromPem(pem);
  ASSERT_FALSE(p256.ok());
  EXPECT_NE(Msg(p256.status()).find("not an Ed25519 key"), std::string::npos) << p256.status();
  EXPECT_EQ(p256.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- One checkpoint ----

TEST(CheckpointTest, SignVerifyRoundTrip) {
  AuditSigningKey key = NewKey();
  Checkpoint cp = Sample(key);
  EXPECT_EQ(cp.key_id, key.KeyId());
  EXPECT_EQ(cp.signature.size(), 64u);
  EXPECT_TRUE(VerifyCheckpoint(cp, key.PublicKeyPem()).ok());
  EXPECT_TRUE(VerifyCheckpoint(cp, AuditVerifyingKey::FromSigningKey(key)).ok());

  for (int field = 0; field < 5; ++field) {
    Checkpoint bad = cp;
    switch (field) {
      case 0: ++bad.seq; break;
      case 1: ++bad.tree_size; break;
      case 2: bad.root[31] ^= 1; break;
      case 3: ++bad.time_ms; break;
      case 4: bad.prev[0] ^= 0x80; break;
    }
    absl::Status s = VerifyCheckpoint(bad, key.PublicKeyPem());
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << "field " << field << ": " << s;
  }
}

TEST(CheckpointTest, EncodesTheDocumentedFormat) {
  AuditSigningKey key = NewKey();
  absl::StatusOr<Checkpoint> cp = SignCheckpoint(key, 0, 0, EmptyRootHash(), 0, MerkleHash{});
  ASSERT_TRUE(cp.ok());
  EXPECT_EQ(cp->Body(),
            "gpuwarden-audit-checkpoint/v1\n0\n0\n"
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n0\n"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
  std::string text = cp->Encode();
  ASSERT_EQ(text.rfind(cp->Body(), 0), 0u);
  std::string tail = text.substr(cp->Body().size());
  EXPECT_EQ(tail.substr(0, 5), "\nsig ");
  EXPECT_EQ(tail.substr(5, 16), key.KeyId());
  EXPECT_EQ(tail.size(), 5 + 16 + 1 + 88 + 1u);
  EXPECT_EQ(tail.back(), '\n');
}

TEST(CheckpointTest, EncodeParseRoundTrip) {
  AuditSigningKey key = NewKey();
  Checkpoint cp = Sample(key);
  absl::StatusOr<Checkpoint> parsed = ParseCheckpoint(cp.Encode());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, cp);
  EXPECT_EQ(parsed->Encode(), cp.Encode());
  EXPECT_TRUE(VerifyCheckpoint(*parsed, key.PublicKeyPem()).ok());

  // The extremes of every number survive the round trip.
  absl::StatusOr<Checkpoint> big =
      SignCheckpoint(key, UINT64_MAX, UINT64_MAX, cp.root, INT64_MAX, cp.prev);
  ASSERT_TRUE(big.ok());
  absl::StatusOr<Checkpoint> big_parsed = ParseCheckpoint(big->Encode());
  ASSERT_TRUE(big_parsed.ok()) << big_parsed.status();
  EXPECT_EQ(*big_parsed, *big);
  EXPECT_TRUE(VerifyCheckpoint(*big_parsed, key.PublicKeyPem()).ok());
}

TEST(CheckpointTest, SignRefusesNegativeTime) {
  AuditSigningKey key = NewKey();
  EXPECT_EQ(SignCheckpoint(key, 0, 0, EmptyRootHash(), -1, MerkleHash{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, ParseNamesTheBadLine) {
  AuditSigningKey key = NewKey();
  std::string good = Sample(key).Encode();
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < good.size();) {
    size_t nl = good.find('\n', pos);
    lines.push_back(good.substr(pos, nl - pos));
    pos = nl + 1;
  }
  ASSERT_EQ(lines.size(), 8u);
  auto with = [&](size_t index, std::string replacement) {
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) out += (i == index ? replacement : lines[i]) + "\n";
    return out;
  };
  struct Case {
    size_t index;
    std::string replacement;
    std::string line;  // expected "checkpoint line N"
  };
  const std::vector<Case> cases = {
      {0, "gpuwarden-audit-checkpoint/v2", "line 1"},
      {1, "03", "line 2"},
      {1, "+3", "line 2"},
      {1, "-3", "line 2"},
      {1, "", "line 2"},
      {1, "18446744073709551616", "line 2"},  // 2^64 overflows uint64
      {2, "007", "line 3"},
      {2, " 7", "line 3"},
      {3, lines[3].substr(0, 43), "line 4"},
      {3, lines[3] + "=", "line 4"},
      {3, lines[3].substr(0, 43) + "A", "line 4"},
      {4, "9223372036854775808", "line 5"},
      {4, "-1", "line 5"},
      {5, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", "line 6"},  // unused bits set
      {6, " ", "line 7"},
      {7, "sig  " + lines[7].substr(4), "line 8"},
      {7, "SIG " + lines[7].substr(4), "line 8"},
      {7, "sig " + std::string(16, 'A') + lines[7].substr(20), "line 8"},
      {7, lines[7].substr(0, lines[7].size() - 4), "line 8"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Checkpoint> parsed = ParseCheckpoint(with(c.index, c.replacement));
    ASSERT_FALSE(parsed.ok()) << c.replacement;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(Msg(parsed.status()).find("checkpoint " + c.line), std::string::npos)
        << c.replacement << " -> " << parsed.status();
  }
  // Line structure.
  EXPECT_FALSE(ParseCheckpoint(good.substr(0, good.size() - 1)).ok());  // no final newline
  EXPECT_FALSE(ParseCheckpoint(good + "\n").ok());                       // a ninth line
  EXPECT_FALSE(ParseCheckpoint(good + good).ok());
  EXPECT_FALSE(ParseCheckpoint("").ok());
  EXPECT_FALSE(ParseCheckpoint(std::string(2000, '\n')).ok());
}

// Every single-byte substitution, deletion and insertion in an encoded checkpoint is caught by
// the parser or by signature verification: the encoding is canonical and fully covered.
TEST(CheckpointTest, EverySingleByteChangeIsRejected) {
  AuditSigningKey key = NewKey();
  AuditVerifyingKey pub = AuditVerifyingKey::FromSigningKey(key);
  const std::string good = Sample(key).Encode();
  auto accepted = [&](const std::string& text) {
    absl::StatusOr<Checkpoint> cp = ParseCheckpoint(text);
    return cp.ok() && VerifyCheckpoint(*cp, pub).ok();
  };
  ASSERT_TRUE(accepted(good));
  int tried = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (int b = 0; b < 256; ++b) {
      if (static_cast<char>(b) == good[i]) continue;
      std::string changed = good;
      changed[i] = static_cast<char>(b);
      ASSERT_FALSE(accepted(changed)) << "byte " << i << " set to " << b;
      ++tried;
    }
    std::string deleted = good;
    deleted.erase(i, 1);
    ASSERT_FALSE(accepted(deleted)) << "byte " << i << " deleted";
    for (char c : {'0', 'A', '\n', ' ', '='}) {
      std::string inserted = good;
      inserted.insert(i, 1, c);
      ASSERT_FALSE(accepted(inserted)) << "'" << c << "' inserted at " << i;
    }
  }
  EXPECT_EQ(tried, static_cast<int>(good.size()) * 255);
}

TEST(CheckpointTest, ResignedWithAnotherKeyIsRejected) {
  AuditSigningKey key = NewKey();
  AuditSigningKey attacker = NewKey();
  Checkpoint cp = Sample(key);
  absl::StatusOr<Checkpoint> forged =
      SignCheckpoint(attacker, cp.seq, cp.tree_size, cp.root, cp.time_ms, cp.prev);
  ASSERT_TRUE(forged.ok());
  absl::Status s = VerifyCheckpoint(*forged, key.PublicKeyPem());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  // Even when the forger writes the right key id, the signature gives it away.
  forged->key_id = key.KeyId();
  s = VerifyCheckpoint(*forged, key.PublicKeyPem());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(Msg(s).find("signature"), std::string::npos) << s;
  // And the right signature with a wrong key id is refused too.
  Checkpoint renamed = cp;
  renamed.key_id = attacker.KeyId();
  EXPECT_EQ(VerifyCheckpoint(renamed, key.PublicKeyPem()).code(), absl::StatusCode::kDataLoss);
}

TEST(CheckpointTest, VerifyWithUnparsablePemIsInvalidArgument) {
  AuditSigningKey key = NewKey();
  EXPECT_EQ(VerifyCheckpoint(Sample(key), "nope").code(), absl::StatusCode::kInvalidArgument);
}

// libFuzzer-style robustness loop (deterministic, bounded) until fuzz/ gets a checkpoint target:
// random bytes, and random mutations of a valid encoding, never crash the parser, and whatever
// parses re-encodes to exactly the input (one encoding per checkpoint).
TEST(CheckpointTest, ParserNeverCrashesOnRandomInput) {
  AuditSigningKey key = NewKey();
  const std::string good = Sample(key).Encode();
  std::mt19937_64 rng(20261126);
  int parsed_ok = 0;
  for (int iter = 0; iter < 50'000; ++iter) {
    std::string input;
    if (iter % 2 == 0) {
      input.resize(rng() % 400);
      for (char& c : input) c = static_cast<char>(rng());
      if (iter % 4 == 0) {  // bias towards the structure: mostly newlines and base64 characters
        for (char& c : input) c = "0123456789AZaz+/=\n sig"[rng() % 23];
      }
    } else {
      input = good;
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !input.empty(); ++e) {
        size_t pos = rng() % input.size();
        switch (rng() % 3) {
          case 0: input[pos] = static_cast<char>(rng()); break;
          case 1: input.erase(pos, 1 + rng() % 8); break;
          case 2: input.insert(pos, std::string(1 + rng() % 3, static_cast<char>(rng()))); break;
        }
      }
    }
    absl::StatusOr<Checkpoint> cp = ParseCheckpoint(input);
    if (cp.ok()) {
      ++parsed_ok;
      ASSERT_EQ(cp->Encode(), input);
      if (input != good) {
        ASSERT_FALSE(VerifyCheckpoint(*cp, AuditVerifyingKey::FromSigningKey(key)).ok());
      }
    } else {
      ASSERT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  (void)parsed_ok;
}

// ---- Chains ----

class CheckpointChainTest : public ::testing::Test {
 protected:
  CheckpointChainTest()
      : key_(NewKey()),
        pub_(AuditVerifyingKey::FromSigningKey(key_)),
        tree_(TreeOf(40)),
        chain_(ChainOf(key_, tree_, {0, 3, 3, 10, 17, 40})) {}

  absl::Status Verify(const std::vector<Checkpoint>& chain) {
    return VerifyCheckpointChain(chain, pub_, tree_);
  }
  static void ExpectBad(const absl::Status& s, std::string_view names) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(Msg(s).find(names), std::string::npos) << "want \"" << names << "\" in: " << s;
  }

  AuditSigningKey key_;
  AuditVerifyingKey pub_;
  MerkleTree tree_;
  std::vector<Checkpoint> chain_;
};

TEST_F(CheckpointChainTest, GoodChainVerifies) {
  EXPECT_TRUE(Verify(chain_).ok()) << Verify(chain_);
  EXPECT_TRUE(Verify({}).ok());
  EXPECT_TRUE(VerifyCheckpointChain(chain_, pub_, [this](uint64_t size) {
                return tree_.RootAt(size);
              }).ok());
  // Through the encoding, as an offline verifier reads them.
  std::vector<Checkpoint> reparsed;
  for (const Checkpoint& cp : chain_) {
    absl::StatusOr<Checkpoint> p = ParseCheckpoint(cp.Encode());
    ASSERT_TRUE(p.ok());
    reparsed.push_back(*p);
  }
  absl::StatusOr<AuditVerifyingKey> from_pem = AuditVerifyingKey::FromPem(key_.PublicKeyPem());
  ASSERT_TRUE(from_pem.ok());
  EXPECT_TRUE(VerifyCheckpointChain(reparsed, *from_pem, tree_).ok());
}

TEST_F(CheckpointChainTest, DeletedCheckpointIsNamed) {
  std::vector<Checkpoint> chain = chain_;
  chain.erase(chain.begin() + 2);
  ExpectBad(Verify(chain), "checkpoint seq 3 (position 2)");
  // Deleting the first one.
  chain = chain_;
  chain.erase(chain.begin());
  ExpectBad(Verify(chain), "checkpoint seq 1 (position 0)");
}

TEST_F(CheckpointChainTest, SwappedCheckpointsAreNamed) {
  std::vector<Checkpoint> chain = chain_;
  std::swap(chain[3], chain[4]);
  ExpectBad(Verify(chain), "checkpoint seq 4 (position 3)");
}

TEST_F(CheckpointChainTest, DuplicatedCheckpointIsNamed) {
  std::vector<Checkpoint> chain = chain_;
  chain.insert(chain.begin() + 2, chain[1]);
  ExpectBad(Verify(chain), "checkpoint seq 1 (position 2)");
}

TEST_F(CheckpointChainTest, EditedCheckpointIsNamed) {
  std::vector<Checkpoint> chain = chain_;
  chain[4].tree_size = 16;  // still consistent-looking, but no longer what was signed
  chain[4].root = *tree_.RootAt(16);
  ExpectBad(Verify(chain), "checkpoint seq 4 (position 4)");
}

TEST_F(CheckpointChainTest, ResignedByAnotherKeyIsNamed) {
  AuditSigningKey attacker = NewKey();
  std::vector<Checkpoint> chain = chain_;
  Checkpoint& cp = chain[2];
  cp = *SignCheckpoint(attacker, cp.seq, cp.tree_size, cp.root, cp.time_ms, cp.prev);
  ExpectBad(Verify(chain), "checkpoint seq 2 (position 2)");
  // A whole chain re-signed by another key fails at its first checkpoint.
  ExpectBad(Verify(ChainOf(attacker, tree_, {1, 2})), "checkpoint seq 0 (position 0)");
}

// Properly signed checkpoints that break the chain's rules: what a holder of the key who rewrites
// history (or a buggy writer) would produce.
TEST_F(CheckpointChainTest, SignedButBrokenLinksAreNamed) {
  MerkleHash root3 = *tree_.RootAt(3);
  // prev not linking to the previous checkpoint.
  std::vector<Checkpoint> chain = ChainOf(key_, tree_, {1, 3});
  chain[1] = *SignCheckpoint(key_, 1, 3, root3, chain[1].time_ms, LeafHash("elsewhere"));
  ExpectBad(Verify(chain), "checkpoint seq 1 (position 1): prev");
  // The first checkpoint with a non-zero prev.
  chain = {*SignCheckpoint(key_, 0, 3, root3, 5, LeafHash("x"))};
  ExpectBad(Verify(chain), "checkpoint seq 0 (position 0): the first checkpoint's prev");
  // The tree shrinks.
  chain = ChainOf(key_, tree_, {10, 3});
  ExpectBad(Verify(chain), "checkpoint seq 1 (position 1): tree_size 3 is smaller");
  // Time goes backwards.
  chain = ChainOf(key_, tree_, {1, 3});
  chain[1] = *SignNextCheckpoint(key_, &chain[0], 3, root3, chain[0].time_ms - 1);
  ExpectBad(Verify(chain), "checkpoint seq 1 (position 1): time_ms");
}

TEST_F(CheckpointChainTest, RootNotMatchingTheTreeIsNamed) {
  // A log whose entry 12 was edited: checkpoints up to size 12 still verify, the next does not.
  MerkleTree edited;
  for (uint64_t i = 0; i < tree_.size(); ++i) {
    edited.Append(i == 12 ? LeafHash("edited") : *tree_.LeafHashAt(i));
  }
  absl::Status s = VerifyCheckpointChain(chain_, pub_, edited);
  ExpectBad(s, "checkpoint seq 4 (position 4): root does not match");
  // A checkpoint signed over a root that is not the tree's.
  std::vector<Checkpoint> chain = ChainOf(key_, tree_, {1, 3});
  chain.push_back(*SignNextCheckpoint(key_, &chain.back(), 5, *tree_.RootAt(4), chain[1].time_ms));
  ExpectBad(Verify(chain), "checkpoint seq 2 (position 2): root does not match");
}

TEST_F(CheckpointChainTest, TruncatedLogIsNamed) {
  MerkleTree truncated = TreeOf(20);
  ExpectBad(VerifyCheckpointChain(chain_, pub_, truncated),
            "checkpoint seq 5 (position 5): tree_size 40 exceeds the log's 20 entries");
  // With a callback, its error comes back with the checkpoint named.
  absl::Status s = VerifyCheckpointChain(chain_, pub_, [](uint64_t size) -> absl::StatusOr<MerkleHash> {
    if (size > 5) return absl::NotFoundError("segment missing");
    return TreeOf(40).RootAt(size);
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(Msg(s).find("checkpoint seq 3 (position 3): segment missing"), std::string::npos) << s;
}

}  // namespace
}  // namespace warden::audit
