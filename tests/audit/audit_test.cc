#include "audit/audit.h"

#include "common/json.h"
#include "common/rng.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

namespace warden::audit {
namespace {

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/warden-audit-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  common::FakeClock clock_;
};

TEST_F(AuditLogTest, AppendsEventsThatReadBackInOrder) {
  auto log = OpenAuditLog({.dir = dir_ + "/audit"}, clock_);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 3; ++i) {
    AuditEvent e;
    e.action = "users:create";
    e.resource = "/api/v1/users/" + std::to_string(i);
    e.decision = "allow";
    e.status = 201;
    ASSERT_TRUE((*log)->Append(e).ok());
  }
  auto events = ReadAuditEvents(dir_ + "/audit");
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[2].seq, 2);
  EXPECT_EQ((*events)[2].resource, "/api/v1/users/2");
  EXPECT_EQ((*events)[0].time_ms, absl::ToUnixMillis(clock_.Now()));
}

TEST_F(AuditLogTest, ReopenTrimsTornTailAndContinuesNumbering) {
  {
    auto log = OpenAuditLog({.dir = dir_}, clock_);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(AuditEvent{}).ok());
    ASSERT_TRUE((*log)->Append(AuditEvent{}).ok());
  }
  {
    std::ofstream out(dir_ + "/events.jsonl", std::ios::app);
    out << "{\"seq\":2,\"acti";  // a crash mid-write
  }
  auto log = OpenAuditLog({.dir = dir_}, clock_);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ((*log)->Size(), 2);
  ASSERT_TRUE((*log)->Append(AuditEvent{}).ok());
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ(events->back().seq, 2);
}

TEST_F(AuditLogTest, CorruptLineIsDataLossNamingTheLine) {
  {
    std::ofstream out(dir_ + "/events.jsonl");
    out << "{\"seq\":0}\nnot json\n";
  }
  auto events = ReadAuditEvents(dir_);
  ASSERT_FALSE(events.ok());
  EXPECT_EQ(events.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(events.status().message()).find("line 2"), std::string::npos);
}

TEST_F(AuditLogTest, ConcurrentAppendsAreWholeLines) {
  auto log = OpenAuditLog({.dir = dir_}, clock_);
  ASSERT_TRUE(log.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) {
        AuditEvent e;
        e.resource = std::string(100, 'x');
        ASSERT_TRUE((*log)->Append(e).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  auto events = ReadAuditEvents(dir_);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1000u);
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].seq, static_cast<int64_t>(i));
}

TEST_F(AuditLogTest, WriteFailureIsUnavailableAndUnhealthy) {
  // /dev/full accepts open(O_APPEND) and fails every write with ENOSPC: a stand-in for a full disk.
  std::filesystem::create_symlink("/dev/full", dir_ + "/events.jsonl");
  auto log = OpenAuditLog({.dir = dir_}, clock_);
  ASSERT_TRUE(log.ok()) << log.status();
  absl::Status s = (*log)->Append(AuditEvent{});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE((*log)->Healthy());
}

TEST(AuditEncodeTest, InvalidUtf8IsReplacedNotThrown) {
  AuditEvent e;
  e.resource = "/api/v1/\xff\xfe\xed\xa0\x80ok\xc3";  // bad bytes, a surrogate, a cut sequence
  auto j = common::ParseJsonStrict(EncodeEvent(e));
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["resource"], "/api/v1/\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDok\xEF\xBF\xBD");
}

TEST(AuditEncodeTest, EveryFieldRoundTripsThroughAJsonParser) {
  common::SeededRng rng(7);
  for (int i = 0; i < 2000; ++i) {
    AuditEvent e;
    e.seq = i;
    e.time_ms = 1'750'000'000'000 + i;
    e.status = 200 + i % 300;
    // Random valid text: ASCII incl. quotes, backslashes and control characters, plus 2-4 byte
    // UTF-8 characters.
    std::string bytes = rng.Bytes(40);
    for (unsigned char b : bytes) {
      if (b % 5 == 0) {
        e.resource += "\xc3\xa9";
      } else if (b % 7 == 0) {
        e.resource += "\xf0\x9f\x9a\x80";
      } else {
        e.resource.push_back(static_cast<char>(b % 128));
      }
    }
    e.reason = "say \"hi\"\\\n\t";
    e.actor_name = "a\x01b";
    auto j = common::ParseJsonStrict(EncodeEvent(e));
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ((*j)["resource"], e.resource);
    EXPECT_EQ((*j)["reason"], e.reason);
    EXPECT_EQ((*j)["actor_name"], e.actor_name);
    EXPECT_EQ((*j)["seq"], i);
    EXPECT_EQ((*j)["status"], e.status);
  }
}

}  // namespace
}  // namespace warden::audit
