#include "train/metrics.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"

namespace keel::train {

namespace {
// JSON has no NaN/Inf: write null so a diverged step is still a valid line.
nlohmann::ordered_json num(double x) {
  return std::isfinite(x) ? nlohmann::ordered_json(x) : nullptr;
}
}  // namespace

std::string metrics_json(const StepMetrics& m) {
  nlohmann::ordered_json j;
  j["step"] = m.step;
  j["loss"] = num(m.loss);
  if (m.val_loss) j["val_loss"] = num(*m.val_loss);
  j["lr"] = num(m.lr);
  j["grad_norm"] = num(m.grad_norm);
  j["tokens_per_s"] = num(m.tokens_per_s);
  j["mfu"] = num(m.mfu);
  j["peak_rss_mb"] = num(m.peak_rss_mb);
  j["step_seconds"] = num(m.step_seconds);
  if (m.skipped) j["skipped"] = true;
  if (m.ckpt_stall_s) j["ckpt_stall_s"] = num(*m.ckpt_stall_s);
  if (m.snapshot_stall_s) j["snapshot_stall_s"] = num(*m.snapshot_stall_s);
  if (m.snapshot_bytes) j["snapshot_bytes"] = *m.snapshot_bytes;
  if (m.bytes_sent) j["bytes_sent"] = *m.bytes_sent;
  j["host_syncs"] = m.host_syncs;
  j["bytes_to_device"] = m.bytes_to_device;
  j["bytes_to_host"] = m.bytes_to_host;
  for (const auto& [name, v] : m.model_stats) j[name] = num(v);
  return j.dump();
}

MetricsLog::MetricsLog(const std::string& path, bool truncate) : path_(path) {
  f_ = std::fopen(path.c_str(), truncate ? "w" : "a");
  if (!f_) fail<IoError>("{}: cannot open metrics file: {}", path, std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::append(const StepMetrics& m) {
  append_line(metrics_json(m));
}

void MetricsLog::append_line(const std::string& json) {
  const std::string line = json + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    fail<IoError>("{}: cannot append metrics: {}", path_, std::strerror(errno));
}

int64_t keep_metrics_through(const std::string& path, int64_t last_step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return 0;
  int64_t last_kept = 0;
  const std::string text = io::read_file_bytes(path);
  std::string kept;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    // A last line without its newline was cut by a crash mid-write: dropped.
    if (end == std::string::npos) break;
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") ||
        !j["step"].is_number_integer()) {
      log().warn("{}:{}: dropped: not a metrics line with an integer \"step\"", path, line_no);
      continue;
    }
    if (const int64_t step = j["step"].get<int64_t>(); step <= last_step) {
      kept += line + "\n";
      last_kept = std::max(last_kept, step);
    }
  }
  io::write_file_atomic(path, kept);
  return last_kept;
}

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

}  // namespace keel::train
