// Per-step training metrics and the metrics.jsonl file they are appended to
// (one JSON object per line, flushed each step so a crash loses at most the
// line being written).
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace keel::train {

struct StepMetrics {
  int64_t step = 0;  // 1-based: the number of optimizer steps done after this one
  double loss = 0;   // mean training loss over the step's micro-batches
  std::optional<double> val_loss;
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;
  double mfu = 0;  // model FLOPs / (seconds * peak FLOP/s)
  double peak_rss_mb = 0;
  double step_seconds = 0;
  bool skipped = false;  // non-finite loss or gradient: the update was not applied
};

// The line written for m (no trailing newline).
std::string metrics_json(const StepMetrics& m);

class MetricsLog {
 public:
  // Opens `path` for appending, or truncates it first when `truncate`.
  MetricsLog(const std::string& path, bool truncate);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void append(const StepMetrics& m);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// Peak resident set size of this process in MiB.
double peak_rss_mb();

}  // namespace keel::train
