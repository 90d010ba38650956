// AVX-512 lanes for the GEMV kernel: 16 partial sums in one register.
#include <immintrin.h>

#include "backend/cpu/gemv_impl.h"

namespace keel::backend::cpu::gemv_detail {

namespace {
struct Avx512Lanes {
  using Acc = __m512;
  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc load(const float* p) { return _mm512_loadu_ps(p); }
  static Acc fma(Acc a, Acc b, Acc c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(Acc a) {
    alignas(64) float p[16];
    _mm512_store_ps(p, a);
    return tree16(p);
  }
  static float fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
};
}  // namespace

GemvFn gemv_avx512() {
  return &gemv_rows<Avx512Lanes>;
}

}  // namespace keel::backend::cpu::gemv_detail
