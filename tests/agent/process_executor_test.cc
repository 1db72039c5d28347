#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/executor.h"

namespace warden::agent {
namespace {

std::string ReadFile(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ProcessExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "pexec_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    auto e = CreateProcessExecutor(dir_);
    ASSERT_TRUE(e.ok()) << e.status();
    exec_ = std::move(*e);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  ExecSpec Spec(const std::string& id, std::vector<std::string> argv) {
    ExecSpec s;
    s.job_id = id;
    s.argv = std::move(argv);
    s.env = {{"PATH", "/usr/bin:/bin"}, {"CUDA_VISIBLE_DEVICES", "GPU-1"}};
    s.gpu_uuids = {"GPU-1"};
    return s;
  }

  ExecStatus WaitEnd(JobExecutor& e, const std::string& id, int seconds = 20) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      auto st = e.Poll(id);
      EXPECT_TRUE(st.ok()) << st.status();
      if (!st.ok() || st->state != ExecState::kRunning) return st.ok() ? *st : ExecStatus{};
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "job " << id << " did not end";
    return {};
  }

  std::string dir_;
  std::unique_ptr<JobExecutor> exec_;
};

TEST_F(ProcessExecutorTest, RunsWithOnlyItsOwnEnvironmentInItsOwnDirAndGroup) {
  ::setenv("WARDEN_AGENT_SECRET", "must-not-leak", 1);
  ASSERT_TRUE(exec_->Start(Spec("job_a", {"sh", "-c",
                                          "env; pwd; ps -o pgid= -p $$; echo oops >&2; exit 3"}))
                  .ok());
  ExecStatus st = WaitEnd(*exec_, "job_a");
  EXPECT_EQ(st.state, ExecState::kExited);
  EXPECT_EQ(st.exit_code, 3);
  auto [out_path, err_path] = exec_->LogPaths("job_a");
  std::string out = ReadFile(out_path);
  EXPECT_NE(out.find("CUDA_VISIBLE_DEVICES=GPU-1"), std::string::npos) << out;
  EXPECT_EQ(out.find("WARDEN_AGENT_SECRET"), std::string::npos) << out;
  EXPECT_NE(out.find(dir_ + "/job_a/work"), std::string::npos) << out;
  // Its own process group, not the test's.
  EXPECT_EQ(out.find(" " + std::to_string(::getpgrp()) + "\n"), std::string::npos) << out;
  EXPECT_EQ(ReadFile(err_path), "oops\n");
  EXPECT_EQ(exec_->Start(Spec("job_a", {"true"})).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(exec_->Forget("job_a").ok());
  EXPECT_EQ(exec_->Poll("job_a").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ProcessExecutorTest, AProgramThatCannotRunFailsToStart) {
  ASSERT_TRUE(exec_->Start(Spec("job_b", {"/nonexistent/program"})).ok());
  ExecStatus st = WaitEnd(*exec_, "job_b");
  EXPECT_EQ(st.state, ExecState::kFailedToStart);
  EXPECT_NE(st.reason.find("No such file"), std::string::npos) << st.reason;
}

TEST_F(ProcessExecutorTest, CancelSendsTermThenKillsAfterTheGrace) {
  ASSERT_TRUE(exec_->Start(Spec("job_t", {"sh", "-c",
                                          "trap 'echo term; exit 7' TERM; while :; do sleep 0.05; done"}))
                  .ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(exec_->Cancel("job_t", absl::Seconds(10)).ok());
  ExecStatus st = WaitEnd(*exec_, "job_t");
  EXPECT_EQ(st.state, ExecState::kCancelled);
  EXPECT_EQ(st.exit_code, 7);
  EXPECT_NE(ReadFile(exec_->LogPaths("job_t").first).find("term"), std::string::npos);

  // A job that ignores SIGTERM is killed once the grace period is over.
  ASSERT_TRUE(exec_->Start(Spec("job_k", {"sh", "-c", "trap '' TERM; sleep 100"})).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(exec_->Cancel("job_k", absl::Milliseconds(300)).ok());
  st = WaitEnd(*exec_, "job_k");
  EXPECT_EQ(st.state, ExecState::kCancelled);
  EXPECT_EQ(st.exit_code, 128 + 9);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
}

TEST_F(ProcessExecutorTest, ANewExecutorReattachesToRunningJobsAfterARestart) {
  ASSERT_TRUE(exec_->Start(Spec("job_r", {"sh", "-c", "sleep 0.7; echo finished"})).ok());
  exec_.reset();  // the agent goes away; the job does not
  auto again = CreateProcessExecutor(dir_);
  ASSERT_TRUE(again.ok());
  auto specs = (*again)->Recover();
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 1u);
  EXPECT_EQ((*specs)[0].job_id, "job_r");
  EXPECT_EQ((*specs)[0].gpu_uuids, std::vector<std::string>{"GPU-1"});
  auto st = (*again)->Poll("job_r");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, ExecState::kRunning);
  ExecStatus end = WaitEnd(**again, "job_r");
  EXPECT_EQ(end.state, ExecState::kExited);
  EXPECT_EQ(end.exit_code, 0);
  EXPECT_EQ(ReadFile((*again)->LogPaths("job_r").first), "finished\n");
}

TEST_F(ProcessExecutorTest, RefusesIdsThatAreNotPlainNames) {
  EXPECT_EQ(exec_->Start(Spec("../escape", {"true"})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(exec_->Start(Spec("a/b", {"true"})).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace warden::agent
