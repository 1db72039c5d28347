#include "common/metrics.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace warden::common::metrics {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterRendersHelpTypeAndLabels) {
  Registry r;
  auto& f = r.AddCounter("http_requests_total", "Requests served.", {"route", "method", "status"});
  f.WithLabels({"/api/v1/tenants", "GET", "200"}).Inc();
  f.WithLabels({"/api/v1/tenants", "GET", "200"}).Inc(2);
  f.WithLabels({"/healthz", "GET", "200"}).Inc();
  std::string text = r.RenderText();
  EXPECT_THAT(text, HasSubstr("# HELP http_requests_total Requests served.\n"
                              "# TYPE http_requests_total counter\n"));
  EXPECT_THAT(text, HasSubstr(
                        "http_requests_total{route=\"/api/v1/tenants\",method=\"GET\",status=\"200\"} 3\n"));
  EXPECT_THAT(text,
              HasSubstr("http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1\n"));
}

TEST(MetricsTest, CounterIgnoresNegativeIncrements) {
  Counter c;
  c.Inc(5);
  c.Inc(-3);
  EXPECT_EQ(c.Value(), 5);
}

TEST(MetricsTest, ChildHandleIsStable) {
  Registry r;
  auto& f = r.AddCounter("x_total", "x", {"a"});
  Counter* first = &f.WithLabels({"v"});
  for (int i = 0; i < 100; ++i) f.WithLabels({std::to_string(i)});
  EXPECT_EQ(first, &f.WithLabels({"v"}));
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  Registry r;
  auto& f = r.AddCounter("esc_total", "line1\nback\\slash", {"v"});
  f.WithLabels({"a\"b\\c\nd"}).Inc();
  std::string text = r.RenderText();
  EXPECT_THAT(text, HasSubstr("# HELP esc_total line1\\nback\\\\slash\n"));
  EXPECT_THAT(text, HasSubstr("esc_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
}

TEST(MetricsTest, GaugeGoesUpAndDown) {
  Registry r;
  auto& g = r.AddGauge("conns", "Open connections.").WithLabels({});
  g.Inc();
  g.Inc();
  g.Dec();
  EXPECT_EQ(g.Value(), 1);
  g.Set(7.5);
  EXPECT_THAT(r.RenderText(), HasSubstr("# TYPE conns gauge\nconns 7.5\n"));
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Registry r;
  auto& h = r.AddHistogram("lat_seconds", "Latency.", {"route"}, {0.125, 1, 10})
                .WithLabels({"/x"});
  h.Observe(0.0625);
  h.Observe(0.125);  // le is inclusive
  h.Observe(0.5);
  h.Observe(100);
  std::string text = r.RenderText();
  EXPECT_THAT(text, HasSubstr("# TYPE lat_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{route=\"/x\",le=\"0.125\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{route=\"/x\",le=\"1\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{route=\"/x\",le=\"10\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_sum{route=\"/x\"} 100.6875\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_count{route=\"/x\"} 4\n"));
}

TEST(MetricsTest, ReRegistrationReturnsSameFamily) {
  Registry r;
  auto& a = r.AddCounter("same_total", "x", {"l"});
  auto& b = r.AddCounter("same_total", "x", {"l"});
  EXPECT_EQ(&a, &b);
}

TEST(MetricsTest, ConflictingRegistrationAborts) {
  Registry r;
  r.AddCounter("dup", "x", {"l"});
  EXPECT_DEATH(r.AddGauge("dup", "x", {"l"}), "conflicting registration");
}

TEST(MetricsTest, FamiliesRenderSortedByName) {
  Registry r;
  r.AddCounter("b_total", "b").WithLabels({}).Inc();
  r.AddCounter("a_total", "a").WithLabels({}).Inc();
  std::string text = r.RenderText();
  EXPECT_LT(text.find("a_total"), text.find("b_total"));
}

TEST(MetricsTest, ConcurrentIncrementsAreNotLost) {
  Registry r;
  auto& f = r.AddCounter("c_total", "c", {"t"});
  auto& h = r.AddHistogram("h_seconds", "h");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        f.WithLabels({"x"}).Inc();
        h.WithLabels({}).Observe(0.001);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(f.WithLabels({"x"}).Value(), 40000);
  EXPECT_EQ(h.WithLabels({}).Count(), 40000u);
}

TEST(MetricsTest, FormatsSpecialValues) {
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(FormatValue(0.0 / 0.0), "NaN");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(0.25), "0.25");
}

TEST(MetricsTest, DefaultRegistryIsASingleton) {
  EXPECT_EQ(&Registry::Default(), &Registry::Default());
}

}  // namespace
}  // namespace warden::common::metrics
