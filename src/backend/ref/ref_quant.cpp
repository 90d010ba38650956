// Reference weight quantization (I8 per row, Q8_0, Q4_0), dequantization and
// the quantized matmul with its activation quantization.
//
// The scale d used to compute the integers is the f32 value (amax / 127, or
// m / -8) before it is stored as f16, as in llama.cpp; divisions run in f32
// and "round" is nearest, ties to even (std::nearbyint in the default mode).
#include <cmath>
#include <vector>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

namespace {

int8_t round_i8(float x) {
  float r = std::nearbyint(x);
  r = r > 127.f ? 127.f : (r < -127.f ? -127.f : r);
  return int8_t(r);
}

// One row of K elements to int8 with one scale (I8 weights and qmatmul's x rows).
float quantize_row_i8(const float* w, int8_t* q, int64_t K) {
  float amax = 0;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(w[k]));
  const float scale = amax / 127.f;
  for (int64_t k = 0; k < K; ++k) q[k] = scale == 0.f ? int8_t(0) : round_i8(w[k] / scale);
  return scale;
}

void quantize_block_q8_0(const float* w, BlockQ8_0& b) {
  float amax = 0;
  for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(w[j]));
  const float d = amax / 127.f;
  b.d = f32_to_f16(d);
  for (int j = 0; j < kQBlock; ++j) b.qs[j] = d == 0.f ? int8_t(0) : round_i8(w[j] / d);
}

void quantize_block_q4_0(const float* w, BlockQ4_0& b) {
  float amax = 0, m = 0;  // m: the element of largest magnitude, sign kept (first one on ties)
  for (int j = 0; j < kQBlock; ++j)
    if (std::fabs(w[j]) > amax) {
      amax = std::fabs(w[j]);
      m = w[j];
    }
  const float d = m / -8.f;
  b.d = f32_to_f16(d);
  for (int j = 0; j < kQBlock / 2; ++j) {
    int q[2];
    for (int h = 0; h < 2; ++h) {
      const float x = w[j + h * kQBlock / 2];
      const int v = d == 0.f ? 8 : int(x / d + 8.5f);  // int() truncates, as llama.cpp
      q[h] = v > 15 ? 15 : (v < 0 ? 0 : v);
    }
    b.qs[j] = uint8_t(q[0] | (q[1] << 4));
  }
}

int q4_at(const BlockQ4_0& b, int j) {
  return j < kQBlock / 2 ? (b.qs[j] & 0xf) : (b.qs[j - kQBlock / 2] >> 4);
}

}  // namespace

void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K) {
  const int64_t nb = K / kQBlock;
  for (int64_t i = 0; i < N; ++i) {
    const float* row = w + i * K;
    switch (qdt) {
      case DType::I8:
        scale[i] = quantize_row_i8(row, static_cast<int8_t*>(q) + i * K, K);
        break;
      case DType::Q8_0:
        for (int64_t b = 0; b < nb; ++b)
          quantize_block_q8_0(row + b * kQBlock, static_cast<BlockQ8_0*>(q)[i * nb + b]);
        break;
      case DType::Q4_0:
        for (int64_t b = 0; b < nb; ++b)
          quantize_block_q4_0(row + b * kQBlock, static_cast<BlockQ4_0*>(q)[i * nb + b]);
        break;
      default:
        fail<KernelError>("[quantize] ref backend: dtype {} is not quantized", dtype_name(qdt));
    }
  }
}

void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N, int64_t K) {
  const int64_t nb = K / kQBlock;
  for (int64_t i = 0; i < N; ++i) {
    float* row = w + i * K;
    switch (qdt) {
      case DType::I8:
        for (int64_t k = 0; k < K; ++k)
          row[k] = float(static_cast<const int8_t*>(q)[i * K + k]) * scale[i];
        break;
      case DType::Q8_0:
        for (int64_t b = 0; b < nb; ++b) {
          const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(q)[i * nb + b];
          const float d = f16_to_f32(blk.d);
          for (int j = 0; j < kQBlock; ++j) row[b * kQBlock + j] = float(blk.qs[j]) * d;
        }
        break;
      case DType::Q4_0:
        for (int64_t b = 0; b < nb; ++b) {
          const BlockQ4_0& blk = static_cast<const BlockQ4_0*>(q)[i * nb + b];
          const float d = f16_to_f32(blk.d);
          for (int j = 0; j < kQBlock; ++j) row[b * kQBlock + j] = float(q4_at(blk, j) - 8) * d;
        }
        break;
      default:
        fail<KernelError>("[quantize] ref backend: dtype {} is not quantized", dtype_name(qdt));
    }
  }
}

void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
             int64_t N, int64_t K) {
  if (qdt == DType::I8) {
    // y[m, n] = (sum_k qx[k] * qw[n, k]) * sx[m] * sw[n]
    std::vector<int8_t> qx(static_cast<size_t>(K));
    for (int64_t m = 0; m < M; ++m) {
      const float sx = quantize_row_i8(x + m * K, qx.data(), K);
      for (int64_t n = 0; n < N; ++n) {
        const int8_t* qw = static_cast<const int8_t*>(wq) + n * K;
        int64_t dot = 0;
        for (int64_t k = 0; k < K; ++k) dot += int64_t(qx[size_t(k)]) * int64_t(qw[k]);
        y[m * N + n] = float(double(dot) * double(sx) * double(wscale[n]));
      }
    }
    return;
  }
  if (qdt != DType::Q8_0 && qdt != DType::Q4_0)
    fail<KernelError>("[qmatmul] ref backend: dtype {} is not quantized", dtype_name(qdt));
  // Blocked: x to Q8_0 blocks; y = sum_b isum_b * d_w[b] * d_x[b], scales as stored (f16).
  const int64_t nb = K / kQBlock;
  std::vector<BlockQ8_0> xb(static_cast<size_t>(nb));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < nb; ++b) quantize_block_q8_0(x + m * K + b * kQBlock, xb[size_t(b)]);
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8_0& xq = xb[size_t(b)];
        int32_t isum = 0;
        float dw;
        if (qdt == DType::Q8_0) {
          const BlockQ8_0& w = static_cast<const BlockQ8_0*>(wq)[n * nb + b];
          for (int j = 0; j < kQBlock; ++j) isum += int32_t(w.qs[j]) * int32_t(xq.qs[j]);
          dw = f16_to_f32(w.d);
        } else {
          const BlockQ4_0& w = static_cast<const BlockQ4_0*>(wq)[n * nb + b];
          for (int j = 0; j < kQBlock; ++j) isum += (q4_at(w, j) - 8) * int32_t(xq.qs[j]);
          dw = f16_to_f32(w.d);
        }
        acc += double(isum) * double(dw) * double(f16_to_f32(xq.d));
      }
      y[m * N + n] = float(acc);
    }
  }
}

}  // namespace keel::backend::ref
