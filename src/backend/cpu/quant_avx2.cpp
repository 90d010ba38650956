// AVX2 integer dot kernels: 32 byte products per maddubs, pairs widened to
// int32 with madd against ones.
#include "backend/cpu/quant_dot.h"

namespace keel::backend::cpu::quant_detail {

namespace {
struct Avx2Dot {
  static __m256i dot(__m256i acc, __m256i ua, __m256i sb) {
    const __m256i p16 = _mm256_maddubs_epi16(ua, sb);  // |sum of pairs| <= 2*127*127: no saturation
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
  }
};
}  // namespace

const QDotTable& qdot_avx2() {
  return table<Avx2Dot>();
}

}  // namespace keel::backend::cpu::quant_detail
