// The syslog sink's formatter: RFC 5424 header and structured data, SD-PARAM escaping, RFC 5425
// octet-counting framing, header validation.
#include "audit/syslog_format.h"

#include <gtest/gtest.h>

#include "audit/audit.h"

namespace warden::audit {
namespace {

TEST(SyslogFormatTest, EscapesQuoteBackslashAndClosingBracketOnly) {
  EXPECT_EQ(EscapeSdParamValue(R"(a"b\c]d[e=f )"), R"(a\"b\\c\]d[e=f )");
  EXPECT_EQ(EscapeSdParamValue(""), "");
}

TEST(SyslogFormatTest, MessageCarriesSeqLeafAndTheEscapedEventLine) {
  AuditEvent e;
  e.seq = 42;
  e.time_ms = 1795728599416;  // 2026-11-26T21:29:59.416Z
  e.actor_name = "eve\"]\\";
  e.resource = "/api/v1/x";
  std::string line = EncodeEvent(e);
  auto msg = FormatSyslogAuditMessage({"node-1.example", "gpuwarden"}, 42, e.time_ms, line);
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(msg->rfind("<110>1 2026-11-26T21:29:59.416Z node-1.example", 0), 0u) << *msg;
  EXPECT_NE(msg->find(".416Z node-1.example gpuwarden - audit [gpuwarden@32473 seq=\"42\" "
                      "leaf=\"42\" event=\""),
            std::string::npos)
      << *msg;
  EXPECT_EQ(msg->back(), ']');
  // Unescaping the event parameter gives the exact logged line back.
  size_t start = msg->find("event=\"") + 7;
  std::string value, raw = msg->substr(start, msg->size() - 2 - start);
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\') {
      ++i;
      ASSERT_TRUE(raw[i] == '"' || raw[i] == '\\' || raw[i] == ']') << raw;
    } else {
      ASSERT_TRUE(raw[i] != '"' && raw[i] != ']') << "unescaped at " << i << ": " << raw;
    }
    value.push_back(raw[i]);
  }
  EXPECT_EQ(value, line);
}

TEST(SyslogFormatTest, OctetCountingFrameCountsBytesNotCharacters) {
  EXPECT_EQ(FrameOctetCounted("abc"), "3 abc");
  EXPECT_EQ(FrameOctetCounted("\xc3\xa9"), "2 \xc3\xa9");
  EXPECT_EQ(FrameOctetCounted(""), "0 ");
}

TEST(SyslogFormatTest, HeaderFieldsAreValidatedAndNamed) {
  EXPECT_TRUE(ValidateSyslogHeader({"h", "a"}).ok());
  auto bad = FormatSyslogAuditMessage({"host name", "gpuwarden"}, 0, 0, "{}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("hostname"), std::string::npos);
  EXPECT_FALSE(ValidateSyslogHeader({"", "a"}).ok());
  EXPECT_FALSE(ValidateSyslogHeader({"h", std::string(49, 'a')}).ok());
  EXPECT_TRUE(ValidateSyslogHeader({"h", std::string(48, 'a')}).ok());
  EXPECT_FALSE(ValidateSyslogHeader({std::string(256, 'h'), "a"}).ok());
  EXPECT_FALSE(ValidateSyslogHeader({"h\x7f", "a"}).ok());
}

TEST(SyslogFormatTest, GapNoticeIsAWarningWithCountAndSeqRange) {
  auto msg = FormatSyslogGapMessage({"ctl-1", "gpuwarden"}, 1795728599416, 7, 100, 106);
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(*msg,
            "<108>1 2026-11-26T21:29:59.416Z ctl-1 gpuwarden - gap [gpuwarden-gap@32473 "
            "dropped=\"7\" first_seq=\"100\" last_seq=\"106\"] 7 audit events (seq 100..106) "
            "were dropped by the syslog sink (queue full); the primary audit log has them");
  EXPECT_FALSE(FormatSyslogGapMessage({"bad host", "gpuwarden"}, 0, 1, 0, 0).ok());
}

}  // namespace
}  // namespace warden::audit
