// Per-step training metrics and the metrics.jsonl file they are appended to
// (one JSON object per line, flushed each step so a crash loses at most the
// line being written).
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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
  // Seconds the loop was held by a checkpoint save after this step (waiting
  // for the previous write + copying the snapshot); absent when none was taken.
  std::optional<double> ckpt_stall_s;
  // In-memory snapshot after this step: seconds the loop was held (finishing
  // the previous copy to the buddy rank + writing its own) and the shared
  // memory this rank holds for snapshots (own and buddy slots); absent when
  // none was taken.
  std::optional<double> snapshot_stall_s;
  std::optional<uint64_t> snapshot_bytes;
  // Bytes this replica sent to its peers in the step (data parallelism only).
  std::optional<uint64_t> bytes_sent;
  // Host waits and bytes moved between host and device in the step (and its
  // evaluation), from the backend's counters; all zero on host-memory backends.
  uint64_t host_syncs = 0, bytes_to_device = 0, bytes_to_host = 0;
  // Architecture figures (Model::step_statistics, e.g. "expert_load_max_mean",
  // "routing_entropy"), written as top-level fields in this order.
  std::vector<std::pair<std::string, double>> model_stats;
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
  // Appends one already formatted metrics line (restored from a checkpoint).
  void append_line(const std::string& json);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// Rewrites the metrics file at `path` (atomically) keeping only the lines of
// steps <= last_step, so a run resumed from a checkpoint of last_step
// continues a consistent file. A missing file is left missing; a line that
// is not a JSON object with an integer "step" (a torn write) is dropped with
// a warning naming the line.
// Returns the step of the last line kept (0 when none).
int64_t keep_metrics_through(const std::string& path, int64_t last_step);

// Peak resident set size of this process in MiB.
double peak_rss_mb();

}  // namespace keel::train
