// AVX-512 lanes for the GEMV kernel: 16 partial sums in one register. With
// 2 to 8 x rows, every x row's sums of a W row stay in registers (one W load
// per x row's fma, not four x rows at a time over W twice) and the sums of
// several W rows are added up in one transposed reduction: the same pairs in
// the same tree as tree16, so the bits equal the other levels'.
// GCC 12's 512-bit intrinsics start from _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports as a false error.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
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

// The 16 sums of v[0..16), each tree16 of its lanes (lane j with j + 8,
// then j + 4, j + 2, j + 1), as lanes 0..15 of one register.
inline __m512 reduce16(const __m512* v) {
  __m512 s1[8], s2[4], s3[2];
  // j + 8: the upper 256 bits onto the lower, two vectors to a register.
  for (int i = 0; i < 8; ++i)
    s1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                          _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  // j + 4: 128-bit quarters 1 onto 0 and 3 onto 2; four vectors to a register.
  for (int i = 0; i < 4; ++i)
    s2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0x88),
                          _mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0xDD));
  // j + 2, then j + 1, within each quarter.
  for (int i = 0; i < 2; ++i)
    s3[i] = _mm512_add_ps(_mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s3[0], s3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(s3[0], s3[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // Lane 4q + t holds the sum of v[4t + q].
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, r);
}

// W rows [n, n + rows) (rows <= 16 / P) against MC x rows, one W row at a
// time in memory order, its MC sums (lane j over k = j mod 16, one fma per k
// in order) in registers; each row's sums wait in slots r * P + i until
// 16 / P rows are done and reduce16 adds them all up. Against four x rows at
// a time (scratch loop, 2 threads, a 154 MB f32 matrix out of cache): 4 x
// rows 4.5-4.8 against 5.9-6.0 ms, 8 rows 10.0-10.3 either way; a 9.4 MB
// one on 1 thread, 8 rows: 0.70 against 0.85-0.90 ms. Two W rows at once (two
// streams, 10 loads for 16 fmas) or four (four streams) were no faster. x rows
// off 64-byte alignment cost 30-40% (those figures had them; the engine's
// activations are aligned: 8 rows on 1 thread then reach 59-78 GFLOP/s).
template <int MC, int P>
void rows_group(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y,
                int64_t ldy, int64_t n, int64_t rows, float alpha, float beta) {
  static_assert(MC <= P && 16 % P == 0);
  const int64_t K16 = K / 16 * 16;
  __m512 slot[16];
  for (auto& v : slot) v = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + (n + r) * ldw;
    __m512 acc[MC];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t k = 0; k < K16; k += 16) {
      const __m512 wv = _mm512_loadu_ps(wr + k);
      for (int i = 0; i < MC; ++i)
        acc[i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i * ldx + k), acc[i]);
    }
    for (int i = 0; i < MC; ++i) slot[r * P + i] = acc[i];
  }
  alignas(64) float s[16];
  _mm512_store_ps(s, reduce16(slot));
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + (n + r) * ldw;
    for (int i = 0; i < MC; ++i) {
      float t = s[r * P + i];
      for (int64_t k = K16; k < K; ++k) t = __builtin_fmaf(wr[k], x[i * ldx + k], t);
      float* out = y + i * ldy + n + r;
      *out = beta == 0.f ? alpha * t : alpha * t + beta * *out;
    }
  }
}

template <int MC, int P>
void rows_all(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t K, float* y,
              int64_t ldy, int64_t r0, int64_t r1, float alpha, float beta) {
  constexpr int64_t G = 16 / P;
  for (int64_t n = r0; n < r1; n += G)
    rows_group<MC, P>(x, ldx, w, ldw, K, y, ldy, n, r1 - n < G ? r1 - n : G, alpha, beta);
}

void gemv_rows_avx512(const float* x, int64_t ldx, int64_t M, const float* w, int64_t ldw,
                      int64_t K, float* y, int64_t ldy, int64_t r0, int64_t r1, float alpha,
                      float beta) {
  // One x row streams W at the memory's rate already; its dot stays as is.
  switch (M) {
    case 1:
      return gemv_rows<Avx512Lanes>(x, ldx, M, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 2:
      return rows_all<2, 2>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 3:
      return rows_all<3, 4>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 4:
      return rows_all<4, 4>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 5:
      return rows_all<5, 8>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 6:
      return rows_all<6, 8>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 7:
      return rows_all<7, 8>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    case 8:
      return rows_all<8, 8>(x, ldx, w, ldw, K, y, ldy, r0, r1, alpha, beta);
    default:  // more rows than the decode GEMV takes: four at a time
      return gemv_rows<Avx512Lanes>(x, ldx, M, w, ldw, K, y, ldy, r0, r1, alpha, beta);
  }
}
}  // namespace

GemvFn gemv_avx512() {
  return &gemv_rows_avx512;
}

}  // namespace keel::backend::cpu::gemv_detail
