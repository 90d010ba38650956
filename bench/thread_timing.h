// Single-thread CPU-time measurement for microbenchmarks run on a shared,
// loaded machine: a thread's CPU seconds do not count time it waited for a
// core, and the median of interleaved rounds drops the outliers.
#pragma once
#include <time.h>

#include <algorithm>
#include <vector>

namespace keel::bench {

inline double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// The middle value; with an even count, the mean of the two middle ones.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace keel::bench
