// keel's own bf16 GEMM block for CPUs with AVX512-BF16: op(B) (and op(A)
// where it cannot be read in place) packed into pairs along k, multiplied in
// 6 x 64 blocks of vdpbf16ps (the attention products' tile_dot_block, 24
// accumulators). Built with the AVX-512 flags. One block is single-threaded;
// gemm.cpp cuts C into blocks by shape alone. Within a few percent of oneDNN's
// bf16 matmul on the training shapes; it gives bf16 its rate without oneDNN.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define KEEL_CPU_ISA avx512
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_tile_dot_bf16.h"
#include "backend/cpu/cpu_tile_scratch.h"
#include "backend/cpu/gemm_internal.h"

namespace keel::backend::cpu::gemm_detail {

namespace {

using avx512::pack_bf16_pairs;
using avx512::tile_dot_bf16;
using avx512::TileScratch;
using avx512::transpose_row_pairs;

// Goto-style blocking, measured (bench_gemm, one thread, best of 3-4, Zen 5):
// k blocks of 384 and row blocks of 96 against 256-column panels beat k 256
// (C passed more often), k 512 and 1024 (B's strip out of L1), row blocks of
// 48 or 192 and panels of 128 or 512 by 2-10%. A pair strip of B (192 pairs x
// 64 columns, 48 KiB) is read by every 6-row group of a row block.
constexpr int64_t kKcMax = 384;  // even
constexpr int64_t kMc = 96;
constexpr int64_t kNc = 256;  // a multiple of 64

int64_t round16(int64_t n) {
  return (n + 15) / 16 * 16;
}

__mmask32 first_n32(int64_t n) {
  return n >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << n) - 1u);
}

// A (not transposed) row block as words: out[i * ldo + j] = (a_i[2 j], a_i[2 j +
// 1]), zero past len; the last row's store spills up to 15 words past its end.
// Only for rows the kernel cannot read in place (odd k, or an odd or unaligned
// row start).
void pack_rows(const uint16_t* base, int64_t stride, int64_t rows, int64_t len, uint32_t* out,
               int64_t ldo) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < 2 * ldo; k += 32)
      _mm512_storeu_si512(out + i * ldo + k / 2,
                          _mm512_maskz_loadu_epi16(first_n32(std::max<int64_t>(len - k, 0)),
                                                   base + i * stride + k));
}

// The block's scratch (B's pairs, A's packed rows, C's f32 rows), its own so
// that it never regrows, and so frees, a buffer the attention kernels carved.
TileScratch& gemm_scratch() {
  thread_local TileScratch s;
  return s;
}

// Floats of A's packed rows for a row block and kp pairs of k: transposed
// (kp x round16(kMc) words) or rows packed with pack_rows' spill.
int64_t a_pack_floats(int64_t kp) {
  return kp * round16(kMc) + 16;
}

// C (mc x nc, f32, ldc) (+)= A's rows times the pair strip B (kp pairs of ldb
// words from column 0): rows six at a time (24 accumulators, 4 B vectors per
// pair of k), the last ones and any 16-column tail through tile_dot_bf16.
void strip6(int64_t mc, int64_t nc, int64_t kp, const uint32_t* A, int64_t a_row, int64_t a_col,
            const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  const int64_t n64 = nc / 64 * 64;
  for (int64_t j = 0; j < n64; j += 64) {
    int64_t i = 0;
    for (; i + 6 <= mc; i += 6)
      avx512::tile_dot_block<6, 4, false>(0, kp, A + i * a_row, a_row, a_col, B + j, ldb,
                                          C + i * ldc + j, ldc, accumulate, nullptr);
    if (i < mc)
      tile_dot_bf16(mc - i, 64, kp, A + i * a_row, a_row, a_col, B + j, ldb, C + i * ldc + j, ldc,
                    accumulate);
  }
  if (n64 < nc)
    tile_dot_bf16(mc, nc - n64, kp, A, a_row, a_col, B + n64, ldb, C + n64, ldc, accumulate);
}

// When C (f32) is at most this big, it stays in L2 while the k blocks pass
// over it: B is then packed one k block at a time and A read once, which a
// long K (the vocabulary) needs.
constexpr int64_t kSmallC = int64_t(512) << 10;

bool a_readable_in_place(const MatmulArgs& a, const uint16_t* A) {
  return !a.trans_a && a.K % 2 == 0 && a.lda % 2 == 0 && reinterpret_cast<uintptr_t>(A) % 4 == 0;
}

bool c_accumulates_in_place(const MatmulArgs& a) {
  return a.c_dtype == DType::F32 && a.N % 16 == 0 && (a.beta == 0.f || a.beta == 1.f);
}

// C's rows [m0, m0 + mc) as the f32 rows the kernel adds to: C itself (in
// place) or the scratch, zeroed or loaded with beta C.
float* c_rows(const MatmulArgs& a, void* Cv, int64_t m0, int64_t mc, int64_t Np, float* scratch,
              int64_t* ldc32) {
  if (c_accumulates_in_place(a)) {
    *ldc32 = a.ldc;
    return static_cast<float*>(Cv) + m0 * a.ldc;
  }
  *ldc32 = Np;
  for (int64_t i = 0; i < mc; ++i) {
    float* row = scratch + i * Np;
    std::memset(row, 0, size_t(Np) * sizeof(float));
    if (a.beta == 0.f) continue;
    if (a.c_dtype == DType::F32) {
      const float* c = static_cast<const float*>(Cv) + (m0 + i) * a.ldc;
      for (int64_t j = 0; j < a.N; ++j) row[j] = a.beta * c[j];
    } else {
      bf16_to_f32_n(static_cast<const uint16_t*>(Cv) + (m0 + i) * a.ldc, row, a.N);
      if (a.beta != 1.f)
        for (int64_t j = 0; j < a.N; ++j) row[j] *= a.beta;
    }
  }
  return scratch;
}

// Writes the scratch rows back to C (nothing to do when C was written in place).
void c_store(const MatmulArgs& a, void* Cv, int64_t m0, int64_t mc, int64_t Np,
             const float* scratch) {
  if (c_accumulates_in_place(a)) return;
  for (int64_t i = 0; i < mc; ++i) {
    const float* row = scratch + i * Np;
    if (a.c_dtype == DType::F32)
      std::memcpy(static_cast<float*>(Cv) + (m0 + i) * a.ldc, row, size_t(a.N) * sizeof(float));
    else
      f32_to_bf16_n(row, static_cast<uint16_t*>(Cv) + (m0 + i) * a.ldc, a.N);
  }
}

// op(A)'s rows [m0, m0 + mc) and pairs of k [k0, k0 + kp) as the kernel reads
// them: in place, or packed into buf.
const uint32_t* a_block(const MatmulArgs& a, const uint16_t* A, int64_t m0, int64_t mc, int64_t k0,
                        int64_t kp, uint32_t* buf, int64_t* a_row, int64_t* a_col) {
  const int64_t kc = std::min(2 * kp, a.K - 2 * k0);
  if (a.trans_a) {
    const int64_t mcp = round16(mc);
    pack_bf16_pairs(A + 2 * k0 * a.lda + m0, a.lda, kc, mc, buf, mcp);
    *a_row = 1, *a_col = mcp;
    return buf;
  }
  if (a_readable_in_place(a, A)) {
    *a_row = a.lda / 2, *a_col = 1;
    return reinterpret_cast<const uint32_t*>(A + m0 * a.lda + 2 * k0);
  }
  pack_rows(A + m0 * a.lda + 2 * k0, a.lda, mc, kc, buf, kp);
  *a_row = kp, *a_col = 1;
  return buf;
}

// The order for a C that fits L2: for each k block, B's k block packed, then
// every row block of A against it.
void k_outer(const MatmulArgs& a, const uint16_t* A, const uint16_t* B, void* Cv) {
  const int64_t M = a.M, N = a.N, K = a.K, Np = round16(N), KP = (K + 1) / 2;
  const int64_t kcp = kKcMax / 2;
  float* buf[3];
  gemm_scratch().carve({kcp * Np, a_pack_floats(kcp), M * Np}, buf);
  auto* Bp = reinterpret_cast<uint32_t*>(buf[0]);
  auto* Apack = reinterpret_cast<uint32_t*>(buf[1]);
  int64_t ldc32;
  float* C32 = c_rows(a, Cv, 0, M, Np, buf[2], &ldc32);
  const bool in_place = c_accumulates_in_place(a);
  for (int64_t k0 = 0; k0 < KP; k0 += kcp) {
    const int64_t kp = std::min(kcp, KP - k0), kc = std::min(2 * kp, K - 2 * k0);
    if (a.trans_b)
      transpose_row_pairs(reinterpret_cast<const bf16_t*>(B + 2 * k0), a.ldb, N, Np, kc, Bp, Np);
    else
      pack_bf16_pairs(B + 2 * k0 * a.ldb, a.ldb, kc, N, Bp, Np);
    const bool accumulate = k0 > 0 || !in_place || a.beta == 1.f;
    for (int64_t m0 = 0; m0 < M; m0 += kMc) {
      const int64_t mc = std::min(kMc, M - m0);
      int64_t a_row, a_col;
      const uint32_t* Ap = a_block(a, A, m0, mc, k0, kp, Apack, &a_row, &a_col);
      strip6(mc, Np, kp, Ap, a_row, a_col, Bp, Np, C32 + m0 * ldc32, ldc32, accumulate);
    }
  }
  c_store(a, Cv, 0, M, Np, C32);
}

}  // namespace

bool bf16gemm_tile_applies(const MatmulArgs& a) {
  return a.alpha == 1.f;
}

// All of op(B) is packed once (K/2 pair rows of Np words, Np = N rounded up to
// 16); then per block of kMc rows: op(A) packed once when it cannot be read in
// place, and for each kNc-column panel the k blocks run back to back, so the
// panel's C tile stays in L2 between them.
void bf16gemm_tile(const MatmulArgs& a, const void* Av, const void* Bv, void* Cv) {
  const auto* A = static_cast<const uint16_t*>(Av);
  const auto* B = static_cast<const uint16_t*>(Bv);
  const int64_t M = a.M, N = a.N, K = a.K, Np = round16(N), KP = (K + 1) / 2;
  if (M * Np * int64_t(sizeof(float)) <= kSmallC) return k_outer(a, A, B, Cv);
  float* buf[3];
  gemm_scratch().carve({KP * Np, a_pack_floats(KP), kMc * Np}, buf);
  auto* Bp = reinterpret_cast<uint32_t*>(buf[0]);
  auto* Apack = reinterpret_cast<uint32_t*>(buf[1]);
  if (a.trans_b)
    transpose_row_pairs(reinterpret_cast<const bf16_t*>(B), a.ldb, N, Np, K, Bp, Np);
  else
    pack_bf16_pairs(B, a.ldb, K, N, Bp, Np);
  const int64_t kblocks = (KP + kKcMax / 2 - 1) / (kKcMax / 2);
  const int64_t kcp = (KP + kblocks - 1) / kblocks;  // pairs per k block
  const bool in_place = c_accumulates_in_place(a);
  for (int64_t m0 = 0; m0 < M; m0 += kMc) {
    const int64_t mc = std::min(kMc, M - m0);
    int64_t a_row, a_col, ldc32;
    const uint32_t* Ap = a_block(a, A, m0, mc, 0, KP, Apack, &a_row, &a_col);
    float* C32 = c_rows(a, Cv, m0, mc, Np, buf[2], &ldc32);
    for (int64_t n0 = 0; n0 < Np; n0 += kNc) {
      const int64_t nc = std::min(kNc, Np - n0);
      for (int64_t k0 = 0; k0 < KP; k0 += kcp) {
        const int64_t kp = std::min(kcp, KP - k0);
        const bool accumulate = k0 > 0 || !in_place || a.beta == 1.f;
        strip6(mc, nc, kp, Ap + k0 * a_col, a_row, a_col, Bp + k0 * Np + n0, Np, C32 + n0, ldc32,
               accumulate);
      }
    }
    c_store(a, Cv, m0, mc, Np, C32);
  }
}

}  // namespace keel::backend::cpu::gemm_detail
