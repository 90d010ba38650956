#include "resilience/loss_spike_detector.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace keel::resilience {

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t n = v.size();
  std::nth_element(v.begin(), v.begin() + n / 2, v.end());
  const double hi = v[n / 2];
  if (n % 2) return hi;
  const double lo = *std::max_element(v.begin(), v.begin() + n / 2);
  return 0.5 * (lo + hi);
}

SpikeVerdict LossSpikeDetector::observe(double loss) {
  SpikeVerdict v;
  if (!std::isfinite(loss)) return v;  // the NaN policy owns non-finite losses
  if (int64_t(window_.size()) >= opt_.min_history) {
    std::vector<double> w(window_.begin(), window_.end());
    v.median = median_of(w);
    for (double& x : w) x = std::fabs(x - v.median);
    // 1.4826 * MAD estimates the standard deviation of normal noise; the
    // floor keeps a perfectly flat window from dividing by zero.
    const double sigma = std::max(1.4826 * median_of(w), 1e-6);
    v.z = (loss - v.median) / sigma;
    v.spike = v.z > opt_.z_threshold && loss - v.median > opt_.min_delta;
  }
  if (!v.spike) {
    window_.push_back(loss);
    while (int64_t(window_.size()) > opt_.window) window_.pop_front();
  }
  return v;
}

nlohmann::json LossSpikeDetector::to_json() const {
  return nlohmann::json{{"window", std::vector<double>(window_.begin(), window_.end())}};
}

void LossSpikeDetector::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("window") || !j["window"].is_array())
    fail<IoError>("loss spike detector state: expected {{\"window\": [numbers]}}, got {}",
                  j.dump());
  window_.clear();
  for (const auto& x : j["window"]) {
    if (!x.is_number()) fail<IoError>("loss spike detector state: non-number {}", x.dump());
    window_.push_back(x.get<double>());
  }
  while (int64_t(window_.size()) > opt_.window) window_.pop_front();
}

}  // namespace keel::resilience
