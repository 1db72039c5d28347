// JobService against a real SQLite store and the real scheduler (with its independent invariant
// checker after every placement): placement, the agent protocol, tenant scope, node loss,
// restart, cancel and log storage.
#include "server/job_service.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include "job_fixture.h"

namespace warden::server {
namespace {

using common::Json;

class JobServiceTest : public testing::JobServiceFixture {
 protected:
  JobServiceOptions Options() override {
    JobServiceOptions o = JobServiceFixture::Options();
    o.max_log_bytes = 4096;
    o.max_log_waiters = max_log_waiters_;
    o.max_watches_per_node = max_watches_per_node_;
    return o;
  }

  void SetNodeStatus(const std::string& id, const std::string& status) {
    auto n = store_->GetNode(id);
    ASSERT_TRUE(n.ok());
    n->status = status;
    ASSERT_TRUE(store_->UpdateNode(*n).ok());
  }

  int max_log_waiters_ = 2;
  int max_watches_per_node_ = 4;

  // Waits like an agent's /wait poll: the node's generation once it differs from `seen`, or
  // `seen` when `timeout` passes first (the watch is then dropped, as the HTTP server does).
  uint64_t WaitGen(const std::string& node, uint64_t seen, absl::Duration timeout) {
    auto gen = std::make_shared<std::promise<uint64_t>>();
    std::future<uint64_t> got = gen->get_future();
    auto id = jobs_->WatchNode(node, seen, [gen](uint64_t g) { gen->set_value(g); });
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return seen;
    if (got.wait_for(absl::ToChronoMilliseconds(timeout)) == std::future_status::ready) {
      return got.get();
    }
    jobs_->CancelNodeWatch(node, *id);  // after this the watch can no longer fire
    return got.wait_for(std::chrono::seconds(0)) == std::future_status::ready ? got.get() : seen;
  }
};

TEST_F(JobServiceTest, ImageForNodeAnswersOnlyTheNodeTheJobIsPlacedOn) {
  AddNode("nod_1", "n1", 1);
  AddNode("nod_2", "n2", 1);
  const std::string digest = "sha256:" + std::string(64, 'c');
  store::Job j = Submit("ten_a", "acme",
                        R"({"name":"img","gpus":1,"command":["true"],"image":")" + digest + R"("})");
  store::Job h = Submit("ten_b", "beta", R"({"name":"host","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  const std::string node = Stored(j.id).node_id;
  const std::string other = node == "nod_1" ? "nod_2" : "nod_1";
  ASSERT_FALSE(node.empty());
  auto got = jobs_->ImageForNode(node, j.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->first, "ten_a");
  EXPECT_EQ(got->second, digest);
  EXPECT_EQ(jobs_->ImageForNode(other, j.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs_->ImageForNode(node, "job_nosuch").status().code(), absl::StatusCode::kNotFound);
  auto host = jobs_->ImageForNode(Stored(h.id).node_id, h.id);
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ(host->first, "ten_b");
  EXPECT_EQ(host->second, "host");
}

TEST_F(JobServiceTest, SubmittedJobIsPlacedHandedToItsAgentAndFinishes) {
  AddNode("nod_1", "n1", 2);
  store::Job j = Submit("ten_a", "acme", R"({"name":"train","gpus":1,"command":["echo","hi"]})");
  EXPECT_EQ(j.state, "queued");
  ASSERT_TRUE(jobs_->Tick().ok());
  store::Job placed = Stored(j.id);
  EXPECT_EQ(placed.state, "placed");
  EXPECT_EQ(placed.node_id, "nod_1");

  Json assigned = Sync("nod_1");
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0]["id"], j.id);
  EXPECT_EQ(assigned[0]["run"]["command"], Json::array({"echo", "hi"}));
  ASSERT_EQ(assigned[0]["gpus"].size(), 1u);
  EXPECT_EQ(assigned[0]["gpus"][0]["uuid"].get<std::string>().rfind("GPU-", 0), 0u);

  Sync("nod_1", {{j.id, "running"}});
  EXPECT_EQ(Stored(j.id).state, "running");
  ASSERT_TRUE(jobs_->AppendLog("nod_1", j.id, "stdout", 0, "hi\n").ok());
  AgentJobReport done{j.id, "exited", true, 0, ""};
  EXPECT_TRUE(Sync("nod_1", {done}).empty());
  store::Job end = Stored(j.id);
  EXPECT_EQ(end.state, "done");
  EXPECT_TRUE(end.has_exit_code);
  EXPECT_EQ(end.exit_code, 0);
  auto log = jobs_->ReadLog("ten_a", j.id, "stdout", 0, 0, absl::ZeroDuration());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->data, "hi\n");
  EXPECT_TRUE(log->ended);
}

TEST_F(JobServiceTest, TwoTenantsNeverShareAGpuAndFreedGpusWaitForACleanReport) {
  AddNode("nod_1", "n1", 2);
  AddNode("nod_2", "n2", 2);
  std::vector<store::Job> js;
  for (int i = 0; i < 2; ++i) {
    js.push_back(Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["true"]})"));
    js.push_back(Submit("ten_b", "beta", R"({"name":"b","gpus":1,"command":["true"]})"));
  }
  ASSERT_TRUE(jobs_->Tick().ok());
  std::set<std::string> uuids;
  for (const auto& j : js) {
    store::Job s = Stored(j.id);
    ASSERT_EQ(s.state, "placed") << s.reason;
    auto a = Json::parse(s.assignment_json);
    ASSERT_EQ(a.size(), 1u);
    EXPECT_TRUE(uuids.insert(a[0]["uuid"].get<std::string>()).second) << "GPU given twice";
  }
  // A fifth job waits: every GPU is taken.
  store::Job extra = Submit("ten_b", "beta", R"({"name":"c","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(extra.id).state, "queued");
  // Tenant A's job on n1 ends: its GPU is not handed to tenant B before the agent reports it clean.
  store::Job a_on_n1;
  for (const auto& j : js) {
    store::Job s = Stored(j.id);
    if (s.node_id == "nod_1" && s.tenant_id == "ten_a") a_on_n1 = s;
  }
  ASSERT_FALSE(a_on_n1.id.empty());
  std::string freed = Json::parse(a_on_n1.assignment_json)[0]["uuid"];
  Sync("nod_1", {{a_on_n1.id, "exited", true, 0, ""}});
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(extra.id).state, "queued") << "placed on an unverified GPU";
  AgentGpuReport clean;
  clean.clean = {freed};
  Sync("nod_1", {}, clean);
  ASSERT_TRUE(jobs_->Tick().ok());
  store::Job now = Stored(extra.id);
  EXPECT_EQ(now.state, "placed");
  EXPECT_EQ(Json::parse(now.assignment_json)[0]["uuid"], freed);
}

TEST_F(JobServiceTest, AnotherTenantsJobIsNotFoundEverywhere) {
  AddNode("nod_1", "n1", 1);
  store::Job j = Submit("ten_a", "acme", R"({"name":"secret","command":["true"]})");
  EXPECT_EQ(jobs_->Get("ten_b", j.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs_->Cancel("ten_b", j.id, absl::Seconds(1)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs_->ReadLog("ten_b", j.id, "stdout", 0, 0, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(jobs_->List("ten_b", std::nullopt)->empty());
  EXPECT_EQ(jobs_->List("ten_a", std::nullopt)->size(), 1u);
  // The same message for a job that does not exist at all: no existence oracle.
  EXPECT_EQ(std::string(jobs_->Get("ten_b", j.id).status().message()),
            std::string(jobs_->Get("ten_a", "job_nosuch").status().message()).replace(
                5, std::string("job_nosuch").size(), j.id));
  EXPECT_EQ(Stored(j.id).state, "queued");  // untouched by the refused cancel
}

TEST_F(JobServiceTest, SubmitRefusesBadSpecsAndAnotherTenantInTheBody) {
  auto bad = jobs_->Submit("ten_a", "acme", R"({"name":"x","gpus":0,"command":["true"]})", "u");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  auto other = jobs_->Submit("ten_a", "acme", R"({"name":"x","tenant":"beta","command":["true"]})", "u");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  auto weak = jobs_->Submit("ten_a", "acme",
                            R"({"name":"x","gpu_fraction":0.5,"command":["true"]})", "u");
  EXPECT_FALSE(weak.ok());  // a fraction needs isolation shared; acme's policy is mig
  EXPECT_TRUE(jobs_->List("ten_a", std::nullopt)->empty());
}

TEST_F(JobServiceTest, OnlyTheAssignedNodeMaySpeakForAJob) {
  AddNode("nod_1", "n1", 1);
  AddNode("nod_2", "n2", 1);
  store::Job j = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  std::string owner = Stored(j.id).node_id, other = owner == "nod_1" ? "nod_2" : "nod_1";
  Sync(other, {{j.id, "exited", true, 1, "forged"}});
  EXPECT_EQ(Stored(j.id).state, "placed");
  EXPECT_EQ(jobs_->AppendLog(other, j.id, "stdout", 0, "forged").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(Sync(other).empty());  // nothing of it is handed to the other node
}

TEST_F(JobServiceTest, UnreachableNodesJobsAreRequeuedOntoAnotherNode) {
  AddNode("nod_1", "n1", 1);
  store::Job j = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["sleep","100"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  ASSERT_EQ(Stored(j.id).node_id, "nod_1");
  Sync("nod_1", {{j.id, "running"}});
  AddNode("nod_2", "n2", 1);
  SetNodeStatus("nod_1", "unreachable");
  ASSERT_TRUE(jobs_->Tick().ok());
  store::Job moved = Stored(j.id);
  EXPECT_EQ(moved.state, "placed");
  EXPECT_EQ(moved.node_id, "nod_2");
  // The old node, back, is told nothing of it (its agent stops its copy) and cannot end it.
  SetNodeStatus("nod_1", "ready");
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_TRUE(Sync("nod_1", {{j.id, "exited", true, 0, ""}}).empty());
  EXPECT_EQ(Stored(j.id).state, "placed");
}

TEST_F(JobServiceTest, RestartKeepsRunningJobsWhereTheyAre) {
  AddNode("nod_1", "n1", 2);
  store::Job a = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["sleep","100"]})");
  store::Job b = Submit("ten_b", "beta", R"({"name":"b","gpus":1,"command":["sleep","100"]})");
  store::Job q = Submit("ten_b", "beta", R"({"name":"q","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  Sync("nod_1", {{a.id, "running"}});
  std::string a_gpu = Stored(a.id).assignment_json, b_gpu = Stored(b.id).assignment_json;
  Restart();
  ASSERT_TRUE(jobs_->Tick().ok());
  EXPECT_EQ(Stored(a.id).state, "running");
  EXPECT_EQ(Stored(a.id).assignment_json, a_gpu);
  EXPECT_EQ(Stored(b.id).state, "placed");
  EXPECT_EQ(Stored(b.id).assignment_json, b_gpu);
  EXPECT_EQ(Stored(q.id).state, "queued");  // still no free GPU: the restored ones hold them
  EXPECT_EQ(Sync("nod_1").size(), 2u);
  // And the restored job can finish normally.
  Sync("nod_1", {{a.id, "exited", true, 3, ""}});
  EXPECT_EQ(Stored(a.id).state, "failed");
  EXPECT_EQ(Stored(a.id).exit_code, 3);
}

TEST_F(JobServiceTest, CancelQueuedAtOnceAndRunningThroughTheAgentWithGrace) {
  AddNode("nod_1", "n1", 1);
  store::Job run = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["sleep","100"]})");
  store::Job wait = Submit("ten_a", "acme", R"({"name":"b","gpus":1,"command":["true"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  auto c = jobs_->Cancel("ten_a", wait.id, absl::Seconds(3));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state, "cancelled");
  Sync("nod_1", {{run.id, "running"}});
  c = jobs_->Cancel("ten_a", run.id, absl::Seconds(3));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state, "running");
  Json a = Sync("nod_1");
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["cancel_grace_ms"], 3000);
  Sync("nod_1", {{run.id, "cancelled", true, 143, "cancelled; killed by signal 15"}});
  EXPECT_EQ(Stored(run.id).state, "cancelled");
  EXPECT_EQ(jobs_->Cancel("ten_a", run.id, absl::Seconds(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobServiceTest, LogsAreStoredOnceAndTruncatedWithAMarker) {
  AddNode("nod_1", "n1", 1);
  store::Job j = Submit("ten_a", "acme", R"({"name":"a","command":["yes"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  ASSERT_EQ(*jobs_->AppendLog("nod_1", j.id, "stdout", 0, "abc"), 3);
  ASSERT_EQ(*jobs_->AppendLog("nod_1", j.id, "stdout", 1, "bcdef"), 6);  // overlap resent
  ASSERT_EQ(*jobs_->AppendLog("nod_1", j.id, "stdout", 10, "zz"), 6);    // a gap: resend from 6
  std::string big(5000, 'x');
  ASSERT_EQ(*jobs_->AppendLog("nod_1", j.id, "stdout", 6, big), 5006);
  ASSERT_EQ(*jobs_->AppendLog("nod_1", j.id, "stdout", 5006, "more"), 5010);
  auto r = jobs_->ReadLog("ten_a", j.id, "stdout", 0, 0, absl::ZeroDuration());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data.substr(0, 6), "abcdef");
  EXPECT_TRUE(r->truncated);
  EXPECT_NE(r->data.find("output truncated"), std::string::npos);
  EXPECT_EQ(r->data.find("more"), std::string::npos);
  auto tail = jobs_->ReadLog("ten_a", j.id, "stdout", 0, 1, absl::ZeroDuration());
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->data.rfind("[gpuwarden: output truncated", 0), 0u) << tail->data;
}

TEST_F(JobServiceTest, AFollowWaitsForOutputButNeverHoldsMoreThanItsShareOfThreads) {
  AddNode("nod_1", "n1", 1);
  store::Job j = Submit("ten_a", "acme", R"({"name":"a","command":["yes"]})");
  ASSERT_TRUE(jobs_->Tick().ok());
  Sync("nod_1", {{j.id, "running"}});
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(jobs_->AppendLog("nod_1", j.id, "stdout", 0, "late\n").ok());
  });
  auto t0 = absl::Now();
  auto r = jobs_->ReadLog("ten_a", j.id, "stdout", 0, 0, absl::Seconds(10));
  writer.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->data, "late\n");
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  // With no waiter slot left, a follow answers at once (the client polls) instead of holding a
  // thread of the HTTP server's blocking pool.
  max_log_waiters_ = 0;
  Restart();
  t0 = absl::Now();
  r = jobs_->ReadLog("ten_a", j.id, "stdout", 5, 0, absl::Seconds(10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->data, "");
  EXPECT_FALSE(r->ended);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
}

// Push to agents: an agent waiting on its node wakes when a job is placed there or asked to stop
// there, not at its next heartbeat; another node's waiter does not wake; waiters are capped.
TEST_F(JobServiceTest, AWaitingAgentWakesWhenItsNodeGetsWorkAndOnlyThen) {
  AddNode("nod_1", "n1", 1);
  AddNode("nod_2", "n2", 1);
  ASSERT_TRUE(jobs_->Tick().ok());
  const uint64_t g1 = WaitGen("nod_1", 12345, absl::ZeroDuration());  // differs: now
  const uint64_t g2 = WaitGen("nod_2", 12345, absl::ZeroDuration());
  // Nothing changes: the wait runs out and returns the same generation.
  auto t0 = absl::Now();
  EXPECT_EQ(WaitGen("nod_1", g1, absl::Milliseconds(150)), g1);
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(140));

  std::string placed_on;
  std::thread submitter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    store::Job j = Submit("ten_a", "acme", R"({"name":"a","gpus":1,"command":["true"]})");
    ASSERT_TRUE(jobs_->Tick().ok());
    placed_on = Stored(j.id).node_id;
  });
  // Both nodes wait; exactly the one that got the job wakes early.
  uint64_t w1 = 0, w2 = 0;
  absl::Duration d1, d2;
  std::thread other([&] {
    auto t = absl::Now();
    w2 = WaitGen("nod_2", g2, absl::Seconds(3));
    d2 = absl::Now() - t;
  });
  t0 = absl::Now();
  w1 = WaitGen("nod_1", g1, absl::Seconds(3));
  d1 = absl::Now() - t0;
  submitter.join();
  other.join();
  const bool on1 = placed_on == "nod_1";
  ASSERT_TRUE(on1 || placed_on == "nod_2") << placed_on;
  EXPECT_EQ(on1 ? w1 != g1 : w2 != g2, true);
  EXPECT_EQ(on1 ? w2 : w1, on1 ? g2 : g1);  // the other node's generation did not move
  EXPECT_LT(on1 ? d1 : d2, absl::Seconds(2));
  EXPECT_GE(on1 ? d2 : d1, absl::Milliseconds(2900));

  // Cancelling the running job wakes its node too.
  const std::string node = placed_on;
  const uint64_t before = WaitGen(node, 0, absl::ZeroDuration());
  auto list = jobs_->List("ten_a", std::nullopt);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  ASSERT_TRUE(jobs_->Cancel("ten_a", (*list)[0].id, absl::Seconds(1)).ok());
  EXPECT_NE(WaitGen(node, before, absl::ZeroDuration()), before);

  // Beyond max_watches_per_node pending waits a node's next one is refused at once (the agent
  // falls back to heartbeats); a dropped watch frees its place.
  max_watches_per_node_ = 2;
  Restart();
  AddNode("nod_3", "n3", 1);
  ASSERT_TRUE(jobs_->Tick().ok());
  const uint64_t g3 = WaitGen("nod_3", 12345, absl::ZeroDuration());
  auto w_a = jobs_->WatchNode("nod_3", g3, [](uint64_t) {});
  auto w_b = jobs_->WatchNode("nod_3", g3, [](uint64_t) {});
  ASSERT_TRUE(w_a.ok() && w_b.ok());
  auto refused = jobs_->WatchNode("nod_3", g3, [](uint64_t) { ADD_FAILURE() << "refused, not fired"; });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(jobs_->WatchNode("nod_1", 0, [](uint64_t) {}).ok()) << "other nodes unaffected";
  jobs_->CancelNodeWatch("nod_3", *w_a);
  EXPECT_TRUE(jobs_->WatchNode("nod_3", g3, [](uint64_t) {}).ok());
}

}  // namespace
}  // namespace warden::server
