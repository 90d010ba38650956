// Loss-spike detector: a robust z-score of each step's loss against the median
// and the median absolute deviation (MAD) of a window of recent losses. A
// spike means a bad batch pushed the model off course; the run rolls back to
// the last checkpoint and skips the batches that caused it. Its state is part
// of the checkpoint so a resumed run decides exactly as the original would.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::resilience {

struct LossSpikeOptions {
  int64_t window = 50;       // recent accepted losses kept
  int64_t min_history = 20;  // no decision before this many losses
  double z_threshold = 6.0;  // robust z-score above which a loss is a spike
  // A spike must also exceed the median by this many nats: on a flat loss
  // curve the MAD is tiny and noise alone would give large z-scores.
  double min_delta = 0.5;
};

struct SpikeVerdict {
  bool spike = false;
  double z = 0;       // robust z-score (0 before min_history)
  double median = 0;  // of the window, before this loss
};

class LossSpikeDetector {
 public:
  explicit LossSpikeDetector(LossSpikeOptions opt = {}) : opt_(opt) {}

  // Judges `loss` against the window. Only losses that are not spikes (and
  // finite) enter the window, so one spike cannot raise the bar for the next.
  SpikeVerdict observe(double loss);

  // The window, for the checkpoint manifest.
  nlohmann::json to_json() const;
  // Restores a window written by to_json; IoError on a malformed value.
  void from_json(const nlohmann::json& j);
  int64_t size() const { return int64_t(window_.size()); }
  const LossSpikeOptions& options() const { return opt_; }

 private:
  LossSpikeOptions opt_;
  std::deque<double> window_;
};

// Median of values (copied; empty: 0).
double median_of(std::vector<double> values);

}  // namespace keel::resilience
