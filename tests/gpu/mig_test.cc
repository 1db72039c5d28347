// MIG geometry: NVIDIA's placement rules (DESIGN.md "MIG facts"), the chooser, the validator and
// the planner, plus a randomized property test against brute force.
#include <algorithm>
#include <bit>
#include <random>
#include <tuple>

#include "gmock/gmock.h"
#include "gpu/gpu.h"
#include "gtest/gtest.h"

namespace warden::gpu {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int k1g = 19, k1gMe = 20, k1g2x = 15, k2g = 14, k3g = 9, k4g = 5, k7g = 0;

const GpuModel& H100() { return *FindGpuModel("H100-80GB"); }

std::vector<std::string> ProfileNames(const GpuModel& m) {
  std::vector<std::string> out;
  for (const MigProfile& p : m.profiles) out.push_back(p.name);
  return out;
}

TEST(MigProfileTest, TablesMatchNvidiaNamesAndIds) {
  EXPECT_THAT(ProfileNames(H100()), ElementsAre("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb",
                                                "3g.40gb", "4g.40gb", "7g.80gb"));
  EXPECT_THAT(
      ProfileNames(*FindGpuModel("H200-141GB")),
      ElementsAre("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"));
  EXPECT_THAT(
      ProfileNames(*FindGpuModel("A100-40GB")),
      ElementsAre("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"));
  EXPECT_THAT(
      ProfileNames(*FindGpuModel("A100-80GB")),
      ElementsAre("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"));
  std::vector<int> ids;
  for (const MigProfile& p : H100().profiles) ids.push_back(p.id);
  EXPECT_THAT(ids, ElementsAre(19, 20, 15, 14, 9, 5, 0));
  const MigProfile* p = H100().FindProfileByName("1g.20gb");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->id, k1g2x);
  EXPECT_EQ(p->memory_slices, 2);
  EXPECT_EQ(p->compute_slices, 1);
  EXPECT_EQ(p->max_instances, 4);
  EXPECT_THAT(p->allowed_starts, ElementsAre(0, 2, 4, 6));
  EXPECT_THAT(H100().FindProfile(k2g)->allowed_starts, ElementsAre(0, 2, 4));
  EXPECT_THAT(H100().FindProfile(k1g)->allowed_starts, ElementsAre(0, 1, 2, 3, 4, 5, 6));
  EXPECT_EQ(H100().FindProfile(k7g)->memory_slices, 8);
  EXPECT_EQ(H100().FindProfile(k3g)->memory_mib, 40u * 1024);
  EXPECT_TRUE(H100().FindProfile(k1gMe)->media_extensions);
  EXPECT_FALSE(FindGpuModel("L40S-48GB")->mig_capable);
  EXPECT_EQ(FindGpuModel("h100-80gb"), nullptr);
}

TEST(MigLayoutTest, FourGOnlyAtZero) {
  MigLayout layout(H100());
  for (int s = 1; s < kMemorySlices; ++s) {
    EXPECT_EQ(layout.PlaceAt(k4g, s).code(), absl::StatusCode::kInvalidArgument) << s;
  }
  EXPECT_EQ(layout.CanPlace(k4g), 0);
  MigLayout busy(H100());
  ASSERT_TRUE(busy.PlaceAt(k1g, 1).ok());
  EXPECT_EQ(busy.CanPlace(k4g), std::nullopt);
  absl::Status why = busy.CheckPlace(k4g);
  EXPECT_EQ(why.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(why.message()), HasSubstr("4g.40gb (profile 5): no free start among 0"));
}

TEST(MigLayoutTest, ThreeGAtZeroOrFour) {
  MigLayout layout(H100());
  EXPECT_EQ(layout.PlaceAt(k3g, 2).code(), absl::StatusCode::kInvalidArgument);
  auto first = layout.Place(k3g);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, 4);  // covers slice 7, keeps 0..3 whole for a 4g
  auto second = layout.Place(k3g);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, 0);
  absl::Status third = layout.CheckPlace(k3g);
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.message()), HasSubstr("at most 2 per GPU"));
  EXPECT_TRUE(ValidateMigLayout(H100(), layout.instances()).ok());
}

TEST(MigLayoutTest, SevenOneGLeaveSliceSevenEmptyAndAnEighthIsRefused) {
  MigLayout layout(H100());
  std::vector<int> starts;
  for (int i = 0; i < 7; ++i) {
    auto s = layout.Place(k1g);
    ASSERT_TRUE(s.ok()) << s.status();
    starts.push_back(*s);
  }
  std::sort(starts.begin(), starts.end());
  EXPECT_THAT(starts, ElementsAre(0, 1, 2, 3, 4, 5, 6));
  EXPECT_EQ(layout.used_memory_mask(), 0x7f);  // slice 7 unused
  EXPECT_EQ(layout.used_compute_slices(), 7);
  absl::Status eighth = layout.CheckPlace(k1g);
  EXPECT_EQ(eighth.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(eighth.message()), HasSubstr("at most 7 per GPU"));
  EXPECT_FALSE(layout.Place(k1g).ok());
  EXPECT_EQ(layout.instances().size(), 7u);  // unchanged on error
  EXPECT_EQ(layout.PlaceAt(k1g, 7).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(layout.CheckPlace(k1gMe).message()), HasSubstr("compute slices"));
  // The validator refuses an eighth 1g at slice 7 too.
  std::vector<MigInstance> eight = layout.instances();
  eight.push_back({k1g, 7});
  EXPECT_EQ(ValidateMigLayout(H100(), eight).code(), absl::StatusCode::kInvalidArgument);
}

TEST(MigLayoutTest, OneMediaExtensionsInstancePerGpu) {
  MigLayout layout(H100());
  ASSERT_TRUE(layout.Place(k1gMe).ok());
  absl::Status second = layout.CheckPlace(k1gMe);
  EXPECT_EQ(second.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(second.message()), HasSubstr("+me"));
  EXPECT_TRUE(layout.Place(k1g).ok());  // plain 1g instances still fit beside it
  std::vector<MigInstance> two_me = {{k1gMe, 0}, {k1gMe, 3}};
  absl::Status v = ValidateMigLayout(H100(), two_me);
  EXPECT_EQ(v.code(), absl::StatusCode::kInvalidArgument);
}

TEST(MigLayoutTest, ThreeTwoOneOneFillsAllComputeSlicesInEveryArrivalOrder) {
  std::vector<int> order = {k3g, k2g, k1g, k1g};
  std::sort(order.begin(), order.end());
  int orders = 0;
  do {
    MigLayout layout(H100());
    for (int id : order) {
      auto s = layout.Place(id);
      ASSERT_TRUE(s.ok()) << "order " << orders << ": " << s.status();
    }
    EXPECT_EQ(layout.used_compute_slices(), kComputeSlices);
    EXPECT_TRUE(ValidateMigLayout(H100(), layout.instances()).ok());
    ++orders;
  } while (std::next_permutation(order.begin(), order.end()));
  EXPECT_EQ(orders, 12);
}

TEST(MigLayoutTest, ThreeGAtZeroStrandsTheLastOneGAndSaysWhy) {
  // 3g@0, 2g@4, 1g@6 leaves only slice 7, which no 1g may start at.
  MigLayout layout(H100());
  ASSERT_TRUE(layout.PlaceAt(k3g, 0).ok());
  ASSERT_TRUE(layout.PlaceAt(k2g, 4).ok());
  ASSERT_TRUE(layout.PlaceAt(k1g, 6).ok());
  absl::Status why = layout.CheckPlace(k1g);
  EXPECT_EQ(why.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(why.message()),
              HasSubstr("no free start among 0,1,2,3,4,5,6 (memory slices in use: 0,1,2,3,4,5,6)"));
}

TEST(MigLayoutTest, SevenGNeedsAnEmptyGpu) {
  MigLayout layout(H100());
  EXPECT_EQ(layout.CanPlace(k7g), 0);
  ASSERT_TRUE(layout.Place(k1g).ok());
  absl::Status why = layout.CheckPlace(k7g);
  EXPECT_EQ(why.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(why.message()), HasSubstr("needs 7 compute slices, 6 of 7 free"));
}

TEST(MigLayoutTest, ChooserKeepsTheLargestFreeRangeAndPrefersSliceSeven) {
  MigLayout layout(H100());
  EXPECT_EQ(layout.CanPlace(k1g), 0);    // leaves 1..7 whole
  EXPECT_EQ(layout.CanPlace(k2g), 0);    // leaves 2..7
  EXPECT_EQ(layout.CanPlace(k1g2x), 6);  // 0..5 as long as 2..7, and uses slice 7
  EXPECT_EQ(layout.CanPlace(k3g), 4);
}

TEST(MigLayoutTest, RemoveFreesTheSlices) {
  MigLayout layout(H100());
  ASSERT_TRUE(layout.PlaceAt(k4g, 0).ok());
  EXPECT_EQ(layout.CanPlace(k3g), 4);
  EXPECT_EQ(layout.Remove(2).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(layout.Remove(0).ok());
  EXPECT_TRUE(layout.instances().empty());
  EXPECT_EQ(layout.CanPlace(k7g), 0);
}

TEST(MigLayoutTest, UnknownProfileAndNonMigModelAreInvalidArgument) {
  MigLayout layout(H100());
  EXPECT_EQ(layout.CheckPlace(42).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layout.Place(42).status().code(), absl::StatusCode::kInvalidArgument);
  MigLayout l40s(*FindGpuModel("L40S-48GB"));
  EXPECT_EQ(l40s.CanPlace(k1g), std::nullopt);
  EXPECT_THAT(std::string(l40s.CheckPlace(k1g).message()), HasSubstr("not MIG-capable"));
  std::vector<MigInstance> one = {{k1g, 0}};
  EXPECT_FALSE(ValidateMigLayout(*FindGpuModel("L40S-48GB"), one).ok());
}

TEST(MigValidatorTest, RejectsEachBrokenRule) {
  auto check = [](std::vector<MigInstance> v, std::string_view substr) {
    absl::Status s = ValidateMigLayout(H100(), v);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << substr;
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(substr)));
  };
  check({{k3g, 0}, {k2g, 2}}, "overlaps");
  check({{k2g, 6}}, "may not start at 6");
  check({{k1g, 7}}, "may not start at 7");
  check({{77, 0}}, "unknown MIG profile id 77");
  check({{k1gMe, 0}, {k1gMe, 1}}, "more than 1 instances");
  EXPECT_TRUE(ValidateMigLayout(H100(), std::vector<MigInstance>{}).ok());
  EXPECT_TRUE(ValidateMigLayout(H100(), std::vector<MigInstance>{{k4g, 0}, {k3g, 4}}).ok());
  EXPECT_TRUE(
      ValidateMigLayout(H100(), std::vector<MigInstance>{{k4g, 0}, {k2g, 4}, {k1g2x, 6}}).ok());
}

TEST(MigValidatorTest, RejectsMoreThanSevenComputeSlices) {
  // NVIDIA's start tables already make 8 compute slices impossible, so the compute rule is
  // exercised on a model whose 1g may also start at slice 7.
  GpuModel loose = H100();
  for (MigProfile& p : loose.profiles) {
    if (p.id == k1g) {
      p.allowed_starts.push_back(7);
      p.max_instances = 8;
    }
  }
  std::vector<MigInstance> eight;
  for (int s = 0; s < 8; ++s) eight.push_back({k1g, s});
  absl::Status v = ValidateMigLayout(loose, eight);
  EXPECT_EQ(v.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.message()), HasSubstr("8 compute slices"));
  MigLayout layout(loose);
  for (int s = 0; s < 7; ++s) ASSERT_TRUE(layout.PlaceAt(k1g, s).ok());
  EXPECT_THAT(std::string(layout.PlaceAt(k1g, 7).message()), HasSubstr("compute slices"));
}

TEST(MigPlanTest, FindsLayoutsTheGreedyChooserMisses) {
  // Greedy puts a lone 1g at 0, after which 4g (start 0 only) no longer fits; planning the set
  // up front finds 4g@0 + 1g elsewhere.
  MigLayout greedy(H100());
  ASSERT_TRUE(greedy.Place(k1g).ok());
  EXPECT_FALSE(greedy.CanPlace(k4g).has_value());
  std::vector<int> want = {k1g, k4g};
  auto plan = PlanMigLayout(H100(), want);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(ValidateMigLayout(H100(), *plan).ok());
  EXPECT_EQ(plan->size(), 2u);

  std::vector<int> full = {k1g, k1g, k2g, k3g};
  auto full_plan = PlanMigLayout(H100(), full);
  ASSERT_TRUE(full_plan.ok());
  EXPECT_TRUE(ValidateMigLayout(H100(), *full_plan).ok());
}

TEST(MigPlanTest, RefusesImpossibleSetsNamingWhy) {
  std::vector<int> no_room = {k3g, k3g, k1g};  // 7 compute slices, but no memory slice left
  auto a = PlanMigLayout(H100(), no_room);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("respects the allowed starts"));
  std::vector<int> too_big = {k4g, k4g};
  EXPECT_THAT(std::string(PlanMigLayout(H100(), too_big).status().message()),
              HasSubstr("8 compute slices"));
  std::vector<int> two_me = {k1gMe, k1gMe};
  EXPECT_THAT(std::string(PlanMigLayout(H100(), two_me).status().message()), HasSubstr("+me"));
  std::vector<int> unknown = {3};
  EXPECT_EQ(PlanMigLayout(H100(), unknown).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int> eight = {k1g, k1g, k1g, k1g, k1g, k1g, k1g, k1g};
  EXPECT_FALSE(PlanMigLayout(H100(), eight).ok());
}

// Brute force: every start at which adding the instance keeps the layout valid.
std::vector<int> ValidStarts(const GpuModel& m, const std::vector<MigInstance>& cur, int id) {
  std::vector<int> out;
  for (int s = 0; s < kMemorySlices; ++s) {
    std::vector<MigInstance> v = cur;
    v.push_back({id, s});
    if (ValidateMigLayout(m, v).ok()) out.push_back(s);
  }
  return out;
}

// The documented chooser rule, recomputed independently.
std::tuple<int, int, int> Score(uint8_t used_after, int start) {
  int best = 0, run = 0;
  for (int i = 0; i < kMemorySlices; ++i) {
    run = (used_after >> i & 1) ? 0 : run + 1;
    best = std::max(best, run);
  }
  int low_free = 0;
  for (int i = 0; i < 7; ++i) low_free += !(used_after >> i & 1);
  return {best, low_free, -start};
}

TEST(MigPropertyTest, RandomPlaceAndRemoveNeverBreaksARuleAndMatchesBruteForce) {
  std::mt19937_64 rng(20261126);
  std::vector<const GpuModel*> models;
  for (const GpuModel& m : KnownGpuModels()) {
    if (m.mig_capable) models.push_back(&m);
  }
  int violations = 0, placed = 0, refused = 0, removed = 0;
  MigLayout layout(*models[0]);
  for (int op = 0; op < 10000; ++op) {
    if (op % 200 == 0) layout = MigLayout(*models[rng() % models.size()]);
    const GpuModel& m = layout.model();
    const int kind = static_cast<int>(rng() % 10);
    const MigProfile& p = m.profiles[rng() % m.profiles.size()];
    const std::vector<int> valid = ValidStarts(m, layout.instances(), p.id);
    if (kind < 5) {
      std::optional<int> can = layout.CanPlace(p);
      EXPECT_EQ(can.has_value(), !valid.empty()) << "op " << op;
      if (can) {
        EXPECT_TRUE(std::find(valid.begin(), valid.end(), *can) != valid.end());
        // The chosen start is the best by the documented rule.
        const uint8_t used = layout.used_memory_mask();
        auto mask = [&](int s) {
          return static_cast<uint8_t>(used | (((1u << p.memory_slices) - 1u) << s));
        };
        for (int s : valid) EXPECT_LE(Score(mask(s), s), Score(mask(*can), *can));
      }
      auto s = layout.Place(p.id);
      EXPECT_EQ(s.ok(), can.has_value());
      if (s.ok()) {
        EXPECT_EQ(*s, *can);
        ++placed;
      } else {
        EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
        ++refused;
      }
    } else if (kind < 7) {
      const int start = static_cast<int>(rng() % kMemorySlices);
      const bool ok = layout.PlaceAt(p.id, start).ok();
      EXPECT_EQ(ok, std::find(valid.begin(), valid.end(), start) != valid.end());
      placed += ok;
    } else if (!layout.instances().empty()) {
      const MigInstance victim = layout.instances()[rng() % layout.instances().size()];
      EXPECT_TRUE(layout.Remove(victim.start).ok());
      ++removed;
    }
    if (!ValidateMigLayout(m, layout.instances()).ok()) ++violations;
  }
  EXPECT_EQ(violations, 0);
  EXPECT_GT(placed, 1000);
  EXPECT_GT(refused, 100);
  EXPECT_GT(removed, 1000);
}

// Brute force: does any assignment of starts 0..7 to `want` pass the validator?
bool AnyLayout(const GpuModel& m, const std::vector<int>& want, std::vector<MigInstance>& cur) {
  if (cur.size() == want.size()) return true;
  for (int s = 0; s < kMemorySlices; ++s) {
    cur.push_back({want[cur.size()], s});
    if (ValidateMigLayout(m, cur).ok() && AnyLayout(m, want, cur)) return true;
    cur.pop_back();
  }
  return false;
}

TEST(MigPropertyTest, PlannerAgreesWithGreedyAndBruteForce) {
  std::mt19937_64 rng(7);
  const GpuModel& m = H100();
  for (int round = 0; round < 2000; ++round) {
    std::vector<int> want;
    const int n = 1 + static_cast<int>(rng() % 5);
    for (int i = 0; i < n; ++i) want.push_back(m.profiles[rng() % m.profiles.size()].id);
    MigLayout greedy(m);
    bool greedy_ok = true;
    for (int id : want) greedy_ok = greedy_ok && greedy.Place(id).ok();
    auto plan = PlanMigLayout(m, want);
    if (greedy_ok) {
      EXPECT_TRUE(plan.ok()) << plan.status();
    }
    std::vector<MigInstance> scratch;
    EXPECT_EQ(plan.ok(), AnyLayout(m, want, scratch)) << "round " << round;
    if (plan.ok()) {
      EXPECT_TRUE(ValidateMigLayout(m, *plan).ok());
      std::vector<int> got;
      for (const MigInstance& i : *plan) got.push_back(i.profile_id);
      std::sort(got.begin(), got.end());
      std::vector<int> sorted = want;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_EQ(got, sorted);
    }
  }
}

}  // namespace
}  // namespace warden::gpu
