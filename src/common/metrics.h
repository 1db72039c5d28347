// Metrics: a small Prometheus registry (counters, gauges, histograms with labels) rendered in the
// text exposition format 0.0.4 for `/metrics`.
//
// Hot path: Counter/Gauge/Histogram updates are lock-free atomics. Looking a child up by label
// values (Family::WithLabels) takes the family's mutex and a map lookup; callers on a hot path
// may keep the returned reference, which stays valid for the registry's lifetime (children are
// never removed). All types are thread-safe. Registering a name twice returns the existing family
// when type and label names agree; a conflicting re-registration is a programming error and aborts.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace warden::common::metrics {

// Monotonic counter. Inc with a negative value is ignored (counters never go down).
class Counter {
 public:
  void Inc(double v = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0);
  void Dec(double v = 1.0) { Inc(-v); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Histogram with fixed upper bounds (sorted ascending; +Inf is implicit).
class Histogram {
 public:
  explicit Histogram(std::span<const double> bounds);
  void Observe(double v);
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  // Cumulative count of observations <= bounds()[i]; i == bounds().size() is +Inf.
  uint64_t CumulativeCount(size_t i) const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // non-cumulative, bounds_.size() + 1
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Latency buckets in seconds, from 100us to 10s.
std::span<const double> DefaultLatencyBuckets();

enum class MetricType { kCounter, kGauge, kHistogram };

// A metric name with its help text, label names and one child per distinct label-value tuple.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends this family (HELP, TYPE and every child) in text format 0.0.4.
  void Render(std::string& out) const;

 protected:
  // Returns the child for `values` (one per label name; missing values read as ""), creating it
  // on first use. The pointer stays valid for the family's lifetime.
  void* Child(std::span<const std::string_view> values);
  virtual std::shared_ptr<void> NewChild() = 0;
  virtual void RenderChild(std::string& out, const std::string& labels, const void* child) const = 0;

 private:
  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mu_;
  // Key: label values joined by '\0' (label values cannot usefully contain NUL).
  std::map<std::string, std::pair<std::vector<std::string>, void*>, std::less<>> children_;
  std::vector<std::shared_ptr<void>> owned_;
};

template <typename T>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
         std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(help), type, std::move(labels)),
        bounds_(std::move(bounds)) {}

  T& WithLabels(std::initializer_list<std::string_view> values) {
    return *static_cast<T*>(Child(std::span<const std::string_view>(values.begin(), values.size())));
  }
  T& WithLabels(std::span<const std::string_view> values) {
    return *static_cast<T*>(Child(values));
  }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::shared_ptr<void> NewChild() override;
  void RenderChild(std::string& out, const std::string& labels, const void* child) const override;
  std::vector<double> bounds_;
};

// Defined in metrics.cc for the three metric kinds.
template <>
std::shared_ptr<void> Family<Counter>::NewChild();
template <>
std::shared_ptr<void> Family<Gauge>::NewChild();
template <>
std::shared_ptr<void> Family<Histogram>::NewChild();
template <>
void Family<Counter>::RenderChild(std::string&, const std::string&, const void*) const;
template <>
void Family<Gauge>::RenderChild(std::string&, const std::string&, const void*) const;
template <>
void Family<Histogram>::RenderChild(std::string&, const std::string&, const void*) const;

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Owns metric families and renders them. Families are never removed.
class Registry {
 public:
  CounterFamily& AddCounter(std::string_view name, std::string_view help,
                            std::vector<std::string> label_names = {});
  GaugeFamily& AddGauge(std::string_view name, std::string_view help,
                        std::vector<std::string> label_names = {});
  // `bounds` must be sorted ascending and finite; empty means DefaultLatencyBuckets().
  HistogramFamily& AddHistogram(std::string_view name, std::string_view help,
                                std::vector<std::string> label_names = {},
                                std::vector<double> bounds = {});

  // The whole registry in Prometheus text format 0.0.4 (families sorted by name).
  // Serve with Content-Type `text/plain; version=0.0.4; charset=utf-8`.
  std::string RenderText() const;

  // The process-wide registry that built-in metrics (http, ...) register into.
  static Registry& Default();

 private:
  FamilyBase* Find(std::string_view name, MetricType type,
                   const std::vector<std::string>& label_names);
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_;
};

inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

// Exposed for tests: label-value escaping (\\, \", \n) and number formatting of the text format.
std::string EscapeLabelValue(std::string_view v);
std::string FormatValue(double v);

}  // namespace warden::common::metrics
