// Merkle tree hashing, proofs and proof verification of RFC 9162 (Certificate Transparency v2),
// whose tree hashing is the same as RFC 6962's: the base of the tamper-evident audit log
// (issue 4). A log is a sequence of leaves; its tree head (size, root) commits to every leaf in
// order, an inclusion proof shows that one leaf is in a tree head, and a consistency proof shows
// that a later tree head extends an earlier one (nothing edited, removed or reordered).
//
// Hash = SHA-256. LeafHash(d) = H(0x00 || d), NodeHash(l, r) = H(0x01 || l || r), and the root of
// the empty tree is H(""). The distinct prefixes are what stop a leaf from passing for an interior
// node (second preimage). Hashing allocates nothing: fixed 32-byte arrays, the digest is fetched
// from OpenSSL once per process and one digest context is reused per thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace warden::audit {

inline constexpr size_t kMerkleHashSize = 32;
using MerkleHash = std::array<uint8_t, kMerkleHashSize>;

// H(0x00 || data): the hash of one log entry.
MerkleHash LeafHash(std::string_view data);
// H(0x01 || left || right): the hash of an interior node.
MerkleHash NodeHash(const MerkleHash& left, const MerkleHash& right);
// H(""): the root of the tree with no leaves.
const MerkleHash& EmptyRootHash();

// Converts untrusted bytes (from a file, the API or a CLI argument) to a hash. InvalidArgument
// when `bytes` is not exactly 32 bytes long.
absl::StatusOr<MerkleHash> MerkleHashFromBytes(std::string_view bytes);
// The hash's bytes, viewed (not copied); valid as long as `hash` is.
inline std::string_view MerkleHashBytes(const MerkleHash& hash) {
  return {reinterpret_cast<const char*>(hash.data()), hash.size()};
}

// An append-only Merkle tree held in memory, over leaf hashes (callers hash entries with
// LeafHash). It keeps every leaf hash and the hash of every complete (power-of-two, aligned)
// subtree, about two hashes per leaf, so that the root of any earlier size and any proof costs
// O(log n) hash operations; Append costs O(1) amortized and O(log n) at worst.
// A value type; not thread-safe: callers serialise writes, and reads against writes.
class MerkleTree {
 public:
  MerkleTree() = default;

  // Appends one leaf; returns its index (the size before the call). Never fails.
  uint64_t Append(const MerkleHash& leaf_hash);

  uint64_t size() const { return leaf_count_; }

  // Root of the whole tree; EmptyRootHash() when it has no leaves.
  MerkleHash Root() const;

  // Root of the tree formed by the first `size` leaves (MTH of RFC 9162 section 2.1.1), for
  // every size from 0 (EmptyRootHash()) to size(). InvalidArgument when size > size().
  absl::StatusOr<MerkleHash> RootAt(uint64_t size) const;

  // Hash of leaf `index`. InvalidArgument when index >= size().
  absl::StatusOr<MerkleHash> LeafHashAt(uint64_t index) const;

  // Inclusion proof (PATH of RFC 9162 section 2.1.3.1) of leaf `index` in the tree of the first
  // `size` leaves, ordered from the leaf's sibling up to the child of the root. Empty when
  // size == 1. InvalidArgument when size > size() or index >= size (so also when size == 0).
  absl::StatusOr<std::vector<MerkleHash>> InclusionProof(uint64_t index, uint64_t size) const;

  // Consistency proof (PROOF of RFC 9162 section 2.1.4.1) that the tree of the first `size2`
  // leaves extends the tree of the first `size1`. The RFC defines it for 0 < size1 < size2; for
  // size1 == 0 (every tree extends the empty one) and size1 == size2 (a tree extends itself) the
  // proof is empty, which VerifyConsistency accepts only with the matching roots (see there).
  // InvalidArgument when size1 > size2 or size2 > size().
  absl::StatusOr<std::vector<MerkleHash>> ConsistencyProof(uint64_t size1, uint64_t size2) const;

 private:
  // MTH of the `count` leaves starting at `begin` (count >= 1, range within the tree).
  MerkleHash RangeHash(uint64_t begin, uint64_t count) const;
  void AppendPath(uint64_t index, uint64_t begin, uint64_t count,
                  std::vector<MerkleHash>& proof) const;
  void AppendSubproof(uint64_t m, uint64_t begin, uint64_t count, bool whole,
                      std::vector<MerkleHash>& proof) const;

  // levels_[k][i] is the hash of the complete subtree over leaves [i * 2^k, (i + 1) * 2^k);
  // levels_[0] are the leaf hashes. The right edge (compact range) of the tree is the last
  // entry of each level k whose bit k is set in leaf_count_.
  std::vector<std::vector<MerkleHash>> levels_;
  uint64_t leaf_count_ = 0;
};

// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is `root`,
// given the inclusion `proof`, with the algorithm of RFC 9162 section 2.1.3.2. OK when it is.
// InvalidArgument when index >= size (so also when size == 0) or the proof does not have the
// length a proof for (index, size) must have; DataLoss when the proof leads to another root
// (the leaf, the proof or the root is not what the log committed to). Total over every input:
// any sizes (up to 2^64 - 1) and any proof length; never crashes, and allocates only for an error's
// message.
absl::Status VerifyInclusion(const MerkleHash& leaf_hash, uint64_t index, uint64_t size,
                             std::span<const MerkleHash> proof, const MerkleHash& root);

// Computes the root that `proof` leads to for `leaf_hash` at (index, size), for callers that
// compare the root themselves. Errors as VerifyInclusion's InvalidArgument cases.
absl::StatusOr<MerkleHash> RootFromInclusionProof(const MerkleHash& leaf_hash, uint64_t index,
                                                  uint64_t size, std::span<const MerkleHash> proof);

// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves
// with root `root1`, given the consistency `proof`, with the algorithm of RFC 9162 section
// 2.1.4.2 for 0 < size1 < size2. Beyond the RFC, and to match MerkleTree::ConsistencyProof:
// size1 == size2 is consistent only with an empty proof and root1 == root2, and size1 == 0 only
// with an empty proof and root1 == EmptyRootHash() (root2 is then anything: every tree extends
// the empty one). InvalidArgument when size1 > size2 or the proof does not have the length a
// proof for (size1, size2) must have; DataLoss when a root does not match (the message says
// which). Total over every input; never crashes, and allocates only for an error's message.
absl::Status VerifyConsistency(uint64_t size1, uint64_t size2, const MerkleHash& root1,
                               const MerkleHash& root2, std::span<const MerkleHash> proof);

}  // namespace warden::audit
