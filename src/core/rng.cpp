#include "core/rng.h"

#include <cmath>

namespace keel {

std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t counter) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32);
  uint32_t c2 = uint32_t(stream), c3 = uint32_t(stream >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c0;
    uint64_t p1 = uint64_t(M1) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = uint32_t(p1);
    uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = uint32_t(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  return {c0, c1, c2, c3};
}

uint64_t Rng::u64(uint64_t i) const {
  auto w = philox4x32(seed_, stream_, i);
  return (uint64_t(w[0]) << 32) | w[1];
}

float Rng::uniform(uint64_t i) const {
  auto w = philox4x32(seed_, stream_, i);
  return float(w[0] >> 8) * (1.0f / 16777216.0f);
}

float Rng::normal(uint64_t i) const {
  auto w = philox4x32(seed_, stream_, i);
  // u1 in (0, 1] so log is finite.
  double u1 = (double(w[0]) + 1.0) / 4294967296.0;
  double u2 = double(w[1]) / 4294967296.0;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

uint64_t Rng::below(uint64_t i, uint64_t n) const {
  auto w = philox4x32(seed_, stream_, i);
  uint64_t x = (uint64_t(w[0]) << 32) | w[1];
  // Multiply-high maps 64 random bits to [0, n) without modulo bias beyond 2^-32.
  return uint64_t((static_cast<unsigned __int128>(x) * n) >> 64);
}

void Rng::fill_normal(float* out, int64_t n, float stddev, uint64_t offset) const {
  for (int64_t k = 0; k < n; ++k) out[k] = normal(offset + uint64_t(k)) * stddev;
}

void Rng::fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t offset) const {
  for (int64_t k = 0; k < n; ++k) out[k] = lo + (hi - lo) * uniform(offset + uint64_t(k));
}

}  // namespace keel
