// AVX-512 VNNI integer dot kernels: the AVX2 kernels with the byte products
// accumulated by one vpdpbusd (256-bit form, AVX512-VL) instead of
// maddubs + madd. Same blocks, same order, so the results are identical.
// Batch-1 Q4_0 pairs use the 512-bit kernel of quant_gemv_avx512.cpp.
#include "backend/cpu/quant_dot.h"

namespace keel::backend::cpu::quant_detail {

namespace {
struct VnniDot {
  static __m256i dot(__m256i acc, __m256i ua, __m256i sb) {
    return _mm256_dpbusd_epi32(acc, ua, sb);
  }
};
}  // namespace

const QDotTable& qdot_avx512() {
  static const QDotTable t = [] {
    QDotTable v = table<VnniDot>();
    v.dot_q4_pair = &dot_q4_pair_avx512;
    return v;
  }();
  return t;
}

}  // namespace keel::backend::cpu::quant_detail
