// oneDNN (when linked): dnnl_sgemm for f32 blocks, and the matmul primitive
// for bf16, which oneDNN dispatches at run time to avx512_core_bf16 kernels on
// CPUs that have them (and to an internal fallback elsewhere). Primitives are
// cached by shape; each block runs single-threaded inside keel's partition.
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "backend/cpu/gemm_internal.h"
#include "core/error.h"

#ifdef KEEL_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace keel::backend::cpu::gemm_detail {

#ifdef KEEL_HAVE_DNNL

bool onednn_available() {
  return true;
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
}

void sgemm_onednn(const MatmulArgs& a, const float* A, const float* B, float* C) {
  dnnl_status_t st = dnnl_sgemm(a.trans_a ? 'T' : 'N', a.trans_b ? 'T' : 'N', a.M, a.N, a.K,
                                a.alpha, A, a.lda, B, a.ldb, a.beta, C, a.ldc);
  if (st != dnnl_success)
    fail<KernelError>(
        "[matmul] dnnl_sgemm failed (status {}) for M={} N={} K={} lda={} ldb={} "
        "ldc={}",
        int(st), a.M, a.N, a.K, a.lda, a.ldb, a.ldc);
}

namespace {

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                       uint32_t, uint32_t>;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

struct Bf16Matmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  size_t scratch_bytes = 0;
};

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

std::shared_ptr<Bf16Matmul> make_prim(const MatmulArgs& a) {
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  // Transposes are strides: op(A) is M x K with strides (lda, 1) or (1, lda).
  dnnl::memory::desc amd(dims{a.M, a.K}, dt::bf16, a.trans_a ? dims{1, a.lda} : dims{a.lda, 1});
  dnnl::memory::desc bmd(dims{a.K, a.N}, dt::bf16, a.trans_b ? dims{1, a.ldb} : dims{a.ldb, 1});
  dnnl::memory::desc cmd(dims{a.M, a.N}, a.c_dtype == DType::BF16 ? dt::bf16 : dt::f32,
                         dims{a.ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (a.alpha != 1.f) attr.set_output_scales(0, {a.alpha});
  if (a.beta != 0.f) {
    dnnl::post_ops po;
    po.append_sum(a.beta);
    attr.set_post_ops(po);
  }
  dnnl::matmul::desc d(amd, bmd, cmd);
  dnnl::matmul::primitive_desc pd(d, attr, engine());
  auto p = std::make_shared<Bf16Matmul>();
  p->pd = pd;
  p->prim = dnnl::matmul(pd);
  p->scratch_bytes = pd.scratchpad_desc().get_size();
  return p;
}

std::shared_ptr<Bf16Matmul> get_prim(const MatmulArgs& a) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<Bf16Matmul>> cache;
  Key k{a.trans_a, a.trans_b,      a.M,           a.N,         a.K, a.lda, a.ldb,
        a.ldc,     int(a.c_dtype), bits(a.alpha), bits(a.beta)};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  if (cache.size() > 4096) cache.clear();  // bounded; shapes in training repeat
  auto p = make_prim(a);
  cache.emplace(k, p);
  return p;
}

}  // namespace

bool onednn_bf16_supported() {
  // oneDNN 2.x implements bf16 matmul only on AVX-512 CPUs; ask it once.
  static const bool ok = [] {
    MatmulArgs a;
    a.M = a.N = a.K = a.lda = a.ldb = a.ldc = 16;
    a.a_dtype = a.b_dtype = DType::BF16;
    try {
      make_prim(a);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

void bf16gemm_onednn(const MatmulArgs& a, const void* A, const void* B, void* C) {
  try {
    auto p = get_prim(a);
    const dnnl::matmul::primitive_desc& pd = p->pd;
    thread_local std::vector<uint8_t> scratch;
    if (scratch.size() < p->scratch_bytes) scratch.resize(p->scratch_bytes);
    dnnl::memory am(pd.src_desc(), engine(), const_cast<void*>(A));
    dnnl::memory bm(pd.weights_desc(), engine(), const_cast<void*>(B));
    dnnl::memory cm(pd.dst_desc(), engine(), C);
    dnnl::memory sm(pd.scratchpad_desc(), engine(), scratch.data());
    thread_local dnnl::stream s(engine());
    p->prim.execute(s, {{DNNL_ARG_SRC, am},
                        {DNNL_ARG_WEIGHTS, bm},
                        {DNNL_ARG_DST, cm},
                        {DNNL_ARG_SCRATCHPAD, sm}});
    s.wait();
  } catch (const dnnl::error& e) {
    fail<KernelError>(
        "[matmul] oneDNN bf16 matmul failed ({}) for M={} N={} K={} lda={} ldb={} "
        "ldc={} trans_a={} trans_b={}",
        e.what(), a.M, a.N, a.K, a.lda, a.ldb, a.ldc, a.trans_a, a.trans_b);
  }
}

#else  // no oneDNN in this build

bool onednn_available() {
  return false;
}
bool onednn_bf16_supported() {
  return false;
}
std::string onednn_version() {
  return "";
}
void sgemm_onednn(const MatmulArgs&, const float*, const float*, float*) {
  fail<KernelError>("[matmul] this build has no oneDNN (install libdnnl-dev and reconfigure)");
}
void bf16gemm_onednn(const MatmulArgs&, const void*, const void*, void*) {
  fail<KernelError>("[matmul] this build has no oneDNN (install libdnnl-dev and reconfigure)");
}

#endif

}  // namespace keel::backend::cpu::gemm_detail
