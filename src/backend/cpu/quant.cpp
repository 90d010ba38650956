// Weight quantization and quantized matmul for the cpu backend. The rounding
// rules are backend.h's (llama.cpp's for the block types, so GGUF export is a
// copy); the dot products run in integers through the fastest kernel table
// the CPU allows, parallel over fixed blocks of output rows.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_internal.h"
#include "backend/cpu/gemv_team.h"
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

// ---- scalar dot kernels and activation quantizers (the reference the
// vector tables must match bit for bit; the order is quant_internal.h's)

void dot_i8_scalar(const int8_t* w, const int8_t* x, int64_t K, int64_t M, int32_t* out) {
  for (int64_t m = 0; m < M; ++m) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += int32_t(w[k]) * int32_t(x[m * K + k]);
    out[m] = s;
  }
}

// wq(blk, e): element e of weight block blk as a signed integer.
template <class Block, class WQ>
float dot_blocked_scalar(const Block* w, WQ wq, const BlockQ8_0* x, const float* xd, int64_t nb) {
  float acc[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(w[b].d) * xd[b];
    for (int j = 0; j < 8; ++j) {
      int32_t p = 0;
      for (int e = 4 * j; e < 4 * j + 4; ++e) p += wq(w[b], e) * int32_t(x[b].qs[e]);
      acc[j] = std::fma(float(p), d, acc[j]);
    }
  }
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

void dot_q8_scalar(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb, int64_t M,
                   float* out) {
  const auto wq = [](const BlockQ8_0& blk, int e) { return int32_t(blk.qs[e]); };
  for (int64_t m = 0; m < M; ++m) out[m] = dot_blocked_scalar(w, wq, x + m * nb, xd + m * nb, nb);
}

void dot_q4_scalar(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb, int64_t M,
                   float* out) {
  const auto wq = [](const BlockQ4_0& blk, int e) {
    const uint8_t v = blk.qs[e % (kQBlock / 2)];
    return int32_t(e < kQBlock / 2 ? (v & 0x0f) : (v >> 4)) - 8;
  };
  for (int64_t m = 0; m < M; ++m) out[m] = dot_blocked_scalar(w, wq, x + m * nb, xd + m * nb, nb);
}

void dot_q4_pair_scalar(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                        float* out) {
  dot_q4_scalar(w, x, xd, nb, 1, out);
  dot_q4_scalar(w + nb, x, xd, nb, 1, out + 1);
}

void quantize_i8_scalar(const float* x, int8_t* q, float* scale, int64_t K) {
  quantize_row_i8(x, q, scale, K);
}

void quantize_q8_scalar(const float* x, BlockQ8_0* q, float* xd, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    quantize_block_q8_0(x + b * kQBlock, q + b);
    xd[b] = f16_to_f32(q[b].d);
  }
}

const QDotTable& qdot_best() {
  if (gemm_detail::allow_avx512()) return qdot_avx512();
  if (gemm_detail::allow_avx2()) return qdot_avx2();
  return qdot_scalar();
}

}  // namespace

const QDotTable& quant_detail::qdot_scalar() {
  static const QDotTable t{&dot_i8_scalar,      &dot_q8_scalar,      &dot_q4_scalar,
                           &dot_q4_pair_scalar, &quantize_i8_scalar, &quantize_q8_scalar};
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

namespace {

// Decode-shaped calls (a few rows) run on the GEMV team, whose threads never
// wait for one the OS has not scheduled; larger ones (prefill) stay on
// OpenMP like the ops around them, since mixing the two leaves OpenMP's
// threads spinning on the cores the team needs (measured: q8_0 prefill of
// 128 tokens at 270 tok/s on the team against 450 on OpenMP).
constexpr int64_t kTeamMaxRows = 8;

template <class F>
void for_blocks(bool team, int threads, int64_t n, const F& body) {
  if (team) {
    team_for(threads, n, body);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(dynamic)
  for (int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace

void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
             int64_t N, int64_t K, int threads) {
  check_qdt("qmatmul", qdt, K);
  threads = std::max(1, threads);
  const QDotTable& dot = qdot_best();
  const size_t wrow = dtype_bytes(qdt, size_t(K));
  // x quantized once: int8 rows + scale for I8 weights, Q8_0 blocks otherwise.
  const bool i8 = qdt == DType::I8;
  const size_t xrow = dtype_bytes(i8 ? DType::I8 : DType::Q8_0, size_t(K));
  const int64_t nb = K / kQBlock, ns = i8 ? 1 : nb;
  // Grown, never shrunk: decode calls this with the same shapes every step.
  thread_local std::vector<char> xq;
  thread_local std::vector<float> xs;
  if (xq.size() < size_t(M) * xrow) xq.resize(size_t(M) * xrow);
  if (xs.size() < size_t(M * ns)) xs.resize(size_t(M * ns));
  char* xqp = xq.data();
  float* xsp = xs.data();
  // On the same threads as the dots below (see for_blocks).
  const bool team = M <= kTeamMaxRows;
  for_blocks(team, threads, M, [&](int64_t m) {
    if (i8)
      dot.quantize_i8(x + m * K, reinterpret_cast<int8_t*>(xqp + m * xrow), xsp + m, K);
    else
      dot.quantize_q8(x + m * K, reinterpret_cast<BlockQ8_0*>(xqp + m * xrow), xsp + m * nb, nb);
  });
  // Rows of W in fixed blocks, each taken by whichever thread is free, so
  // one the OS preempts does not hold the others up: each y element is one dot in one fixed order,
  // so y depends neither on the thread count nor on who computed it.
  const int64_t block = 64, nblocks = (N + block - 1) / block;
  const int nt = int(std::min<int64_t>(threads, nblocks));
  if (!team && !i8 && gemm_detail::allow_avx512()) {
    // Prefill: x packed in row pairs once, then 512-bit tiles that reuse each
    // unpacked weight block for eight rows (same results as the dots below).
    thread_local std::vector<uint8_t> xu;
    thread_local std::vector<float> xus;
    if (xu.size() < size_t(qgemm_x_bytes(M, nb))) xu.resize(size_t(qgemm_x_bytes(M, nb)));
    if (xus.size() < size_t(qgemm_x_scales(M, nb))) xus.resize(size_t(qgemm_x_scales(M, nb)));
    qgemm_pack_x_avx512(reinterpret_cast<const BlockQ8_0*>(xqp), xsp, M, nb, xu.data(), xus.data());
    const uint8_t* xup = xu.data();
    const float* xusp = xus.data();
    for_blocks(false, nt, nblocks, [&](int64_t ib) {
      qgemm_avx512(qdt, wq, ib * block, std::min(N, (ib + 1) * block), N, xup, xusp, M, nb, y);
    });
    return;
  }
  for_blocks(team, nt, nblocks, [&](int64_t ib) {
    float out[kQRows];
    int32_t iout[kQRows];
    const int64_t n1 = std::min(N, (ib + 1) * block);
    for (int64_t n = ib * block; n < n1; ++n) {
      const char* w = static_cast<const char*>(wq) + size_t(n) * wrow;
      if (M == 1 && qdt == DType::Q4_0 && n + 1 < n1) {  // batch-1 decode: two rows per pass
        dot.dot_q4_pair(reinterpret_cast<const BlockQ4_0*>(w),
                        reinterpret_cast<const BlockQ8_0*>(xqp), xsp, nb, out);
        y[n] = out[0];
        y[++n] = out[1];
        continue;
      }
      for (int64_t m0 = 0; m0 < M; m0 += kQRows) {
        const int64_t mc = std::min(kQRows, M - m0);
        const char* xr = xqp + size_t(m0) * xrow;
        if (i8) {
          dot.dot_i8(reinterpret_cast<const int8_t*>(w), reinterpret_cast<const int8_t*>(xr), K, mc,
                     iout);
          for (int64_t i = 0; i < mc; ++i) out[i] = float(iout[i]) * (xsp[m0 + i] * wscale[n]);
        } else if (qdt == DType::Q8_0) {
          dot.dot_q8(reinterpret_cast<const BlockQ8_0*>(w), reinterpret_cast<const BlockQ8_0*>(xr),
                     xsp + m0 * nb, nb, mc, out);
        } else {
          dot.dot_q4(reinterpret_cast<const BlockQ4_0*>(w), reinterpret_cast<const BlockQ8_0*>(xr),
                     xsp + m0 * nb, nb, mc, out);
        }
        for (int64_t i = 0; i < mc; ++i) y[(m0 + i) * N + n] = out[i];
      }
    }
  });
}

int64_t qpack_bytes(DType qdt, int64_t N, int64_t K) {
  check_qdt("qpack", qdt, K);
  if (!gemm_detail::allow_avx2()) return 0;
  return (N + kPackRows - 1) / kPackRows * qpack_group_bytes(qdt, K);
}

void qpack(DType qdt, const void* q, const float* scale, void* packed, int64_t N, int64_t K) {
  if (qpack_bytes(qdt, N, K) == 0)
    fail<KernelError>("[qpack] cpu backend: no packed layout on this CPU (it lacks AVX2)");
  // quantize() keeps 8-bit weights within +-127; the AVX2 kernels' sign trick
  // (w times x's sign) would overflow at -128, so such a weight is refused
  // here, at every level, rather than multiplied wrongly on some.
  if (qdt != DType::Q4_0) {
    const int64_t nb = K / kQBlock;
    const auto refuse = [&](int64_t n, int64_t k) {
      fail<KernelError>(
          "[qpack] {} weight row {} element {} is -128: quantize() output lies "
          "within +-127",
          dtype_name(qdt), n, k);
    };
    for (int64_t n = 0; n < N; ++n) {
      if (qdt == DType::I8) {
        const int8_t* r = static_cast<const int8_t*>(q) + n * K;
        if (const int8_t* hit = std::find(r, r + K, int8_t(-128)); hit != r + K) refuse(n, hit - r);
        continue;
      }
      const BlockQ8_0* r = static_cast<const BlockQ8_0*>(q) + n * nb;
      for (int64_t b = 0; b < nb; ++b)
        if (const int8_t* hit = std::find(r[b].qs, r[b].qs + kQBlock, int8_t(-128));
            hit != r[b].qs + kQBlock)
          refuse(n, b * kQBlock + (hit - r[b].qs));
    }
  }
  qpack_layout(qdt, q, scale, static_cast<uint8_t*>(packed), N, K, gemm_detail::allow_avx512());
}

void qmatmul_packed(DType qdt, const float* x, const void* packed, float* y, int64_t M, int64_t N,
                    int64_t K, int threads) {
  if (qpack_bytes(qdt, N, K) == 0)
    fail<KernelError>("[qmatmul_packed] cpu backend: no packed layout on this CPU");
  threads = std::max(1, threads);
  const QDotTable& dot = qdot_best();
  const bool avx512 = gemm_detail::allow_avx512();
  const bool i8 = qdt == DType::I8;
  const int64_t nb = K / kQBlock, K4 = (K + 3) / 4 * 4;
  // Per x row: I8 takes K4 bytes (zeros past K) and one scale and offset
  // sum; the block types nb Q8_0 blocks, nb scales and nb offset sums.
  const int64_t xrow = i8 ? K4 : nb * int64_t(sizeof(BlockQ8_0)), ns = i8 ? 1 : nb;
  thread_local std::vector<char> xq;
  thread_local std::vector<float> xs;
  thread_local std::vector<int32_t> xo;
  if (xq.size() < size_t(M * xrow)) xq.resize(size_t(M * xrow));
  if (xs.size() < size_t(M * ns)) xs.resize(size_t(M * ns));
  if (xo.size() < size_t(M * ns)) xo.resize(size_t(M * ns));
  char* xqp = xq.data();
  float* xsp = xs.data();
  int32_t* xop = xo.data();
  const bool team = M <= kTeamMaxRows;
  for_blocks(team, threads, M, [&](int64_t m) {
    if (i8) {
      int8_t* q = reinterpret_cast<int8_t*>(xqp + m * xrow);
      dot.quantize_i8(x + m * K, q, xsp + m, K);
      int32_t sum = 0;
      for (int64_t k = K; k < K4; ++k) q[k] = 0;
      for (int64_t k = 0; k < K; ++k) sum += q[k];
      xop[m] = int32_t(uint32_t(sum) * 128u);  // may wrap, as the dots do
      return;
    }
    BlockQ8_0* q = reinterpret_cast<BlockQ8_0*>(xqp + m * xrow);
    dot.quantize_q8(x + m * K, q, xsp + m * nb, nb);
    const int32_t off = qdt == DType::Q4_0 ? 8 : 128;
    for (int64_t b = 0; b < nb; ++b) {
      int32_t sum = 0;
      for (int e = 0; e < kQBlock; ++e) sum += q[b].qs[e];
      xop[m * nb + b] = off * sum;
    }
  });
  // Fixed chunks of groups, each taken by whichever thread is free (as in
  // qmatmul): every y element is computed whole by one tile call.
  const PackedX px{xqp, xsp, xop};
  const int64_t groups = (N + kPackRows - 1) / kPackRows, chunk = 4;
  const int64_t nchunks = (groups + chunk - 1) / chunk;
  const int nt = int(std::min<int64_t>(threads, nchunks));
  const uint8_t* wp = static_cast<const uint8_t*>(packed);
  for_blocks(team, nt, nchunks, [&](int64_t c) {
    const int64_t g1 = std::min(groups, (c + 1) * chunk);
    if (avx512)
      qmatmul_packed_avx512(qdt, wp, c * chunk, g1, N, K, px, M, y);
    else
      qmatmul_packed_avx2(qdt, wp, c * chunk, g1, N, K, px, M, y);
  });
}

}  // namespace keel::backend::cpu
