#include "audit/merkle.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/encoding.h"
#include "gtest/gtest.h"

namespace warden::audit {
namespace {

// ---- Helpers ----

std::string Hex(const MerkleHash& h) { return common::HexEncode(MerkleHashBytes(h)); }

MerkleHash FromHex(std::string_view hex) {
  std::optional<std::string> bytes = common::HexDecode(hex);
  EXPECT_TRUE(bytes.has_value()) << hex;
  absl::StatusOr<MerkleHash> h = MerkleHashFromBytes(bytes.value_or(""));
  EXPECT_TRUE(h.ok()) << hex;
  return h.value_or(MerkleHash{});
}

std::vector<MerkleHash> FromHex(const std::vector<std::string_view>& hexes) {
  std::vector<MerkleHash> out;
  out.reserve(hexes.size());
  for (std::string_view h : hexes) out.push_back(FromHex(h));
  return out;
}

std::string Bytes(std::initializer_list<uint8_t> b) { return std::string(b.begin(), b.end()); }

// ---- Reference implementation ----
// RFC 9162 sections 2.1.1, 2.1.3.1 and 2.1.4.1 transcribed literally, recursive over copies of
// the leaf list: slow and obviously right, independent of MerkleTree's stored levels.

uint64_t RefSplit(uint64_t n) {
  uint64_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

std::vector<MerkleHash> Slice(const std::vector<MerkleHash>& d, uint64_t begin, uint64_t end) {
  return std::vector<MerkleHash>(d.begin() + static_cast<std::ptrdiff_t>(begin),
                                 d.begin() + static_cast<std::ptrdiff_t>(end));
}

MerkleHash RefMth(const std::vector<MerkleHash>& d) {
  if (d.empty()) return EmptyRootHash();
  if (d.size() == 1) return d[0];
  const uint64_t k = RefSplit(d.size());
  return NodeHash(RefMth(Slice(d, 0, k)), RefMth(Slice(d, k, d.size())));
}

std::vector<MerkleHash> RefPath(uint64_t m, const std::vector<MerkleHash>& d) {
  if (d.size() <= 1) return {};
  const uint64_t n = d.size();
  const uint64_t k = RefSplit(n);
  std::vector<MerkleHash> out;
  if (m < k) {
    out = RefPath(m, Slice(d, 0, k));
    out.push_back(RefMth(Slice(d, k, n)));
  } else {
    out = RefPath(m - k, Slice(d, k, n));
    out.push_back(RefMth(Slice(d, 0, k)));
  }
  return out;
}

std::vector<MerkleHash> RefSubproof(uint64_t m, const std::vector<MerkleHash>& d, bool b) {
  const uint64_t n = d.size();
  if (m == n) {
    if (b) return {};
    return {RefMth(d)};
  }
  const uint64_t k = RefSplit(n);
  std::vector<MerkleHash> out;
  if (m <= k) {
    out = RefSubproof(m, Slice(d, 0, k), b);
    out.push_back(RefMth(Slice(d, k, n)));
  } else {
    out = RefSubproof(m - k, Slice(d, k, n), false);
    out.push_back(RefMth(Slice(d, 0, k)));
  }
  return out;
}

std::vector<MerkleHash> RefProof(uint64_t m, const std::vector<MerkleHash>& d) {
  return RefSubproof(m, d, true);
}

// Distinct leaves for trees larger than the 8 published ones.
std::vector<MerkleHash> SyntheticLeaves(int n) {
  std::vector<MerkleHash> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(LeafHash("leaf " + std::to_string(i)));
  return out;
}

MerkleTree TreeOf(const std::vector<MerkleHash>& leaves) {
  MerkleTree tree;
  for (const MerkleHash& h : leaves) tree.Append(h);
  return tree;
}

// ---- Published test vectors ----
// Confirmed against transparency-dev/merkle (the maintained successor of the
// certificate-transparency-go and Trillian Merkle code): leaves, roots of sizes 0..8 and the
// complete-subtree node hashes from testonly/constants.go; inclusion and consistency proofs from
// proof/verify_test.go (whose inclusion vectors number leaves from 1; here indexes are 0-based).

const std::vector<std::string> kLeafInputs = {
    Bytes({}),
    Bytes({0x00}),
    Bytes({0x10}),
    Bytes({0x20, 0x21}),
    Bytes({0x30, 0x31}),
    Bytes({0x40, 0x41, 0x42, 0x43}),
    Bytes({0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57}),
    Bytes({0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e,
           0x6f}),
};

// Indexed by tree size, 0..8.
const std::vector<std::string_view> kRoots = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

// Complete subtrees of the 8-leaf tree: kNodes[level][index].
const std::vector<std::vector<std::string_view>> kNodes = {
    {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"},
    {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"},
    {"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"},
    {"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"},
};

struct InclusionVector {
  uint64_t index;
  uint64_t size;
  std::vector<std::string_view> proof;
};
const std::vector<InclusionVector> kInclusionVectors = {
    {0, 1, {}},
    {0,
     8,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {5,
     8,
     {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2, 3, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
    {1,
     5,
     {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
};

struct ConsistencyVector {
  uint64_t size1;
  uint64_t size2;
  std::vector<std::string_view> proof;
};
const std::vector<ConsistencyVector> kConsistencyVectors = {
    {1, 1, {}},
    {1,
     8,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {6,
     8,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2,
     5,
     {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
    {6,
     7,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

MerkleTree PublishedTree() {
  MerkleTree tree;
  for (const std::string& leaf : kLeafInputs) tree.Append(LeafHash(leaf));
  return tree;
}

TEST(MerkleHashingTest, EmptyRootIsSha256OfNothing) {
  EXPECT_EQ(Hex(EmptyRootHash()), kRoots[0]);
  EXPECT_EQ(Hex(MerkleTree().Root()), kRoots[0]);
}

TEST(MerkleHashingTest, LeafAndNodeHashesMatchPublishedNodes) {
  for (size_t i = 0; i < kLeafInputs.size(); ++i) {
    EXPECT_EQ(Hex(LeafHash(kLeafInputs[i])), kNodes[0][i]) << "leaf " << i;
  }
  for (size_t level = 1; level < kNodes.size(); ++level) {
    for (size_t i = 0; i < kNodes[level].size(); ++i) {
      EXPECT_EQ(
          Hex(NodeHash(FromHex(kNodes[level - 1][2 * i]), FromHex(kNodes[level - 1][2 * i + 1]))),
          kNodes[level][i])
          << "level " << level << " node " << i;
    }
  }
}

TEST(MerkleTreeTest, ReproducesPublishedRootsForEverySize) {
  MerkleTree tree;
  for (size_t i = 0; i < kLeafInputs.size(); ++i) {
    EXPECT_EQ(tree.Append(LeafHash(kLeafInputs[i])), i);
    EXPECT_EQ(tree.size(), i + 1);
    EXPECT_EQ(Hex(tree.Root()), kRoots[i + 1]) << "size " << i + 1;
  }
  for (uint64_t size = 0; size <= 8; ++size) {
    absl::StatusOr<MerkleHash> root = tree.RootAt(size);
    ASSERT_TRUE(root.ok()) << root.status();
    EXPECT_EQ(Hex(*root), kRoots[size]) << "size " << size;
  }
}

TEST(MerkleTreeTest, ReproducesPublishedInclusionProofs) {
  MerkleTree tree = PublishedTree();
  for (const InclusionVector& v : kInclusionVectors) {
    SCOPED_TRACE(testing::Message() << "index " << v.index << " size " << v.size);
    absl::StatusOr<std::vector<MerkleHash>> proof = tree.InclusionProof(v.index, v.size);
    ASSERT_TRUE(proof.ok()) << proof.status();
    EXPECT_EQ(*proof, FromHex(v.proof));
    EXPECT_TRUE(VerifyInclusion(LeafHash(kLeafInputs[v.index]), v.index, v.size, FromHex(v.proof),
                                FromHex(kRoots[v.size]))
                    .ok());
  }
}

TEST(MerkleTreeTest, ReproducesPublishedConsistencyProofs) {
  MerkleTree tree = PublishedTree();
  for (const ConsistencyVector& v : kConsistencyVectors) {
    SCOPED_TRACE(testing::Message() << "size1 " << v.size1 << " size2 " << v.size2);
    absl::StatusOr<std::vector<MerkleHash>> proof = tree.ConsistencyProof(v.size1, v.size2);
    ASSERT_TRUE(proof.ok()) << proof.status();
    EXPECT_EQ(*proof, FromHex(v.proof));
    absl::Status st = VerifyConsistency(v.size1, v.size2, FromHex(kRoots[v.size1]),
                                        FromHex(kRoots[v.size2]), FromHex(v.proof));
    EXPECT_TRUE(st.ok()) << st;
  }
}

// ---- Agreement with the reference implementation ----

TEST(MerkleTreeTest, AgreesWithReferenceForEverySizeIndexAndPairUpTo64) {
  const std::vector<MerkleHash> leaves = SyntheticLeaves(64);
  MerkleTree tree;
  for (uint64_t n = 1; n <= leaves.size(); ++n) {
    tree.Append(leaves[n - 1]);
    const std::vector<MerkleHash> d = Slice(leaves, 0, n);
    ASSERT_EQ(tree.Root(), RefMth(d)) << "size " << n;
  }
  for (uint64_t n = 0; n <= leaves.size(); ++n) {
    const std::vector<MerkleHash> d = Slice(leaves, 0, n);
    const MerkleHash root = RefMth(d);
    ASSERT_EQ(tree.RootAt(n).value(), root) << "size " << n;
    for (uint64_t i = 0; i < n; ++i) {
      absl::StatusOr<std::vector<MerkleHash>> proof = tree.InclusionProof(i, n);
      ASSERT_TRUE(proof.ok()) << proof.status();
      ASSERT_EQ(*proof, RefPath(i, d)) << "index " << i << " size " << n;
      absl::Status st = VerifyInclusion(leaves[i], i, n, *proof, root);
      ASSERT_TRUE(st.ok()) << "index " << i << " size " << n << ": " << st;
    }
    for (uint64_t m = 1; m < n; ++m) {
      absl::StatusOr<std::vector<MerkleHash>> proof = tree.ConsistencyProof(m, n);
      ASSERT_TRUE(proof.ok()) << proof.status();
      ASSERT_EQ(*proof, RefProof(m, d)) << "size1 " << m << " size2 " << n;
      absl::Status st = VerifyConsistency(m, n, RefMth(Slice(leaves, 0, m)), root, *proof);
      ASSERT_TRUE(st.ok()) << "size1 " << m << " size2 " << n << ": " << st;
    }
  }
}

TEST(MerkleTreeTest, RefusesSizesAndIndexesBeyondTheTree) {
  MerkleTree tree = TreeOf(SyntheticLeaves(5));
  EXPECT_EQ(tree.RootAt(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tree.LeafHashAt(5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tree.InclusionProof(5, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tree.InclusionProof(0, 6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tree.InclusionProof(0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tree.ConsistencyProof(3, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tree.ConsistencyProof(2, 6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MerkleTree().InclusionProof(0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MerkleTreeTest, TrivialConsistencyProofsAreEmptyAndVerifyOnlyWithMatchingRoots) {
  MerkleTree tree = TreeOf(SyntheticLeaves(5));
  const MerkleHash root3 = tree.RootAt(3).value();
  const MerkleHash root5 = tree.Root();
  EXPECT_TRUE(tree.ConsistencyProof(0, 5).value().empty());
  EXPECT_TRUE(tree.ConsistencyProof(0, 0).value().empty());
  EXPECT_TRUE(tree.ConsistencyProof(3, 3).value().empty());

  EXPECT_TRUE(VerifyConsistency(0, 5, EmptyRootHash(), root5, {}).ok());
  EXPECT_TRUE(VerifyConsistency(0, 0, EmptyRootHash(), EmptyRootHash(), {}).ok());
  EXPECT_TRUE(VerifyConsistency(3, 3, root3, root3, {}).ok());

  EXPECT_EQ(VerifyConsistency(0, 5, root3, root5, {}).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifyConsistency(3, 3, root3, root5, {}).code(), absl::StatusCode::kDataLoss);
  const std::vector<MerkleHash> one = {root3};
  EXPECT_EQ(VerifyConsistency(0, 5, EmptyRootHash(), root5, one).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyConsistency(3, 3, root3, root3, one).code(), absl::StatusCode::kInvalidArgument);
  // RFC 9162 2.1.4.2 step 1: a real extension needs a non-empty proof.
  EXPECT_EQ(VerifyConsistency(3, 5, root3, root5, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(MerkleTreeTest, SingleLeafTreeRootIsTheLeafHash) {
  const MerkleHash leaf = LeafHash("data");
  MerkleTree tree;
  tree.Append(leaf);
  EXPECT_EQ(tree.Root(), leaf);
  EXPECT_TRUE(VerifyInclusion(leaf, 0, 1, {}, leaf).ok());
  EXPECT_EQ(VerifyInclusion(leaf, 0, 1, {}, EmptyRootHash()).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(VerifyInclusion(EmptyRootHash(), 0, 1, {}, leaf).code(), absl::StatusCode::kDataLoss);
}

TEST(MerkleHashingTest, HashFromBytesNeedsExactly32Bytes) {
  EXPECT_EQ(MerkleHashFromBytes("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MerkleHashFromBytes(std::string(31, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MerkleHashFromBytes(std::string(33, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  const MerkleHash h = LeafHash("x");
  EXPECT_EQ(MerkleHashFromBytes(MerkleHashBytes(h)).value(), h);
}

// ---- Proof mutations (after transparency-dev/merkle's verifier tests) ----

// Every way of breaking a proof's node list that the tests try: each node removed, a node
// duplicated in place, extra nodes in front and at the back, the list emptied, and every single
// bit of every node flipped.
std::vector<std::pair<std::string, std::vector<MerkleHash>>> MutatedNodeLists(
    const std::vector<MerkleHash>& proof, const MerkleHash& extra) {
  std::vector<std::pair<std::string, std::vector<MerkleHash>>> out;
  for (size_t i = 0; i < proof.size(); ++i) {
    std::vector<MerkleHash> p = proof;
    p.erase(p.begin() + static_cast<std::ptrdiff_t>(i));
    out.emplace_back("removed node " + std::to_string(i), p);
    p = proof;
    p.insert(p.begin() + static_cast<std::ptrdiff_t>(i), proof[i]);
    out.emplace_back("duplicated node " + std::to_string(i), p);
  }
  for (const MerkleHash& e : {extra, MerkleHash{}}) {
    std::vector<MerkleHash> p = proof;
    p.push_back(e);
    out.emplace_back("appended node", p);
    p = proof;
    p.insert(p.begin(), e);
    out.emplace_back("prepended node", p);
  }
  if (!proof.empty()) out.emplace_back("empty proof", std::vector<MerkleHash>{});
  for (size_t i = 0; i < proof.size(); ++i) {
    for (size_t bit = 0; bit < kMerkleHashSize * 8; ++bit) {
      std::vector<MerkleHash> p = proof;
      p[i][bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      out.emplace_back("node " + std::to_string(i) + " bit " + std::to_string(bit), p);
    }
  }
  return out;
}

constexpr int kMutationTreeSize = 40;

TEST(MerkleProofMutationTest, EveryMutatedInclusionProofIsRejected) {
  const std::vector<MerkleHash> leaves = SyntheticLeaves(kMutationTreeSize + 1);
  const MerkleTree tree = TreeOf(leaves);
  const MerkleHash wrong_leaf = LeafHash("not in the log");
  int checked = 0;
  for (uint64_t n = 1; n <= kMutationTreeSize; ++n) {
    const MerkleHash root = tree.RootAt(n).value();
    for (uint64_t i = 0; i < n; ++i) {
      SCOPED_TRACE(testing::Message() << "index " << i << " size " << n);
      const std::vector<MerkleHash> proof = tree.InclusionProof(i, n).value();
      const MerkleHash& leaf = leaves[i];
      ASSERT_TRUE(VerifyInclusion(leaf, i, n, proof, root).ok());

      // Wrong position claimed for the same leaf, against the same root. index - 1 wraps for
      // index 0, which must be rejected too.
      for (uint64_t bad : {i - 1, i + 1, i ^ 2}) {
        EXPECT_FALSE(VerifyInclusion(leaf, bad, n, proof, root).ok()) << "index " << bad;
        ++checked;
      }
      // Wrong tree size against the same root. x2 and /2 change the depth of the leaf, so these
      // always fail. (+/-1 can leave the path's shape unchanged, e.g. leaf 0 in sizes 3 and 4:
      // the arithmetic then reproduces `root`, and only the signed tree head binds the size to
      // the root. The meaningful attack, presenting the proof against another real tree head,
      // is checked next.)
      for (uint64_t bad : {n * 2, n / 2, uint64_t{0}}) {
        EXPECT_FALSE(VerifyInclusion(leaf, i, bad, proof, root).ok()) << "size " << bad;
        ++checked;
      }
      // The proof against the real tree heads of sizes n - 1 and n + 1.
      for (uint64_t bad : {n - 1, n + 1}) {
        if (bad == 0) continue;
        EXPECT_FALSE(VerifyInclusion(leaf, i, bad, proof, tree.RootAt(bad).value()).ok())
            << "tree head of size " << bad;
        ++checked;
      }
      // Wrong leaf; a neighbour's leaf; wrong roots.
      EXPECT_FALSE(VerifyInclusion(wrong_leaf, i, n, proof, root).ok());
      EXPECT_FALSE(VerifyInclusion(leaves[i + 1], i, n, proof, root).ok());
      EXPECT_FALSE(VerifyInclusion(leaf, i, n, proof, EmptyRootHash()).ok());
      EXPECT_FALSE(VerifyInclusion(leaf, i, n, proof, tree.RootAt(n + 1).value()).ok());
      checked += 4;
      for (const auto& [what, bad] : MutatedNodeLists(proof, root)) {
        EXPECT_FALSE(VerifyInclusion(leaf, i, n, bad, root).ok()) << what;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

TEST(MerkleProofMutationTest, EveryMutatedConsistencyProofIsRejected) {
  const std::vector<MerkleHash> leaves = SyntheticLeaves(kMutationTreeSize + 1);
  const MerkleTree tree = TreeOf(leaves);
  const MerkleHash wrong_root = LeafHash("wrong root");
  int checked = 0;
  for (uint64_t n = 2; n <= kMutationTreeSize; ++n) {
    const MerkleHash root2 = tree.RootAt(n).value();
    for (uint64_t m = 1; m < n; ++m) {
      SCOPED_TRACE(testing::Message() << "size1 " << m << " size2 " << n);
      const MerkleHash root1 = tree.RootAt(m).value();
      const std::vector<MerkleHash> proof = tree.ConsistencyProof(m, n).value();
      ASSERT_TRUE(VerifyConsistency(m, n, root1, root2, proof).ok());

      // Sizes swapped (size1 > size2), with the roots swapped too and not.
      EXPECT_EQ(VerifyConsistency(n, m, root2, root1, proof).code(),
                absl::StatusCode::kInvalidArgument);
      EXPECT_FALSE(VerifyConsistency(n, m, root1, root2, proof).ok());
      // Roots swapped, wrong, or the two sizes' roots exchanged for neighbours'.
      EXPECT_FALSE(VerifyConsistency(m, n, root2, root1, proof).ok());
      EXPECT_FALSE(VerifyConsistency(m, n, wrong_root, root2, proof).ok());
      EXPECT_FALSE(VerifyConsistency(m, n, root1, wrong_root, proof).ok());
      EXPECT_FALSE(VerifyConsistency(m, n, EmptyRootHash(), root2, proof).ok());
      checked += 6;
      // Wrong sizes against the same roots (x2, /2, ^2 as transparency-dev), and against the
      // real tree heads of neighbouring sizes (see the inclusion test for why +/-1 needs those).
      for (uint64_t bad : {m - 1, m + 1, m ^ 2}) {
        if (bad == m) continue;
        EXPECT_FALSE(VerifyConsistency(bad, n, root1, root2, proof).ok()) << "size1 " << bad;
        if (bad <= kMutationTreeSize + 1) {
          EXPECT_FALSE(VerifyConsistency(bad, n, tree.RootAt(bad).value(), root2, proof).ok())
              << "tree head of size1 " << bad;
        }
        checked += 2;
      }
      for (uint64_t bad : {n * 2, n / 2}) {
        EXPECT_FALSE(VerifyConsistency(m, bad, root1, root2, proof).ok()) << "size2 " << bad;
        ++checked;
      }
      for (uint64_t bad : {n - 1, n + 1}) {
        EXPECT_FALSE(VerifyConsistency(m, bad, root1, tree.RootAt(bad).value(), proof).ok())
            << "tree head of size2 " << bad;
        ++checked;
      }
      for (const auto& [what, bad] : MutatedNodeLists(proof, root1)) {
        EXPECT_FALSE(VerifyConsistency(m, n, root1, root2, bad).ok()) << what;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

// What the mutation tests above cannot demand, pinned down so nobody relies on it: a proof binds
// the leaf to the root, not the size to the root. Leaf 0 has the same path shape in trees of 3
// and 4 leaves, so the 3-leaf proof against the 3-leaf root also "verifies" for size 4. Safe
// because verifiers take (size, root) together from a signed tree head, and no honest log signs
// size 4 with the 3-leaf root; a different real head fails (checked above).
TEST(MerkleProofMutationTest, SizeIsBoundByTheTreeHeadNotByTheProof) {
  const std::vector<MerkleHash> leaves = SyntheticLeaves(4);
  const MerkleTree tree = TreeOf(leaves);
  const std::vector<MerkleHash> proof = tree.InclusionProof(0, 3).value();
  const MerkleHash root3 = tree.RootAt(3).value();
  EXPECT_TRUE(VerifyInclusion(leaves[0], 0, 4, proof, root3).ok());
  EXPECT_EQ(VerifyInclusion(leaves[0], 0, 4, proof, tree.Root()).code(),
            absl::StatusCode::kDataLoss);
}

// ---- Second preimage ----

TEST(MerkleSecondPreimageTest, LeafWithTheBytesOfTwoChildHashesIsNotTheirParent) {
  const std::vector<MerkleHash> leaves = SyntheticLeaves(4);
  const MerkleTree tree = TreeOf(leaves);
  const MerkleHash root = tree.Root();
  const MerkleHash left = NodeHash(leaves[0], leaves[1]);
  const MerkleHash right = NodeHash(leaves[2], leaves[3]);
  ASSERT_EQ(NodeHash(left, right), root);

  // An entry whose 64 bytes are the two children of an interior node.
  const std::string forged_pair =
      std::string(MerkleHashBytes(leaves[0])) + std::string(MerkleHashBytes(leaves[1]));
  EXPECT_NE(LeafHash(forged_pair), left);
  EXPECT_NE(LeafHash(forged_pair), NodeHash(leaves[0], leaves[1]));
  // Claimed as leaf 0 of a 2-leaf tree whose other leaf is `right`: the tree of the forged
  // entry's own hash does not reach the root.
  const std::vector<MerkleHash> sibling = {right};
  EXPECT_EQ(VerifyInclusion(LeafHash(forged_pair), 0, 2, sibling, root).code(),
            absl::StatusCode::kDataLoss);
  // Whereas the interior node's hash itself would: it is the prefixes alone that keep an entry
  // from passing for a subtree.
  EXPECT_TRUE(VerifyInclusion(left, 0, 2, sibling, root).ok());

  // The whole tree's children as one entry, claimed as a 1-leaf tree.
  const std::string forged_root =
      std::string(MerkleHashBytes(left)) + std::string(MerkleHashBytes(right));
  EXPECT_NE(LeafHash(forged_root), root);
  EXPECT_FALSE(VerifyInclusion(LeafHash(forged_root), 0, 1, {}, root).ok());
  EXPECT_FALSE(
      VerifyConsistency(1, 4, LeafHash(forged_root), root, tree.ConsistencyProof(1, 4).value())
          .ok());
}

// ---- Garbage ----

TEST(MerkleVerifyGarbageTest, RandomInputsNeverCrashAndNeverVerify) {
  std::mt19937_64 rng(20261126);
  auto random_size = [&]() -> uint64_t {
    switch (rng() % 5) {
      case 0:
        return rng() % 64;
      case 1:
        return rng() % 100000;
      case 2:
        return rng() % (uint64_t{1} << 63);
      case 3:
        return (uint64_t{1} << (rng() % 64)) + (rng() % 3) - 1;
      default:
        return rng();
    }
  };
  auto random_hash = [&] {
    MerkleHash h;
    for (uint8_t& b : h) b = static_cast<uint8_t>(rng());
    return h;
  };
  int verified = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<MerkleHash> proof(rng() % 80);
    for (MerkleHash& h : proof) h = random_hash();
    const uint64_t a = random_size();
    const uint64_t b = random_size();
    const MerkleHash x = random_hash();
    const MerkleHash y = random_hash();
    if (VerifyInclusion(x, a, b, proof, y).ok()) ++verified;
    if (VerifyInclusion(x, a % (b | 1), b, proof, y).ok()) ++verified;
    (void)RootFromInclusionProof(x, a, b, proof);
    if (VerifyConsistency(a, b, x, y, proof).ok()) ++verified;
    if (VerifyConsistency(std::min(a, b), std::max(a, b), x, y, proof).ok()) ++verified;
  }
  // Edges of the size range.
  constexpr uint64_t kMax = ~uint64_t{0};
  for (uint64_t s : {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{1} << 63,
                     (uint64_t{1} << 63) + 1, kMax - 1, kMax}) {
    for (uint64_t t : {uint64_t{0}, uint64_t{1}, s - 1, s, s + 1, kMax}) {
      for (size_t len : {0, 1, 63, 64, 65, 128}) {
        std::vector<MerkleHash> proof(len, random_hash());
        if (VerifyInclusion(random_hash(), t, s, proof, random_hash()).ok()) ++verified;
        if (VerifyConsistency(t, s, random_hash(), random_hash(), proof).ok()) ++verified;
      }
    }
  }
  EXPECT_EQ(verified, 0);
}

}  // namespace
}  // namespace warden::audit
