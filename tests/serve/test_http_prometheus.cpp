// The Prometheus registry behind /metrics: exposition text with HELP/TYPE
// lines, cumulative histogram buckets, escaped labels.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "serve/prometheus_metrics.h"

namespace keel::serve {
namespace {

TEST(Prometheus, CounterGaugeHistogramText) {
  MetricsRegistry r;
  Counter& c = r.counter("x_total", "Things.");
  c.inc();
  c.inc(2.5);
  r.gauge("q", "Queue.", [] { return 7.0; });
  Histogram& h = r.histogram("lat_seconds", "Latency.", {0.25, 1});
  h.observe(0.125);
  h.observe(0.25);  // le is inclusive
  h.observe(0.5);
  h.observe(3);
  const std::string t = r.render();
  EXPECT_NE(t.find("# HELP x_total Things.\n# TYPE x_total counter\nx_total 3.5\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("# TYPE q gauge\nq 7\n"), std::string::npos) << t;
  EXPECT_NE(t.find("# TYPE lat_seconds histogram\n"
                   "lat_seconds_bucket{le=\"0.25\"} 2\n"
                   "lat_seconds_bucket{le=\"1\"} 3\n"
                   "lat_seconds_bucket{le=\"+Inf\"} 4\n"
                   "lat_seconds_sum 3.875\n"
                   "lat_seconds_count 4\n"),
            std::string::npos)
      << t;
}

TEST(Prometheus, LabelsAreEscapedAndSorted) {
  MetricsRegistry r;
  LabeledCounter& c = r.labeled_counter("req_total", "Requests.", {"path", "code"});
  c.with({"/b", "200"}).inc();
  c.with({"/a\"\\\n", "404"}).inc(2);
  c.with({"/b", "200"}).inc();
  const std::string t = r.render();
  EXPECT_NE(t.find("req_total{path=\"/a\\\"\\\\\\n\",code=\"404\"} 2\n"
                   "req_total{path=\"/b\",code=\"200\"} 2\n"),
            std::string::npos)
      << t;
  EXPECT_THROW(c.with({"only one"}), Error);
}

TEST(Prometheus, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry r;
  Counter& c = r.counter("n_total", "N.");
  Histogram& h = r.histogram("h", "H.", {1});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.value(), 40000);
  EXPECT_EQ(h.count(), 40000u);
  EXPECT_DOUBLE_EQ(h.sum(), 20000);
}

TEST(Prometheus, NumberFormat) {
  EXPECT_EQ(prometheus_number(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(prometheus_number(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(prometheus_number(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(prometheus_number(42), "42");
  EXPECT_EQ(prometheus_number(0.25), "0.25");
}

TEST(Prometheus, RejectsUnsortedBounds) {
  EXPECT_THROW(Histogram({1, 0.5}), Error);
}

}  // namespace
}  // namespace keel::serve
