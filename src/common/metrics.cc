#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace warden::common::metrics {

namespace {

void AtomicAdd(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

constexpr double kLatencyBuckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                      5,      10};

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// A programming error (two modules disagreeing about one metric) — fail loudly at startup.
[[noreturn]] void Conflict(std::string_view name) {
  std::fprintf(stderr, "metrics: conflicting registration of %.*s\n",
               static_cast<int>(name.size()), name.data());
  std::abort();
}

// Appends `labels` (already rendered `a="x",b="y"`, possibly empty) plus an optional extra pair.
void AppendSeries(std::string& out, std::string_view name, std::string_view suffix,
                  const std::string& labels, std::string_view extra, double value) {
  out.append(name);
  out.append(suffix);
  if (!labels.empty() || !extra.empty()) {
    out += '{';
    out += labels;
    if (!labels.empty() && !extra.empty()) out += ',';
    out.append(extra);
    out += '}';
  }
  out += ' ';
  out += FormatValue(value);
  out += '\n';
}

}  // namespace

void Counter::Inc(double v) {
  if (!(v > 0)) return;
  AtomicAdd(value_, v);
}

void Gauge::Inc(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds.begin(), bounds.end()),
      buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

uint64_t Histogram::CumulativeCount(size_t i) const {
  uint64_t total = 0;
  for (size_t j = 0; j <= i && j <= bounds_.size(); ++j) {
    total += buckets_[j].load(std::memory_order_relaxed);
  }
  return total;
}

std::span<const double> DefaultLatencyBuckets() { return kLatencyBuckets; }

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integral values print without exponent or fraction ("42"), others in shortest form.
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

void* FamilyBase::Child(std::span<const std::string_view> values) {
  // Reused per thread so that a lookup of an existing child allocates nothing.
  thread_local std::string key;
  key.clear();
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (i > 0) key += '\0';
    if (i < values.size()) key.append(values[i]);
  }
  std::lock_guard lock(mu_);
  auto it = children_.find(key);
  if (it != children_.end()) return it->second.second;
  std::vector<std::string> vals;
  for (size_t i = 0; i < label_names_.size(); ++i) {
    vals.emplace_back(i < values.size() ? values[i] : std::string_view());
  }
  std::shared_ptr<void> owned = NewChild();
  void* child = owned.get();
  owned_.push_back(std::move(owned));
  children_.emplace(key, std::make_pair(std::move(vals), child));
  return child;
}

void FamilyBase::Render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  out += EscapeHelp(help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += TypeName(type_);
  out += '\n';
  std::lock_guard lock(mu_);
  for (const auto& [key, entry] : children_) {
    std::string labels;
    for (size_t i = 0; i < label_names_.size(); ++i) {
      if (i > 0) labels += ',';
      labels += label_names_[i];
      labels += "=\"";
      labels += EscapeLabelValue(entry.first[i]);
      labels += '"';
    }
    RenderChild(out, labels, entry.second);
  }
}

template <>
std::shared_ptr<void> Family<Counter>::NewChild() {
  return std::make_shared<Counter>();
}
template <>
std::shared_ptr<void> Family<Gauge>::NewChild() {
  return std::make_shared<Gauge>();
}
template <>
std::shared_ptr<void> Family<Histogram>::NewChild() {
  return std::make_shared<Histogram>(bounds_);
}

template <>
void Family<Counter>::RenderChild(std::string& out, const std::string& labels,
                                  const void* child) const {
  AppendSeries(out, name(), "", labels, "", static_cast<const Counter*>(child)->Value());
}
template <>
void Family<Gauge>::RenderChild(std::string& out, const std::string& labels,
                                const void* child) const {
  AppendSeries(out, name(), "", labels, "", static_cast<const Gauge*>(child)->Value());
}
template <>
void Family<Histogram>::RenderChild(std::string& out, const std::string& labels,
                                    const void* child) const {
  const auto* h = static_cast<const Histogram*>(child);
  uint64_t cumulative = 0;
  // Read buckets once, accumulating, so the rendered series is monotonic.
  for (size_t i = 0; i <= h->bounds().size(); ++i) {
    cumulative = std::max(cumulative, h->CumulativeCount(i));
    std::string le = "le=\"";
    le += i < h->bounds().size() ? FormatValue(h->bounds()[i]) : "+Inf";
    le += '"';
    AppendSeries(out, name(), "_bucket", labels, le, static_cast<double>(cumulative));
  }
  AppendSeries(out, name(), "_sum", labels, "", h->Sum());
  AppendSeries(out, name(), "_count", labels, "", static_cast<double>(cumulative));
}

FamilyBase* Registry::Find(std::string_view name, MetricType type,
                           const std::vector<std::string>& label_names) {
  auto it = families_.find(name);
  if (it == families_.end()) return nullptr;
  if (it->second->type() != type || it->second->label_names() != label_names) Conflict(name);
  return it->second.get();
}

CounterFamily& Registry::AddCounter(std::string_view name, std::string_view help,
                                    std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  if (auto* f = Find(name, MetricType::kCounter, label_names)) {
    return *static_cast<CounterFamily*>(f);
  }
  auto f = std::make_unique<CounterFamily>(std::string(name), std::string(help),
                                           MetricType::kCounter, std::move(label_names));
  auto& ref = *f;
  families_.emplace(std::string(name), std::move(f));
  return ref;
}

GaugeFamily& Registry::AddGauge(std::string_view name, std::string_view help,
                                std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  if (auto* f = Find(name, MetricType::kGauge, label_names)) {
    return *static_cast<GaugeFamily*>(f);
  }
  auto f = std::make_unique<GaugeFamily>(std::string(name), std::string(help),
                                         MetricType::kGauge, std::move(label_names));
  auto& ref = *f;
  families_.emplace(std::string(name), std::move(f));
  return ref;
}

HistogramFamily& Registry::AddHistogram(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds) {
  if (bounds.empty()) {
    auto d = DefaultLatencyBuckets();
    bounds.assign(d.begin(), d.end());
  }
  std::lock_guard lock(mu_);
  if (auto* f = Find(name, MetricType::kHistogram, label_names)) {
    auto* h = static_cast<HistogramFamily*>(f);
    if (h->bounds() != bounds) Conflict(name);
    return *h;
  }
  auto f = std::make_unique<HistogramFamily>(std::string(name), std::string(help),
                                             MetricType::kHistogram, std::move(label_names),
                                             std::move(bounds));
  auto& ref = *f;
  families_.emplace(std::string(name), std::move(f));
  return ref;
}

std::string Registry::RenderText() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) family->Render(out);
  return out;
}

Registry& Registry::Default() {
  static Registry* registry = new Registry();  // never destroyed: used from detached threads
  return *registry;
}

}  // namespace warden::common::metrics
