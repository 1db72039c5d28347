#include "audit/merkle.h"

#include <openssl/evp.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/strings.h"

namespace warden::audit {
namespace {

using common::StrCat;

// SHA-256 over fixed inputs fails only when OpenSSL cannot allocate or its provider is missing:
// an environment we cannot audit in at all, so this is fatal rather than a Status every caller
// of a hash function would have to thread through.
[[noreturn]] void HashFailure(const char* what) {
  std::fprintf(stderr, "gpuwarden: fatal: SHA-256 unavailable (%s)\n", what);
  std::abort();
}

// Fetched once: EVP_sha256() would look the implementation up again on every DigestInit under
// OpenSSL 3, a measurable cost at the hundreds of thousands of hashes per second `audit verify`
// needs.
const EVP_MD* Sha256Md() {
  static const EVP_MD* md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (fetched == nullptr) HashFailure("EVP_MD_fetch");
    return fetched;
  }();
  return md;
}

// One context per thread, reused: no allocation per hash.
class Sha256Ctx {
 public:
  Sha256Ctx() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr) HashFailure("EVP_MD_CTX_new");
  }
  ~Sha256Ctx() { EVP_MD_CTX_free(ctx_); }
  Sha256Ctx(const Sha256Ctx&) = delete;
  Sha256Ctx& operator=(const Sha256Ctx&) = delete;

  void Init() {
    if (EVP_DigestInit_ex(ctx_, Sha256Md(), nullptr) != 1) HashFailure("EVP_DigestInit_ex");
  }
  void Update(const void* data, size_t len) {
    if (EVP_DigestUpdate(ctx_, data, len) != 1) HashFailure("EVP_DigestUpdate");
  }
  MerkleHash Final() {
    MerkleHash out;
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_, out.data(), &len) != 1 || len != out.size()) {
      HashFailure("EVP_DigestFinal_ex");
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

Sha256Ctx& ThreadCtx() {
  thread_local Sha256Ctx ctx;
  return ctx;
}

constexpr uint8_t kLeafPrefix = 0x00;
constexpr uint8_t kNodePrefix = 0x01;

// Largest power of two strictly less than n (n >= 2): the RFC's split point k.
uint64_t SplitPoint(uint64_t n) { return std::bit_floor(n - 1); }

// Lengths of the inclusion proof for `index` in a tree of `size` leaves (index < size): `inner`
// nodes below the level where the paths to the index and to the last leaf part, and `border`
// nodes above it (one per set bit of index's remaining high part).
struct ProofShape {
  uint64_t inner;
  uint64_t border;
};
ProofShape InclusionShape(uint64_t index, uint64_t size) {
  const uint64_t inner = std::bit_width(index ^ (size - 1));
  // A shift by 64 is undefined; with inner == 64 no bits of index remain above it.
  const uint64_t border = inner >= 64 ? 0 : std::popcount(index >> inner);
  return {inner, border};
}

}  // namespace

MerkleHash LeafHash(std::string_view data) {
  Sha256Ctx& ctx = ThreadCtx();
  ctx.Init();
  ctx.Update(&kLeafPrefix, 1);
  ctx.Update(data.data(), data.size());
  return ctx.Final();
}

MerkleHash NodeHash(const MerkleHash& left, const MerkleHash& right) {
  // One update over a stack buffer is cheaper than three over the pieces.
  uint8_t buf[1 + 2 * kMerkleHashSize];
  buf[0] = kNodePrefix;
  std::memcpy(buf + 1, left.data(), kMerkleHashSize);
  std::memcpy(buf + 1 + kMerkleHashSize, right.data(), kMerkleHashSize);
  Sha256Ctx& ctx = ThreadCtx();
  ctx.Init();
  ctx.Update(buf, sizeof(buf));
  return ctx.Final();
}

const MerkleHash& EmptyRootHash() {
  static const MerkleHash empty = [] {
    Sha256Ctx& ctx = ThreadCtx();
    ctx.Init();
    return ctx.Final();
  }();
  return empty;
}

absl::StatusOr<MerkleHash> MerkleHashFromBytes(std::string_view bytes) {
  if (bytes.size() != kMerkleHashSize) {
    return absl::InvalidArgumentError(
        StrCat("a Merkle hash is ", kMerkleHashSize, " bytes, got ", bytes.size()));
  }
  MerkleHash out;
  std::memcpy(out.data(), bytes.data(), kMerkleHashSize);
  return out;
}

// ---- MerkleTree ----

uint64_t MerkleTree::Append(const MerkleHash& leaf_hash) {
  const uint64_t index = leaf_count_;
  MerkleHash hash = leaf_hash;
  uint64_t pos = index;
  for (size_t level = 0;; ++level) {
    if (levels_.size() == level) levels_.emplace_back();
    levels_[level].push_back(hash);
    // A right child completes its parent: carry upward, like incrementing a binary counter.
    if ((pos & 1) == 0) break;
    hash = NodeHash(levels_[level][pos - 1], hash);
    pos >>= 1;
  }
  ++leaf_count_;
  return index;
}

MerkleHash MerkleTree::Root() const {
  if (leaf_count_ == 0) return EmptyRootHash();
  return RangeHash(0, leaf_count_);
}

absl::StatusOr<MerkleHash> MerkleTree::RootAt(uint64_t size) const {
  if (size > leaf_count_) {
    return absl::InvalidArgumentError(
        StrCat("tree size ", size, " is beyond the tree's ", leaf_count_, " leaves"));
  }
  if (size == 0) return EmptyRootHash();
  return RangeHash(0, size);
}

absl::StatusOr<MerkleHash> MerkleTree::LeafHashAt(uint64_t index) const {
  if (index >= leaf_count_) {
    return absl::InvalidArgumentError(
        StrCat("leaf index ", index, " is not below the tree size ", leaf_count_));
  }
  return levels_[0][index];
}

MerkleHash MerkleTree::RangeHash(uint64_t begin, uint64_t count) const {
  // Ranges from the RFC recursion start at a multiple of the largest power of two not above
  // their length, so the left part is always a stored complete subtree and only the right
  // edge recurses: O(log n).
  if (std::has_single_bit(count) && begin % count == 0) {
    const int level = std::countr_zero(count);
    return levels_[level][begin >> level];
  }
  const uint64_t k = SplitPoint(count);
  return NodeHash(RangeHash(begin, k), RangeHash(begin + k, count - k));
}

void MerkleTree::AppendPath(uint64_t index, uint64_t begin, uint64_t count,
                            std::vector<MerkleHash>& proof) const {
  // PATH(m, D[n]): the sibling nearest the leaf comes first, so recurse before appending.
  if (count <= 1) return;
  const uint64_t k = SplitPoint(count);
  if (index < k) {
    AppendPath(index, begin, k, proof);
    proof.push_back(RangeHash(begin + k, count - k));
  } else {
    AppendPath(index - k, begin + k, count - k, proof);
    proof.push_back(RangeHash(begin, k));
  }
}

void MerkleTree::AppendSubproof(uint64_t m, uint64_t begin, uint64_t count, bool whole,
                                std::vector<MerkleHash>& proof) const {
  // SUBPROOF(m, D[n], b).
  if (m == count) {
    if (!whole) proof.push_back(RangeHash(begin, count));
    return;
  }
  const uint64_t k = SplitPoint(count);
  if (m <= k) {
    AppendSubproof(m, begin, k, whole, proof);
    proof.push_back(RangeHash(begin + k, count - k));
  } else {
    AppendSubproof(m - k, begin + k, count - k, false, proof);
    proof.push_back(RangeHash(begin, k));
  }
}

absl::StatusOr<std::vector<MerkleHash>> MerkleTree::InclusionProof(uint64_t index,
                                                                   uint64_t size) const {
  if (size > leaf_count_) {
    return absl::InvalidArgumentError(
        StrCat("tree size ", size, " is beyond the tree's ", leaf_count_, " leaves"));
  }
  if (index >= size) {
    return absl::InvalidArgumentError(
        StrCat("leaf index ", index, " is not below the tree size ", size));
  }
  std::vector<MerkleHash> proof;
  const ProofShape shape = InclusionShape(index, size);
  proof.reserve(shape.inner + shape.border);
  AppendPath(index, 0, size, proof);
  return proof;
}

absl::StatusOr<std::vector<MerkleHash>> MerkleTree::ConsistencyProof(uint64_t size1,
                                                                     uint64_t size2) const {
  if (size1 > size2) {
    return absl::InvalidArgumentError(
        StrCat("first tree size ", size1, " is greater than second tree size ", size2));
  }
  if (size2 > leaf_count_) {
    return absl::InvalidArgumentError(
        StrCat("tree size ", size2, " is beyond the tree's ", leaf_count_, " leaves"));
  }
  std::vector<MerkleHash> proof;
  if (size1 == 0 || size1 == size2) return proof;  // Not defined by the RFC; see the header.
  AppendSubproof(size1, 0, size2, true, proof);
  return proof;
}

// ---- Verification ----

absl::StatusOr<MerkleHash> RootFromInclusionProof(const MerkleHash& leaf_hash, uint64_t index,
                                                  uint64_t size,
                                                  std::span<const MerkleHash> proof) {
  // RFC 9162 2.1.3.2 step 1.
  if (index >= size) {
    return absl::InvalidArgumentError(
        StrCat("leaf index ", index, " is not below the tree size ", size));
  }
  // The RFC's loop also rejects a proof of the wrong length (steps 4a and 5); checking first
  // names the fault and bounds the work by the proof length a tree of this size can need.
  const ProofShape shape = InclusionShape(index, size);
  if (proof.size() != shape.inner + shape.border) {
    return absl::InvalidArgumentError(StrCat("inclusion proof for leaf ", index, " in a tree of ",
                                             size, " leaves has ", proof.size(),
                                             " nodes; it must have ", shape.inner + shape.border));
  }
  // Steps 2-4, as written.
  uint64_t fn = index;
  uint64_t sn = size - 1;
  MerkleHash r = leaf_hash;
  for (const MerkleHash& p : proof) {
    if (sn == 0) {
      return absl::InvalidArgumentError("inclusion proof is longer than the path to the root");
    }
    if ((fn & 1) != 0 || fn == sn) {
      r = NodeHash(p, r);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  // Step 5, first half.
  if (sn != 0) {
    return absl::InvalidArgumentError("inclusion proof is shorter than the path to the root");
  }
  return r;
}

absl::Status VerifyInclusion(const MerkleHash& leaf_hash, uint64_t index, uint64_t size,
                             std::span<const MerkleHash> proof, const MerkleHash& root) {
  absl::StatusOr<MerkleHash> computed = RootFromInclusionProof(leaf_hash, index, size, proof);
  if (!computed.ok()) return computed.status();
  // Step 5, second half.
  if (*computed != root) {
    return absl::DataLossError(StrCat("inclusion proof for leaf ", index, " in a tree of ", size,
                                      " leaves does not lead to the given root"));
  }
  return absl::OkStatus();
}

absl::Status VerifyConsistency(uint64_t size1, uint64_t size2, const MerkleHash& root1,
                               const MerkleHash& root2, std::span<const MerkleHash> proof) {
  if (size1 > size2) {
    return absl::InvalidArgumentError(
        StrCat("first tree size ", size1, " is greater than second tree size ", size2));
  }
  // Cases the RFC leaves undefined; MerkleTree::ConsistencyProof gives them empty proofs.
  if (size1 == size2) {
    if (!proof.empty()) {
      return absl::InvalidArgumentError(
          StrCat("consistency proof between equal tree sizes must be empty, got ", proof.size(),
                 " nodes"));
    }
    if (root1 != root2) {
      return absl::DataLossError(StrCat("two different roots for the same tree size ", size1));
    }
    return absl::OkStatus();
  }
  if (size1 == 0) {
    if (!proof.empty()) {
      return absl::InvalidArgumentError(StrCat(
          "consistency proof from the empty tree must be empty, got ", proof.size(), " nodes"));
    }
    if (root1 != EmptyRootHash()) {
      return absl::DataLossError("first root is not the root of the empty tree");
    }
    return absl::OkStatus();
  }

  // 0 < size1 < size2. The expected length: the inclusion path of leaf size1 - 1 in the second
  // tree, less the levels inside the complete subtree that ends at size1 (`shift`), plus that
  // subtree's own hash unless it is the whole first tree (size1 a power of two, whose root the
  // verifier already holds: RFC step 2).
  const bool first_is_power_of_two = std::has_single_bit(size1);
  ProofShape shape = InclusionShape(size1 - 1, size2);
  const uint64_t shift = std::countr_zero(size1);  // < shape.inner because size1 < size2
  const uint64_t want = (first_is_power_of_two ? 0 : 1) + (shape.inner - shift) + shape.border;
  // RFC step 1 (an empty proof fails) is covered: want >= 1 whenever size1 < size2.
  if (proof.size() != want) {
    return absl::InvalidArgumentError(StrCat("consistency proof from tree size ", size1, " to ",
                                             size2, " has ", proof.size(), " nodes; it must have ",
                                             want));
  }

  // Steps 2-6, as written. Step 2 prepends root1 for a power-of-two size1; it is read in place
  // of proof[0] instead of copying the proof.
  const size_t count = proof.size() + (first_is_power_of_two ? 1 : 0);
  auto node = [&](size_t i) -> const MerkleHash& {
    if (first_is_power_of_two) return i == 0 ? root1 : proof[i - 1];
    return proof[i];
  };
  uint64_t fn = size1 - 1;
  uint64_t sn = size2 - 1;
  while ((fn & 1) != 0) {  // step 4
    fn >>= 1;
    sn >>= 1;
  }
  MerkleHash fr = node(0);  // step 5
  MerkleHash sr = fr;
  for (size_t i = 1; i < count; ++i) {  // step 6
    const MerkleHash& c = node(i);
    if (sn == 0) {
      return absl::InvalidArgumentError("consistency proof is longer than the path to the root");
    }
    if ((fn & 1) != 0 || fn == sn) {
      fr = NodeHash(c, fr);
      sr = NodeHash(c, sr);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = NodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  // Step 7.
  if (sn != 0) {
    return absl::InvalidArgumentError("consistency proof is shorter than the path to the root");
  }
  if (fr != root1) {
    return absl::DataLossError(StrCat("consistency proof from tree size ", size1, " to ", size2,
                                      " does not lead to the first root"));
  }
  if (sr != root2) {
    return absl::DataLossError(StrCat("consistency proof from tree size ", size1, " to ", size2,
                                      " does not lead to the second root"));
  }
  return absl::OkStatus();
}

}  // namespace warden::audit
