// AVX2 lanes for the GEMV kernel: 16 partial sums in two 8-wide registers.
#include <immintrin.h>

#include "backend/cpu/gemv_impl.h"

namespace keel::backend::cpu::gemv_detail {

namespace {
struct Avx2Lanes {
  struct Acc {
    __m256 lo, hi;
  };
  static Acc zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static Acc load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static Acc fma(Acc a, Acc b, Acc c) {
    return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
  }
  static float reduce(Acc a) {
    alignas(32) float p[16];
    _mm256_store_ps(p, a.lo);
    _mm256_store_ps(p + 8, a.hi);
    return tree16(p);
  }
  static float fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
};
}  // namespace

GemvFn gemv_avx2() {
  return &gemv_rows<Avx2Lanes>;
}

}  // namespace keel::backend::cpu::gemv_detail
