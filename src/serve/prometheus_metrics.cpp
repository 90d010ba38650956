#include "serve/prometheus_metrics.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::serve {

std::string prometheus_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

std::string prometheus_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
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

LabeledCounter::LabeledCounter(std::vector<std::string> label_names)
    : names_(std::move(label_names)) {}

Counter& LabeledCounter::with(const std::vector<std::string>& values) {
  if (values.size() != names_.size())
    fail("metric labels: expected {} values, got {}", names_.size(), values.size());
  std::lock_guard lock(mu_);
  auto& c = counters_[values];
  if (!c) c = std::make_unique<Counter>();
  return *c;
}

std::string LabeledCounter::render_samples(const std::string& name) const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [values, c] : counters_) {
    out += name + "{";
    for (size_t i = 0; i < names_.size(); ++i) {
      if (i) out += ",";
      out += fmt::format("{}=\"{}\"", names_[i], prometheus_escape(values[i]));
    }
    out += "} " + prometheus_number(c->value()) + "\n";
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end())
    fail("histogram bounds must be strictly ascending");
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  // Bucket i holds values <= bounds_[i] (Prometheus "le"); the last is +Inf.
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++total_;
}

uint64_t Histogram::count() const {
  std::lock_guard lock(mu_);
  return total_;
}

double Histogram::sum() const {
  std::lock_guard lock(mu_);
  return sum_;
}

std::string Histogram::render_samples(const std::string& name) const {
  std::lock_guard lock(mu_);
  std::string out;
  uint64_t cum = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    cum += counts_[i];
    const std::string le = i < bounds_.size() ? prometheus_number(bounds_[i]) : "+Inf";
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, le, cum);
  }
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, prometheus_number(sum_), name, total_);
  return out;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help) {
  counters_.push_back(std::make_unique<Counter>());
  Counter* c = counters_.back().get();
  families_.push_back({name, help, "counter",
                       [c, name] { return name + " " + prometheus_number(c->value()) + "\n"; }});
  return *c;
}

LabeledCounter& MetricsRegistry::labeled_counter(const std::string& name, const std::string& help,
                                                 std::vector<std::string> label_names) {
  labeled_.push_back(std::make_unique<LabeledCounter>(std::move(label_names)));
  LabeledCounter* c = labeled_.back().get();
  families_.push_back({name, help, "counter", [c, name] { return c->render_samples(name); }});
  return *c;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      std::vector<double> bounds) {
  histograms_.push_back(std::make_unique<Histogram>(std::move(bounds)));
  Histogram* h = histograms_.back().get();
  families_.push_back({name, help, "histogram", [h, name] { return h->render_samples(name); }});
  return *h;
}

void MetricsRegistry::gauge(const std::string& name, const std::string& help,
                            std::function<double()> read) {
  families_.push_back({name, help, "gauge", [read = std::move(read), name] {
                         return name + " " + prometheus_number(read()) + "\n";
                       }});
}

std::string MetricsRegistry::render() const {
  std::string out;
  for (const Family& f : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.type);
    out += f.samples();
  }
  return out;
}

}  // namespace keel::serve
