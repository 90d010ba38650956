// A small Prometheus registry for the HTTP server: counters (optionally with
// labels), gauges read at scrape time and histograms, rendered in the text
// exposition format (# HELP / # TYPE lines, *_bucket{le=...}, _sum, _count).
#pragma once
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keel::serve {

// A monotonically increasing value; thread-safe.
class Counter {
 public:
  void inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counters keyed by label values (one value per label name); thread-safe.
class LabeledCounter {
 public:
  explicit LabeledCounter(std::vector<std::string> label_names);
  // The counter for these label values (created at 0 on first use).
  Counter& with(const std::vector<std::string>& values);
  // Lines "name{a="x",b="y"} value\n" sorted by label values.
  std::string render_samples(const std::string& name) const;

 private:
  std::vector<std::string> names_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Counter>> counters_;
};

// Cumulative-bucket histogram with fixed upper bounds (ascending, +Inf implied).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  uint64_t count() const;
  double sum() const;
  // _bucket/_sum/_count lines for `name`.
  std::string render_samples(const std::string& name) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
  uint64_t total_ = 0;
};

// Metric families in registration order. Registration happens at start-up;
// the returned references stay valid for the registry's life.
class MetricsRegistry {
 public:
  Counter& counter(const std::string& name, const std::string& help);
  LabeledCounter& labeled_counter(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names);
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> bounds);
  // A gauge whose value is read by `read` at each scrape.
  void gauge(const std::string& name, const std::string& help, std::function<double()> read);
  // The whole exposition text.
  std::string render() const;

 private:
  struct Family {
    std::string name, help, type;
    std::function<std::string()> samples;
  };
  std::vector<Family> families_;
  std::vector<std::unique_ptr<Counter>> counters_;
  std::vector<std::unique_ptr<LabeledCounter>> labeled_;
  std::vector<std::unique_ptr<Histogram>> histograms_;
};

// Prometheus number formatting: shortest round-trip form, "+Inf"/"-Inf"/"NaN".
std::string prometheus_number(double v);
// Label value escaping: backslash, double quote and newline.
std::string prometheus_escape(const std::string& s);

}  // namespace keel::serve
