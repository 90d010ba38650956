// The block codecs of gguf_kquants.h. Every float expression keeps the
// operand order of llama.cpp's reference quantizers: keel builds with
// -ffp-contract=off, and a reordered sum or a fused multiply-add changes which
// way a rounding tie falls, and with it the bytes of the file.
#include "io/gguf_kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace keel::io {

namespace {

// Below this a group is treated as all zeros (llama.cpp's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Round half to even by adding 1.5 * 2^23, which leaves the integer in the
// low mantissa bits: ggml's nearest_int, kept bit for bit (also outside the
// |v| < 2^22 it is meant for) and far cheaper than a libm call in the fits.
int round_even(float v) {
  const float t = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &t, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

float f16(uint16_t h) {
  return f16_to_f32(h);
}

// Asymmetric fit of n values to levels 0..nmax: x ~ scale * L + min with
// min <= 0, chosen by trying nstep + 1 stretched grids and solving weighted
// least squares for each; returns the scale and sets *neg_min = -min. Each
// grid is laid from the best min found so far, not the data's minimum: a
// different choice of origin gives different bytes.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min,
                    uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.f;
  }
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = uint8_t(std::clamp(round_even(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * float(L[i]) + min - x[i];
    best += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = uint8_t(l);
      sum_l += w[i] * float(l);
      sum_l2 += w[i] * float(l) * float(l);
      sum_xl += w[i] * float(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0)) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / D;
    float m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (m > 0) {
      m = 0;
      s = sum_xl / sum_l2;
    }
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = s * float(Laux[i]) + m - x[i];
      err += w[i] * (diff * diff);
    }
    if (err < best) {
      std::copy(Laux, Laux + n, L);
      best = err;
      scale = s;
      min = m;
    }
  }
  *neg_min = -min;
  return scale;
}

// Symmetric fit of n values to levels -nmax..nmax-1 weighted by x^2, trying
// 18 grids around nmax / max; L holds level + nmax. Returns the scale.
float fit_scale_symmetric(int n, int nmax, const float* x, int8_t* L) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  auto level = [&](float iscale, int i) {
    return std::clamp(round_even(iscale * x[i]), -nmax, nmax - 1);
  };
  float iscale = float(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, i);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(iscale, i);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = int8_t(level(iscale, i) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// The 6-bit scale j and min j of a q4_K / q5_K block: the first four sit in
// the low six bits of bytes 0-3 and 4-7; the last four split into a nibble of
// bytes 8-11 and the spare top two bits of bytes 0-7.
void unpack_scale_min(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// The shared part of q4_K and q5_K: per 32 elements an asymmetric fit, then
// the eight scales and mins quantized to 6 bits against the block's largest,
// then every element re-rounded against the scales as stored. Fills d, dmin,
// scales and L (levels 0..nmax).
template <class Block>
void quantize_scales_k(const float* x, Block& b, uint8_t* L, int nmax, float rmin, int nstep) {
  float scales[8], mins[8], weights[32];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xj = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xj[l] * xj[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    // Larger magnitudes matter more, with a floor of the group's RMS.
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xj[l]);
    scales[j] = fit_scale_min(32, nmax, xj, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(b.scales, 0, sizeof(b.scales));
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(round_even(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(round_even(inv_min * mins[j])));
    if (j < 4) {
      b.scales[j] = ls;
      b.scales[j + 4] = lm;
    } else {
      b.scales[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
      b.scales[j - 4] |= uint8_t((ls >> 4) << 6);
      b.scales[j] |= uint8_t((lm >> 4) << 6);
    }
  }
  b.d = f32_to_f16(max_scale / 63.f);
  b.dmin = f32_to_f16(max_min / 63.f);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    unpack_scale_min(j, b.scales, sc, m);
    const float d = f16(b.d) * float(sc);
    if (d == 0) continue;  // the fit's levels stay (they decode to the min either way)
    const float dm = f16(b.dmin) * float(m);
    for (int i = 0; i < 32; ++i)
      L[32 * j + i] = uint8_t(std::clamp(round_even((x[32 * j + i] + dm) / d), 0, nmax));
  }
}

void quantize_q4_K(const float* x, BlockQ4_K& b) {
  uint8_t L[kQK_K];
  quantize_scales_k(x, b, L, 15, -1.f, 20);
  for (int j = 0; j < kQK_K; j += 64)
    for (int l = 0; l < 32; ++l) b.qs[j / 2 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

void quantize_q5_K(const float* x, BlockQ5_K& b) {
  uint8_t L[kQK_K];
  quantize_scales_k(x, b, L, 31, -0.5f, 15);
  std::memset(b.qh, 0, sizeof(b.qh));
  for (int j = 0; j < kQK_K; j += 64) {
    const int bit = j / 32;  // 0, 2, 4, 6
    for (int l = 0; l < 32; ++l) {
      const int lo = L[j + l], hi = L[j + l + 32];
      b.qh[l] |= uint8_t(((lo >> 4) << bit) | ((hi >> 4) << (bit + 1)));
      b.qs[j / 2 + l] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
    }
  }
}

void quantize_q6_K(const float* x, BlockQ6_K& b) {
  int8_t L[kQK_K];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit_scale_symmetric(16, 32, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > max_abs) {
      max_abs = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  std::memset(&b, 0, sizeof(b));
  if (max_abs < kGroupMaxEps) return;  // all zeros: d = 0
  const float iscale = -128.f / max_scale;
  b.d = f32_to_f16(1 / iscale);
  for (int j = 0; j < 16; ++j) b.scales[j] = int8_t(std::min(127, round_even(iscale * scales[j])));
  for (int j = 0; j < 16; ++j) {
    const float d = f16(b.d) * float(b.scales[j]);
    if (d == 0) continue;
    for (int i = 0; i < 16; ++i)
      L[16 * j + i] = int8_t(std::clamp(round_even(x[16 * j + i] / d), -32, 31) + 32);
  }
  for (int h = 0; h < 2; ++h) {  // two halves of 128
    const int8_t* Lh = L + 128 * h;
    uint8_t* ql = b.ql + 64 * h;
    uint8_t* qh = b.qh + 32 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = uint8_t((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
      ql[l + 32] = uint8_t((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
      qh[l] = uint8_t((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                      ((Lh[l + 96] >> 4) << 6));
    }
  }
}

void quantize_q5_0(const float* x, BlockQ5_0& b) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -16;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  b.d = f32_to_f16(d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    // Truncation after +16.5 is rounding half up of a value known to be >= -16.
    const int q0 = std::min(31, int(int8_t(x[j] * id + 16.5f)));
    const int q1 = std::min(31, int(int8_t(x[j + 16] * id + 16.5f)));
    b.qs[j] = uint8_t((q0 & 0xF) | ((q1 & 0xF) << 4));
    qh |= uint32_t((q0 >> 4) & 1) << j;
    qh |= uint32_t((q1 >> 4) & 1) << (j + 16);
  }
  std::memcpy(b.qh, &qh, 4);
}

void quantize_q5_1(const float* x, BlockQ5_1& b) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  const float d = (hi - lo) / 31;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  b.d = f32_to_f16(d);
  b.m = f32_to_f16(lo);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int q0 = uint8_t((x[j] - lo) * id + 0.5f);
    const int q1 = uint8_t((x[j + 16] - lo) * id + 0.5f);
    b.qs[j] = uint8_t((q0 & 0xF) | ((q1 & 0xF) << 4));
    qh |= uint32_t((q0 >> 4) & 1) << j;
    qh |= uint32_t((q1 >> 4) & 1) << (j + 16);
  }
  std::memcpy(b.qh, &qh, 4);
}

void dequantize_q4_K(const BlockQ4_K& b, float* y) {
  const float d = f16(b.d), dmin = f16(b.dmin);
  for (int j = 0; j < 8; j += 2) {
    uint8_t sc, m;
    unpack_scale_min(j, b.scales, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    unpack_scale_min(j + 1, b.scales, sc, m);
    const float d2 = d * float(sc), m2 = dmin * float(m);
    const uint8_t* q = b.qs + 16 * j;
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
  }
}

void dequantize_q5_K(const BlockQ5_K& b, float* y) {
  const float d = f16(b.d), dmin = f16(b.dmin);
  for (int j = 0; j < 8; j += 2) {
    uint8_t sc, m;
    unpack_scale_min(j, b.scales, sc, m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    unpack_scale_min(j + 1, b.scales, sc, m);
    const float d2 = d * float(sc), m2 = dmin * float(m);
    const uint8_t* q = b.qs + 16 * j;
    const uint8_t u1 = uint8_t(1u << j), u2 = uint8_t(2u << j);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((q[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((q[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
  }
}

void dequantize_q6_K(const BlockQ6_K& b, float* y) {
  const float d = f16(b.d);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    const int8_t* sc = b.scales + 8 * h;
    float* yh = y + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      yh[l] = d * float(sc[is]) * float(q1);
      yh[l + 32] = d * float(sc[is + 2]) * float(q2);
      yh[l + 64] = d * float(sc[is + 4]) * float(q3);
      yh[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

template <class Block>
void dequantize_q5_x(const Block& b, float* y, float m) {
  const float d = f16(b.d);
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  const int offset = sizeof(Block) == sizeof(BlockQ5_0) ? -16 : 0;
  for (int j = 0; j < 16; ++j) {
    const int x0 = ((b.qs[j] & 0xF) | int(((qh >> j) << 4) & 0x10)) + offset;
    const int x1 = ((b.qs[j] >> 4) | int((qh >> (j + 12)) & 0x10)) + offset;
    y[j] = offset != 0 ? float(x0) * d : float(x0) * d + m;
    y[j + 16] = offset != 0 ? float(x1) * d : float(x1) * d + m;
  }
}

template <class Block, class F>
std::string quantize_blocks(const float* x, int64_t n, int elems, F f) {
  std::string out(size_t(n / elems) * sizeof(Block), '\0');
  Block b;
  for (int64_t i = 0; i < n / elems; ++i) {
    f(x + i * elems, b);
    std::memcpy(out.data() + size_t(i) * sizeof(Block), &b, sizeof(Block));
  }
  return out;
}

template <class Block, class F>
void dequantize_blocks(const void* blocks, int64_t n, int elems, float* out, F f) {
  const char* p = static_cast<const char*>(blocks);
  Block b;
  for (int64_t i = 0; i < n / elems; ++i) {
    std::memcpy(&b, p + size_t(i) * sizeof(Block), sizeof(Block));
    f(b, out + i * elems);
  }
}

}  // namespace

bool ggml_is_raw_block(GgmlType t) {
  return t == GgmlType::Q5_0 || t == GgmlType::Q5_1 || t == GgmlType::Q4_K || t == GgmlType::Q5_K ||
         t == GgmlType::Q6_K;
}

int ggml_block_elems(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q8_0:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
      return 32;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return kQK_K;
    default:
      return 1;
  }
}

size_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::Q5_0:
      return sizeof(BlockQ5_0);
    case GgmlType::Q5_1:
      return sizeof(BlockQ5_1);
    case GgmlType::Q4_K:
      return sizeof(BlockQ4_K);
    case GgmlType::Q5_K:
      return sizeof(BlockQ5_K);
    case GgmlType::Q6_K:
      return sizeof(BlockQ6_K);
    case GgmlType::Q4_0:
      return sizeof(BlockQ4_0);
    case GgmlType::Q8_0:
      return sizeof(BlockQ8_0);
    case GgmlType::F16:
    case GgmlType::BF16:
      return 2;
    case GgmlType::I8:
      return 1;
    case GgmlType::F32:
    case GgmlType::I32:
      return 4;
  }
  fail<IoError>("GGUF: ggml type {} has no known size", uint32_t(t));
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return "f32";
    case GgmlType::F16:
      return "f16";
    case GgmlType::BF16:
      return "bf16";
    case GgmlType::Q4_0:
      return "q4_0";
    case GgmlType::Q5_0:
      return "q5_0";
    case GgmlType::Q5_1:
      return "q5_1";
    case GgmlType::Q8_0:
      return "q8_0";
    case GgmlType::Q4_K:
      return "q4_K";
    case GgmlType::Q5_K:
      return "q5_K";
    case GgmlType::Q6_K:
      return "q6_K";
    case GgmlType::I8:
      return "i8";
    case GgmlType::I32:
      return "i32";
  }
  return "?";
}

std::string ggml_quantize(GgmlType t, const float* x, int64_t n) {
  const int e = ggml_block_elems(t);
  if (!ggml_is_raw_block(t) || n % e != 0)
    fail<IoError>("GGUF: cannot quantize {} values to {}", n, ggml_type_name(t));
  switch (t) {
    case GgmlType::Q5_0:
      return quantize_blocks<BlockQ5_0>(x, n, e, quantize_q5_0);
    case GgmlType::Q5_1:
      return quantize_blocks<BlockQ5_1>(x, n, e, quantize_q5_1);
    case GgmlType::Q4_K:
      return quantize_blocks<BlockQ4_K>(x, n, e, quantize_q4_K);
    case GgmlType::Q5_K:
      return quantize_blocks<BlockQ5_K>(x, n, e, quantize_q5_K);
    default:
      return quantize_blocks<BlockQ6_K>(x, n, e, quantize_q6_K);
  }
}

void ggml_dequantize(GgmlType t, const void* blocks, int64_t n, float* out) {
  const int e = ggml_block_elems(t);
  if (!ggml_is_raw_block(t) || n % e != 0)
    fail<IoError>("GGUF: cannot dequantize {} values of {}", n, ggml_type_name(t));
  switch (t) {
    case GgmlType::Q5_0:
      return dequantize_blocks<BlockQ5_0>(
          blocks, n, e, out, [](const BlockQ5_0& b, float* y) { dequantize_q5_x(b, y, 0.f); });
    case GgmlType::Q5_1:
      return dequantize_blocks<BlockQ5_1>(
          blocks, n, e, out, [](const BlockQ5_1& b, float* y) { dequantize_q5_x(b, y, f16(b.m)); });
    case GgmlType::Q4_K:
      return dequantize_blocks<BlockQ4_K>(blocks, n, e, out, dequantize_q4_K);
    case GgmlType::Q5_K:
      return dequantize_blocks<BlockQ5_K>(blocks, n, e, out, dequantize_q5_K);
    default:
      return dequantize_blocks<BlockQ6_K>(blocks, n, e, out, dequantize_q6_K);
  }
}

}  // namespace keel::io
