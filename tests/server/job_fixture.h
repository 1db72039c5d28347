// A JobService over a real SQLite store in a fresh directory, with two tenants (ten_a "acme",
// ten_b "beta") and the stateful invariant checker on: the fixture of job_service_test.cc and
// job_policy_test.cc. Nodes are rows with a simulated-GPU inventory, as an agent's join and
// first heartbeat leave them; Sync plays the agent's heartbeat.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster.h"
#include "common/clock.h"
#include "common/rng.h"
#include "gpu/gpu.h"
#include "server/job_service.h"

namespace warden::server::testing {

class JobServiceFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "job_service_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto st = store::OpenStore({"sqlite://" + dir_ + "/state.db"});
    ASSERT_TRUE(st.ok()) << st.status();
    store_ = std::move(*st);
    ASSERT_TRUE(store_->CreateTenant({"ten_a", "acme", 1}).ok());
    ASSERT_TRUE(store_->CreateTenant({"ten_b", "beta", 1}).ok());
    Restart();
  }

  // The options each (re)start uses; a fixture may change them before Restart().
  virtual JobServiceOptions Options() {
    JobServiceOptions o;
    o.data_dir = dir_;
    o.check_invariants = true;  // the stateful checker after every change; aborts on a violation
    return o;
  }

  // Stops the service and starts a new one over the same store and directory (a server restart).
  void Restart() {
    if (jobs_) jobs_->Stop();
    jobs_.reset();
    auto j = JobService::Create(*store_, clock_, rng_, Options());
    ASSERT_TRUE(j.ok()) << j.status();
    jobs_ = std::move(*j);
    ASSERT_TRUE(jobs_->Start(/*loop=*/false).ok());
  }

  // A node with `gpus` simulated H100s in `pool`, ready and active.
  void AddNode(const std::string& id, const std::string& name, int gpus,
               const std::string& pool = "default") {
    cluster::NodeInventory inv;
    inv.hostname = name;
    inv.os = "Debian GNU/Linux 12 (bookworm)";
    inv.kernel = "6.1.0";
    inv.arch = "x86_64";
    inv.cpus = 16;
    inv.memory_mib = 65536;
    inv.agent_version = "test";
    inv.gpu_backend = "sim";
    auto spec = gpu::ParseSimSpec(std::to_string(gpus) + "xH100-80GB");
    gpu::SimOptions so;
    so.seed = name;
    inv.gpus = gpu::ExpandSimSpec(*spec, so);
    store::Node n;
    n.id = id;
    n.name = name;
    n.pool = pool;
    n.inventory_json = cluster::EncodeInventory(inv).dump();
    ASSERT_TRUE(store_->CreateNode(n).ok());
  }

  store::Job Submit(const std::string& tenant_id, const std::string& tenant,
                    const std::string& body) {
    auto j = jobs_->Submit(tenant_id, tenant, body, "usr_1");
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *j : store::Job{};
  }

  store::Job Stored(const std::string& id) { return *store_->GetJob(id); }

  // One agent heartbeat: its job reports and GPU checks in, its assignments out.
  common::Json Sync(const std::string& node, std::vector<AgentJobReport> reports = {},
                    const AgentGpuReport& gpus = {}) {
    auto r = jobs_->AgentSync(node, reports, gpus);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : common::Json::array();
  }

  std::string dir_;
  common::FakeClock clock_;
  common::Rng& rng_ = common::SecureRng::Get();
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<JobService> jobs_;
};

}  // namespace warden::server::testing
