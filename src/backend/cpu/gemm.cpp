// The cpu GEMM driver: picks the library per shape class, splits the work into
// blocks fixed by the shape alone (never by the thread count), and runs each
// block single-threaded, so C is bit-identical for any number of threads.
// bf16 goes through keel's AVX512-BF16 tile kernel, oneDNN's bf16 matmul, or
// widening to f32.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_internal.h"
#include "backend/cpu/gemv.h"
#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::backend::cpu {

using namespace gemm_detail;

std::string_view gemm_detail::engine_name(Engine e) {
  switch (e) {
    case Engine::OpenBlas:
      return "openblas";
    case Engine::OneDnn:
      return "onednn";
    case Engine::Portable:
      return "portable";
  }
  return "?";
}

namespace {

std::string env_or(const char* name, const char* dflt) {
  const char* s = std::getenv(name);
  return (s && *s) ? std::string(s) : std::string(dflt);
}

}  // namespace

// KEEL_GEMM=auto|openblas|onednn|portable. "auto" on AVX-512 CPUs: oneDNN for
// every shape. On the Zen 5 (bench_gemm, 256 and 1024 rows) it beat
// OpenBLAS's Cooperlake kernels on all of GPT-2's training shapes but the
// fc-down weight gradient (3072 x rows x 768, A^T: 3-8% slower), and f32
// training ran 14-16% more tokens/s (bench_train's long lines); on a Zen 4
// it won every shape at 1024 rows but the fc-down input gradient (158 vs
// 165 GFLOP/s; elsewhere 200-227 against 165-202). Without
// AVX-512: oneDNN only for op(A) = A^T with a very tall output (the
// vocabulary-sized weight gradient, 50304x256x768, where it measured ~15%
// faster on Zen 3 through keel's blocking) and OpenBLAS for the rest: on the
// other A^T shapes oneDNN measured at half OpenBLAS's speed inside keel's
// blocks there. Whichever exists when only one does.
Engine gemm_detail::choose_engine(const MatmulArgs& a) {
  const std::string mode = env_or("KEEL_GEMM", "auto");  // read per call: tests switch it
  bool have_ob = openblas().sgemm != nullptr, have_dnnl = onednn_available();
  if (mode == "openblas") {
    if (!have_ob) fail<KernelError>("[matmul] KEEL_GEMM=openblas but no OpenBLAS could be loaded");
    return Engine::OpenBlas;
  }
  if (mode == "onednn") {
    if (!have_dnnl) fail<KernelError>("[matmul] KEEL_GEMM=onednn but this build has no oneDNN");
    return Engine::OneDnn;
  }
  if (mode == "portable") return Engine::Portable;
  if (mode != "auto")
    fail<KernelError>("[matmul] KEEL_GEMM='{}' is not one of auto, openblas, onednn, portable",
                      mode);
  if (have_dnnl && (allow_avx512() || (a.trans_a && !a.trans_b && a.M >= 8192)))
    return Engine::OneDnn;
  if (have_ob) return Engine::OpenBlas;
  if (have_dnnl) return Engine::OneDnn;
  return Engine::Portable;
}

namespace {

// Which code computes a bf16 product.
enum class Bf16Engine : uint8_t { Tile, OneDnn, Convert };

// KEEL_BF16_GEMM=auto|tile|onednn|convert. "auto": oneDNN's bf16 matmul where
// it has one for this CPU, else keel's own AVX512-BF16 kernel (tile) where the
// CPU has the instructions, else widening to f32 for sgemm. The two bf16
// kernels measured within a few percent of each other on the training shapes
// (bench_gemm --rows=256 and 1024), so oneDNN stays first; without it, tile
// runs bf16 at about twice the rate of widening.
Bf16Engine bf16_engine() {
  const std::string mode = env_or("KEEL_BF16_GEMM", "auto");
  const bool have_tile = cpu_features().avx512_bf16 && allow_avx512();
  if (mode == "tile") {
    if (!have_tile)
      fail<KernelError>("[matmul] KEEL_BF16_GEMM=tile needs AVX512-BF16, this CPU has {}",
                        cpu_features().level());
    return Bf16Engine::Tile;
  }
  if (mode == "onednn") {
    if (!onednn_available())
      fail<KernelError>("[matmul] KEEL_BF16_GEMM=onednn but this build has no oneDNN");
    if (!onednn_bf16_supported())
      fail<KernelError>(
          "[matmul] KEEL_BF16_GEMM=onednn but oneDNN {} has no bf16 matmul for "
          "this CPU ({})",
          onednn_version(), cpu_features().level());
    return Bf16Engine::OneDnn;
  }
  if (mode == "convert") return Bf16Engine::Convert;
  if (mode != "auto")
    fail<KernelError>("[matmul] KEEL_BF16_GEMM='{}' is not one of auto, tile, onednn, convert",
                      mode);
  // oneDNN 2.x has a bf16 matmul only on AVX-512 CPUs; there it is at the bf16 peak.
  if (have_tile && onednn_available() && onednn_bf16_supported()) return Bf16Engine::OneDnn;
  return have_tile ? Bf16Engine::Tile : Bf16Engine::Convert;
}

std::string_view bf16_describe(Bf16Engine e) {
  switch (e) {
    case Bf16Engine::Tile:
      return "keel's AVX512-BF16 tile kernel";
    case Bf16Engine::OneDnn:
      return "onednn bf16 matmul";
    case Bf16Engine::Convert:
      return "widen to f32 + sgemm, round once";
  }
  return "?";
}

// How C is cut into blocks: along the larger of M and N, in at most 16
// blocks of at least 128 rows/columns (multiples of 16). Depends on the shape
// only, which is what makes results independent of the thread count.
// oneDNN's bf16 matmul repacks B into k-pairs for every call, so a block of
// rows repacks all of B: bf16 cuts along N whenever A is not transposed and N
// allows two blocks (the dX of the output layer, K = vocabulary, gained 15-25%),
// in multiples of its 64-column kernel width.
struct Plan {
  bool split_n = true;
  int64_t chunk = 0, count = 1;
};

Plan plan(const MatmulArgs& a) {
  Plan p;
  const bool bf16 = a.a_dtype == DType::BF16;
  p.split_n = a.N >= a.M || (bf16 && !a.trans_a && a.N >= 256);
  int64_t dim = p.split_n ? a.N : a.M;
  p.chunk = dim;
  double flops = 2.0 * double(a.M) * double(a.N) * double(a.K);
  if (flops < double(1 << 21) || dim <= 128) return p;
  const int64_t align = bf16 ? 64 : 16;
  int64_t c = ((dim + 15) / 16 + align - 1) / align * align;
  p.chunk = std::max<int64_t>(128, c);
  p.count = (dim + p.chunk - 1) / p.chunk;
  return p;
}

// Runs fn(sub_args, A, B, C) on every (batch, block), each single-threaded,
// spread over `threads` OpenMP threads with a static schedule.
template <class Fn>
void run_blocks(const MatmulArgs& a, const void* A, const void* B, void* C, int threads, Fn fn) {
  const size_t ea = dtype_size(a.a_dtype), eb = dtype_size(a.b_dtype), ec = dtype_size(a.c_dtype);
  const Plan p = plan(a);
  const int64_t tasks = a.batch * p.count;
  std::exception_ptr err;
  std::mutex err_mu;
  int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads, tasks)));
#pragma omp parallel num_threads(nt)
  {
    // Libraries that thread with OpenMP (oneDNN) run one thread inside a block.
    omp_set_num_threads(1);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / p.count, i = t % p.count;
      const int64_t s = i * p.chunk, w = std::min(p.chunk, (p.split_n ? a.N : a.M) - s);
      MatmulArgs sub = a;
      sub.batch = 1;
      int64_t oa = b * a.stride_a, ob = b * a.stride_b, oc = b * a.stride_c;
      if (p.split_n) {
        sub.N = w;
        ob += a.trans_b ? s * a.ldb : s;
        oc += s;
      } else {
        sub.M = w;
        oa += a.trans_a ? s : s * a.lda;
        oc += s * a.ldc;
      }
      try {
        fn(sub, static_cast<const char*>(A) + oa * ea, static_cast<const char*>(B) + ob * eb,
           static_cast<char*>(C) + oc * ec);
      } catch (...) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (!err) err = std::current_exception();
      }
    }
  }
  if (err) std::rethrow_exception(err);
}

void sgemm_block(Engine e, const MatmulArgs& a, const float* A, const float* B, float* C) {
  switch (e) {
    case Engine::OpenBlas:
      sgemm_openblas(a, A, B, C);
      return;
    case Engine::OneDnn:
      sgemm_onednn(a, A, B, C);
      return;
    case Engine::Portable:
      sgemm_portable(a, A, B, C);
      return;
  }
}

void gemm_f32(const MatmulArgs& a, const float* A, const float* B, float* C, int threads) {
  const Engine e = choose_engine(a);
  run_blocks(a, A, B, C, threads,
             [e](const MatmulArgs& s, const void* Ab, const void* Bb, void* Cb) {
               sgemm_block(e, s, static_cast<const float*>(Ab), static_cast<const float*>(Bb),
                           static_cast<float*>(Cb));
             });
}

// Copies a rows x cols bf16 matrix (row stride ld) for `count` batches (batch
// stride `stride`) into dense f32.
void widen(const uint16_t* src, int64_t count, int64_t stride, int64_t rows, int64_t cols,
           int64_t ld, float* dst, int threads) {
  const int64_t n = count * rows;
#pragma omp parallel for num_threads(threads) schedule(static) if (n * cols > (1 << 16))
  for (int64_t r = 0; r < n; ++r) {
    const int64_t b = r / rows, i = r % rows;
    bf16_to_f32_n(src + b * stride + i * ld, dst + r * cols, cols);
  }
}

// bf16 through f32: widen op's stored matrices, sgemm, round C once.
void gemm_bf16_convert(const MatmulArgs& a, const void* A, const void* B, void* C, int threads) {
  const int64_t ar = a.trans_a ? a.K : a.M, ac = a.trans_a ? a.M : a.K;
  const int64_t br = a.trans_b ? a.N : a.K, bc = a.trans_b ? a.K : a.N;
  const int64_t na = a.stride_a == 0 ? 1 : a.batch, nb = a.stride_b == 0 ? 1 : a.batch;
  thread_local std::vector<float> af, bf, cf;
  af.resize(size_t(na * ar * ac));
  bf.resize(size_t(nb * br * bc));
  widen(static_cast<const uint16_t*>(A), na, a.stride_a, ar, ac, a.lda, af.data(), threads);
  widen(static_cast<const uint16_t*>(B), nb, a.stride_b, br, bc, a.ldb, bf.data(), threads);
  MatmulArgs f = a;
  f.a_dtype = f.b_dtype = f.c_dtype = DType::F32;
  f.lda = ac;
  f.ldb = bc;
  f.stride_a = na == 1 ? 0 : ar * ac;
  f.stride_b = nb == 1 ? 0 : br * bc;
  if (a.c_dtype == DType::F32) {
    gemm_f32(f, af.data(), bf.data(), static_cast<float*>(C), threads);
    return;
  }
  cf.resize(size_t(a.batch * a.M * a.N));
  auto* c16 = static_cast<uint16_t*>(C);
  if (a.beta != 0.f) widen(c16, a.batch, a.stride_c, a.M, a.N, a.ldc, cf.data(), threads);
  f.ldc = a.N;
  f.stride_c = a.M * a.N;
  gemm_f32(f, af.data(), bf.data(), cf.data(), threads);
  const int64_t rows = a.batch * a.M;
  // cf is thread_local: worker threads must use this thread's buffer, not theirs.
  const float* cbuf = cf.data();
#pragma omp parallel for num_threads(threads) schedule(static) if (rows * a.N > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / a.M, i = r % a.M;
    f32_to_bf16_n(cbuf + r * a.N, c16 + b * a.stride_c + i * a.ldc, a.N);
  }
}

// K == 0: C = beta * C (nothing to multiply); BLAS conventions say beta == 0
// overwrites without reading C.
void scale_c(const MatmulArgs& a, void* C) {
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t i = 0; i < a.M; ++i)
      for (int64_t j = 0; j < a.N; ++j) {
        int64_t o = b * a.stride_c + i * a.ldc + j;
        if (a.c_dtype == DType::F32) {
          float* c = static_cast<float*>(C) + o;
          *c = a.beta == 0.f ? 0.f : a.beta * *c;
        } else {
          uint16_t* c = static_cast<uint16_t*>(C) + o;
          *c = f32_to_bf16(a.beta == 0.f ? 0.f : a.beta * bf16_to_f32(*c));
        }
      }
}

}  // namespace

void gemm_detail::bf16_to_f32_n(const uint16_t* src, float* dst, int64_t n) {
  if (allow_avx2()) return bf16_to_f32_n_avx2(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void gemm_detail::f32_to_bf16_n(const float* src, uint16_t* dst, int64_t n) {
  if (allow_avx2()) return f32_to_bf16_n_avx2(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void gemm(const MatmulArgs& a0, const void* A, const void* B, void* C, int threads) {
  MatmulArgs a = a0;
  threads = std::max(1, threads);
  if (a.M <= 0 || a.N <= 0 || a.batch <= 0) return;
  // A single stored row has no meaningful stride; BLAS still wants ld >= cols.
  if ((a.trans_a ? a.K : a.M) == 1) a.lda = std::max(a.lda, a.trans_a ? a.M : a.K);
  if ((a.trans_b ? a.N : a.K) == 1) a.ldb = std::max(a.ldb, a.trans_b ? a.K : a.N);
  if (a.M == 1) a.ldc = std::max(a.ldc, a.N);
  if (a.K <= 0) return scale_c(a, C);
  // A few rows times W^T (decode steps): stream W once instead of packing it.
  if (gemv_applies(a))
    return gemv_f32(a, static_cast<const float*>(A), static_cast<const float*>(B),
                    static_cast<float*>(C), threads);
  if (a.a_dtype == DType::F32 && a.b_dtype == DType::F32 && a.c_dtype == DType::F32)
    return gemm_f32(a, static_cast<const float*>(A), static_cast<const float*>(B),
                    static_cast<float*>(C), threads);
  if (a.a_dtype == DType::BF16 && a.b_dtype == DType::BF16 &&
      (a.c_dtype == DType::F32 || a.c_dtype == DType::BF16)) {
    Bf16Engine e = bf16_engine();
    if (e == Bf16Engine::Tile && !bf16gemm_tile_applies(a))
      e = onednn_available() && onednn_bf16_supported() ? Bf16Engine::OneDnn : Bf16Engine::Convert;
    if (e == Bf16Engine::Tile)
      return run_blocks(a, A, B, C, threads,
                        [](const MatmulArgs& s, const void* Ab, const void* Bb, void* Cb) {
                          bf16gemm_tile(s, Ab, Bb, Cb);
                        });
    if (e == Bf16Engine::OneDnn)
      return run_blocks(a, A, B, C, threads,
                        [](const MatmulArgs& s, const void* Ab, const void* Bb, void* Cb) {
                          bf16gemm_onednn(s, Ab, Bb, Cb);
                        });
    return gemm_bf16_convert(a, A, B, C, threads);
  }
  fail<KernelError>("[matmul] cpu backend: unsupported dtypes a={} b={} c={}",
                    dtype_name(a.a_dtype), dtype_name(a.b_dtype), dtype_name(a.c_dtype));
}

void gemm_load() {
  (void)openblas();
}

std::string gemm_describe() {
  std::string s;
  const OpenBlas& ob = openblas();
  const std::string mode = env_or("KEEL_GEMM", "auto");
  if (ob.sgemm)
    s +=
        fmt::format("openblas ({} build, {}) core={} ({}, start-up check {:.1e}) config='{}'",
                    ob.build, ob.path, ob.corename, ob.core_reason, ob.self_check_error, ob.config);
  else if (!ob.path.empty())
    s += fmt::format("openblas core={} failed the start-up check ({:.1e}): not used", ob.corename,
                     ob.self_check_error);
  else
    s += "no OpenBLAS found: portable C++ GEMM (slow)";
  if (onednn_available()) s += fmt::format("; onednn {}", onednn_version());
  s += fmt::format(
      "; f32 engine: {}",
      mode != "auto" || !onednn_available() || !ob.sgemm ? mode
      : allow_avx512()
          ? "onednn (with avx-512 it beat openblas at every training shape but one, bench_gemm)"
          : "onednn for tall A^T*B (M >= 8192), openblas otherwise");
  s += fmt::format("; bf16: {}", bf16_describe(bf16_engine()));
  s += "; fixed shape-based blocks, results independent of thread count";
  if (!ob.warning.empty()) s += "; WARNING: " + ob.warning;
  return s;
}

}  // namespace keel::backend::cpu
