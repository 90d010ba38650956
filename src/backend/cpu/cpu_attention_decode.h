// Causal attention forward for a single query row (a decode step), split
// over the keys: each work item owns one contiguous chunk of key rows, reads
// them whole, one row after the other in memory order (every head of a row
// before the next row, so the K and V rows it touches are two sequential
// streams the hardware prefetches), and keeps one online softmax per head;
// the chunks' partial results are merged at the end. Per head, by contrast,
// a row is read at the cache's row stride, and with the cache cold (the
// weights streamed through since the last step) that waited on memory
// latency at a fraction of the read bandwidth.
#pragma once
#include "backend/cpu/cpu_attention_rows.h"
#include "backend/cpu/gemv_team.h"
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

// Fewest keys a chunk gets, and the most chunks one row is split into.
inline constexpr int64_t kDecodeChunkMinKeys = 16;
inline constexpr int64_t kDecodeMaxChunks = 32;

// Chunks of a row with Tk keys: the largest power of two (up to
// kDecodeMaxChunks) whose chunks keep kDecodeChunkMinKeys keys. A function
// of Tk alone, so the sums and the result do not depend on the thread count.
inline int64_t decode_chunks(int64_t Tk) {
  int64_t n = 1;
  while (2 * n <= kDecodeMaxChunks && 2 * n * kDecodeChunkMinKeys <= Tk) n *= 2;
  return n;
}

// One chunk's state per query head: running max, sum of exponentials and
// the unnormalised output row.
struct DecodePart {
  float* m;    // NH
  float* l;    // NH
  float* acc;  // NH x HS
};

// Keys [j0, j1) of batch row b into part: blocks of kKeyBlock keys, each
// scored for all heads from whole key rows, then one online-softmax update
// per head, then the block's value rows added in whole, key by key.
// Rows go strictly in memory order: taking 8 rows at a time, head by head
// (each head's slice of the 8 rows, then the next head's), read the cold
// cache as 8 short interleaved streams and took 25-30% longer at 2,048 keys
// (2 threads, 12 layers of 768-wide f32 rows between q8_0-sized matvecs:
// 381-408 against 286-302 us a layer) and 20-25% longer at 48 keys on one
// thread. The sums are the same either way (row_scores and weighted_rows
// give every key the same operations in the same order).
template <class S, class T>
void decode_chunk(const AttentionArgs& a, const float* qs, const T* kb, const T* vb, int64_t j0,
                  int64_t j1, float* s, DecodePart part) {
  const int64_t HS = a.HS, NH = a.NH, group = a.NH / a.NKV;
  for (int64_t h = 0; h < NH; ++h) {
    part.m[h] = -INFINITY;
    part.l[h] = 0.f;
    for (int64_t d = 0; d < HS; ++d) part.acc[h * HS + d] = 0.f;
  }
  for (int64_t jb = j0; jb < j1; jb += kKeyBlock) {
    const int64_t jn = imin(j1 - jb, kKeyBlock);
    for (int64_t j = 0; j < jn; ++j) {
      const T* kr = kb + (jb + j) * a.kv_row_stride;
      for (int64_t h = 0; h < NH; ++h)
        row_scores<S>(qs + h * HS, kr + (h / group) * HS, a.kv_row_stride, 1, HS, a.scale,
                      s + h * kKeyBlock + j);
    }
    for (int64_t h = 0; h < NH; ++h) {
      float* sh = s + h * kKeyBlock;
      float bm = -INFINITY;
      for (int64_t j = 0; j < jn; ++j) bm = Scalar::max(bm, sh[j]);
      const float m_new = Scalar::max(part.m[h], bm);
      const float corr = exp_v<Scalar>(part.m[h] - m_new);
      if (corr != 1.f) {
        part.l[h] *= corr;
        float* ah = part.acc + h * HS;
        for (int64_t d = 0; d < HS; ++d) ah[d] *= corr;
      }
      exp_shifted<S>(sh, jn, m_new);
      part.l[h] += row_sum<S>(jn, [&](auto ll, int64_t j) {
        using L = decltype(ll);
        return L::load(sh + j);
      });
      part.m[h] = m_new;
    }
    for (int64_t j = 0; j < jn; ++j) {
      const T* vr = vb + (jb + j) * a.kv_row_stride;
      for (int64_t h = 0; h < NH; ++h)
        weighted_rows<S>(s + h * kKeyBlock + j, 1, vr + (h / group) * HS, a.kv_row_stride,
                         part.acc + h * HS, HS);
    }
  }
}

template <class S, class T>
void attention_fwd_decode(const AttentionArgs& a, const T* q, const T* k, const T* v, T* o,
                          float* lse, int threads) {
  const int64_t HS = a.HS, NH = a.NH, Tk = a.Tk, nc = decode_chunks(Tk);
  const int64_t part_floats = NH * (HS + 2);
  Buf<float> parts(a.B * nc * part_floats);
  const auto part_of = [&](int64_t item) {
    float* p = parts.p + item * part_floats;
    return DecodePart{p, p + NH, p + 2 * NH};
  };
  const auto body = [&](int64_t item) {
    const int64_t b = item / nc, c = item % nc;
    Buf<float> qs(NH * HS), s(NH * kKeyBlock);
    for (int64_t h = 0; h < NH; ++h)
      load_row<S>(q + b * a.q_batch_stride + h * HS, 1.f, qs.p + h * HS, HS);
    decode_chunk<S>(a, qs.p, k + b * a.kv_batch_stride, v + b * a.kv_batch_stride, c * Tk / nc,
                    (c + 1) * Tk / nc, s.p, part_of(item));
  };
  // Between two matvecs whose team is still awake (cpu_attention_rows.h).
  team_for(threads, a.B * nc, body);
  // Merge the chunks in order: the same sums whatever thread ran each.
  Buf<float> acc(HS);
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < NH; ++h) {
      float m = -INFINITY;
      for (int64_t c = 0; c < nc; ++c) m = Scalar::max(m, part_of(b * nc + c).m[h]);
      T* orow = o + (b * NH + h) * HS;
      if (m == -INFINITY) {  // no visible key
        for (int64_t d = 0; d < HS; ++d) Scalar::store(orow + d, 0.f);
        lse[b * NH + h] = -INFINITY;
        continue;
      }
      float l = 0.f;
      for (int64_t d = 0; d < HS; ++d) acc[d] = 0.f;
      for (int64_t c = 0; c < nc; ++c) {
        const DecodePart p = part_of(b * nc + c);
        if (p.m[h] == -INFINITY) continue;
        const float w = exp_v<Scalar>(p.m[h] - m);
        l = std::fma(p.l[h], w, l);
        axpy<S>(w, p.acc + h * HS, acc.p, HS);
      }
      const float inv = 1.f / l;
      vec_loop<S>(0, HS, [&](auto ll, int64_t d) {
        using L = decltype(ll);
        L::store(orow + d, L::mul(L::load(acc.p + d), L::set1(inv)));
      });
      lse[b * NH + h] = m + std::log(l);
    }
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
