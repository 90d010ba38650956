// Weight quantization and quantized matmul for the cpu backend. The rounding
// rules are backend.h's (llama.cpp's for the block types, so GGUF export is a
// copy); the dot products run in integers through the fastest kernel table
// the CPU allows, parallel over output rows with a static schedule.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_internal.h"
#include "backend/cpu/quant_internal.h"
#include "core/error.h"

namespace keel::backend::cpu {

using namespace quant_detail;

namespace {

// ---- scalar quantization rules (round to nearest, ties to even)

int8_t round_i8(float v) {
  return int8_t(std::clamp(std::nearbyint(v), -127.f, 127.f));
}

// I8 row: scale = max|w| / 127, q = round(w / scale); scale 0, q 0 for a zero row.
void quantize_row_i8(const float* w, int8_t* q, float* scale, int64_t K) {
  float amax = 0.f;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(w[k]));
  const float s = amax / 127.f;
  *scale = s;
  for (int64_t k = 0; k < K; ++k) q[k] = s == 0.f ? int8_t(0) : round_i8(w[k] / s);
}

// The integers are computed from the f32 scale (before it is stored as f16),
// as llama.cpp does; like the ref backend, w / d is a true f32 division
// (llama.cpp multiplies by 1/d, which differs only in rare last-bit ties).

// Q8_0 block: d = amax / 127 stored as f16, q = round(w / d).
void quantize_block_q8_0(const float* w, BlockQ8_0* b) {
  float amax = 0.f;
  for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(w[j]));
  const float d = amax / 127.f;
  b->d = f32_to_f16(d);
  for (int j = 0; j < kQBlock; ++j) b->qs[j] = d == 0.f ? int8_t(0) : round_i8(w[j] / d);
}

// Q4_0 block, llama.cpp's rule: m is the first value of largest magnitude,
// d = m / -8, q = min(15, int(w / d + 8.5)) (int truncates; w / d >= -8).
int q4_of(float w, float d) {
  const int v = d == 0.f ? 8 : int(w / d + 8.5f);
  return std::clamp(v, 0, 15);
}

void quantize_block_q4_0(const float* w, BlockQ4_0* b) {
  float amax = 0.f, m = 0.f;
  for (int j = 0; j < kQBlock; ++j)
    if (amax < std::fabs(w[j])) {
      amax = std::fabs(w[j]);
      m = w[j];
    }
  const float d = m / -8.f;
  b->d = f32_to_f16(d);
  for (int j = 0; j < kQBlock / 2; ++j)
    b->qs[j] = uint8_t(q4_of(w[j], d) | (q4_of(w[j + kQBlock / 2], d) << 4));
}

void quantize_row(DType qdt, const float* w, void* q, float* scale, int64_t K) {
  switch (qdt) {
    case DType::I8:
      quantize_row_i8(w, static_cast<int8_t*>(q), scale, K);
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < K / kQBlock; ++b)
        quantize_block_q8_0(w + b * kQBlock, static_cast<BlockQ8_0*>(q) + b);
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < K / kQBlock; ++b)
        quantize_block_q4_0(w + b * kQBlock, static_cast<BlockQ4_0*>(q) + b);
      return;
    default:
      break;
  }
  fail<KernelError>("[quantize] cpu backend: {} is not a quantized dtype", dtype_name(qdt));
}

void dequantize_row(DType qdt, const void* q, float scale, float* w, int64_t K) {
  switch (qdt) {
    case DType::I8:
      for (int64_t k = 0; k < K; ++k) w[k] = float(static_cast<const int8_t*>(q)[k]) * scale;
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < K / kQBlock; ++b) {
        const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(q)[b];
        const float d = f16_to_f32(blk.d);
        for (int j = 0; j < kQBlock; ++j) w[b * kQBlock + j] = float(blk.qs[j]) * d;
      }
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < K / kQBlock; ++b) {
        const BlockQ4_0& blk = static_cast<const BlockQ4_0*>(q)[b];
        const float d = f16_to_f32(blk.d);
        for (int j = 0; j < kQBlock / 2; ++j) {
          w[b * kQBlock + j] = float((blk.qs[j] & 0x0f) - 8) * d;
          w[b * kQBlock + j + kQBlock / 2] = float((blk.qs[j] >> 4) - 8) * d;
        }
      }
      return;
    default:
      break;
  }
  fail<KernelError>("[dequantize] cpu backend: {} is not a quantized dtype", dtype_name(qdt));
}

void check_qdt(const char* kernel, DType qdt, int64_t K) {
  if (qdt != DType::I8 && qdt != DType::Q8_0 && qdt != DType::Q4_0)
    fail<KernelError>("[{}] cpu backend: {} is not a quantized dtype", kernel, dtype_name(qdt));
  if (dtype_is_blocked(qdt) && K % kQBlock != 0)
    fail<KernelError>("[{}] {} needs K % {} == 0, got K={}", kernel, dtype_name(qdt), kQBlock, K);
}

// ---- scalar dot kernels (the reference the vector tables must match bit for bit)

int32_t dot_i8_scalar(const int8_t* a, const int8_t* b, int64_t K) {
  int32_t s = 0;
  for (int64_t k = 0; k < K; ++k) s += int32_t(a[k]) * int32_t(b[k]);
  return s;
}

float dot_q8_scalar(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb) {
  float acc = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQBlock; ++j) s += int32_t(w[i].qs[j]) * int32_t(x[i].qs[j]);
    acc = std::fma(float(s), f16_to_f32(w[i].d) * xd[i], acc);
  }
  return acc;
}

float dot_q4_scalar(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb) {
  float acc = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s = 0;
    for (int j = 0; j < kQBlock / 2; ++j) {
      s += ((w[i].qs[j] & 0x0f) - 8) * int32_t(x[i].qs[j]);
      s += ((w[i].qs[j] >> 4) - 8) * int32_t(x[i].qs[j + kQBlock / 2]);
    }
    acc = std::fma(float(s), f16_to_f32(w[i].d) * xd[i], acc);
  }
  return acc;
}

const QDotTable& qdot_best() {
  if (gemm_detail::allow_avx512()) return qdot_avx512();
  if (gemm_detail::allow_avx2()) return qdot_avx2();
  return qdot_scalar();
}

}  // namespace

const QDotTable& quant_detail::qdot_scalar() {
  static const QDotTable t{&dot_i8_scalar, &dot_q8_scalar, &dot_q4_scalar};
  return t;
}

void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K, int threads) {
  check_qdt("quantize", qdt, K);
  const size_t row_bytes = dtype_bytes(qdt, size_t(K));
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    quantize_row(qdt, w + n * K, static_cast<char*>(q) + n * row_bytes,
                 qdt == DType::I8 ? scale + n : nullptr, K);
}

void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N, int64_t K,
                int threads) {
  check_qdt("dequantize", qdt, K);
  const size_t row_bytes = dtype_bytes(qdt, size_t(K));
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    dequantize_row(qdt, static_cast<const char*>(q) + n * row_bytes,
                   qdt == DType::I8 ? scale[n] : 0.f, w + n * K, K);
}

void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
             int64_t N, int64_t K, int threads) {
  check_qdt("qmatmul", qdt, K);
  threads = std::max(1, threads);
  const QDotTable& dot = qdot_best();
  const size_t wrow = dtype_bytes(qdt, size_t(K));
  // x quantized once: int8 rows + scale for I8 weights, Q8_0 blocks otherwise.
  const DType xdt = qdt == DType::I8 ? DType::I8 : DType::Q8_0;
  const size_t xrow = dtype_bytes(xdt, size_t(K));
  const int64_t nb = K / kQBlock;
  thread_local std::vector<char> xq;
  thread_local std::vector<float> xs;
  xq.resize(size_t(M) * xrow);
  xs.resize(size_t(M * (xdt == DType::I8 ? 1 : nb)));
  char* xqp = xq.data();
  float* xsp = xs.data();
#pragma omp parallel for num_threads(threads) schedule(static) if (M > 1)
  for (int64_t m = 0; m < M; ++m) {
    if (xdt == DType::I8) {
      quantize_row_i8(x + m * K, reinterpret_cast<int8_t*>(xqp + m * xrow), xsp + m, K);
    } else {
      auto* blocks = reinterpret_cast<BlockQ8_0*>(xqp + m * xrow);
      for (int64_t b = 0; b < nb; ++b) {
        quantize_block_q8_0(x + m * K + b * kQBlock, blocks + b);
        xsp[m * nb + b] = f16_to_f32(blocks[b].d);
      }
    }
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const char* w = static_cast<const char*>(wq) + n * wrow;
    for (int64_t m = 0; m < M; ++m) {
      const char* xr = xqp + m * xrow;
      float v;
      if (qdt == DType::I8)
        v = float(dot.dot_i8(reinterpret_cast<const int8_t*>(w),
                             reinterpret_cast<const int8_t*>(xr), K)) *
            (xsp[m] * wscale[n]);
      else if (qdt == DType::Q8_0)
        v = dot.dot_q8(reinterpret_cast<const BlockQ8_0*>(w),
                       reinterpret_cast<const BlockQ8_0*>(xr), xsp + m * nb, nb);
      else
        v = dot.dot_q4(reinterpret_cast<const BlockQ4_0*>(w),
                       reinterpret_cast<const BlockQ8_0*>(xr), xsp + m * nb, nb);
      y[m * N + n] = v;
    }
  }
}

}  // namespace keel::backend::cpu
