// Validated entry points for the structured kernels: matmul, embedding, norms,
// rotary embedding and attention. Elementwise, loss, optimizer, reduction, cast
// and quantization entry points are in ops_elementwise.cpp.
#include "backend/ops.h"

#include <cmath>

#include "backend/ops_check.h"

namespace keel::ops {

using backend::Kernel;
using detail::Check;
using detail::rows_of;

void matmul(Backend& be, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
            float alpha, float beta) {
  Check ck(be, Kernel::Matmul, {{"a", &a}, {"b", &b}, {"c", &c}});
  ck.defined_and_contiguous();
  const int r = a.rank();
  ck.require(r == 2 || r == 3, "a must be 2-D (M, K) or 3-D (batch, M, K), got rank {}", r);
  ck.require(c.rank() == r, "c must have a's rank {}, got rank {}", r, c.rank());
  ck.require(b.rank() == 2 || b.rank() == r,
             "b must be 2-D or have a's rank {} (batched), got rank {}", r, b.rank());
  const DType adt = a.dtype(), bdt = b.dtype(), cdt = c.dtype();
  const bool ok_types =
      (adt == DType::F32 && bdt == DType::F32 && cdt == DType::F32) ||
      (adt == DType::BF16 && bdt == DType::BF16 && (cdt == DType::F32 || cdt == DType::BF16));
  ck.require(ok_types,
             "dtypes (a, b, c) must be (f32, f32, f32), (bf16, bf16, f32) or "
             "(bf16, bf16, bf16)");
  ck.supported(adt);

  const int64_t batch = r == 3 ? a.dim(0) : 1;
  const int64_t a0 = a.dim(-2), a1 = a.dim(-1), b0 = b.dim(-2), b1 = b.dim(-1);
  const int64_t M = trans_a ? a1 : a0, K = trans_a ? a0 : a1;
  const int64_t Kb = trans_b ? b1 : b0, N = trans_b ? b0 : b1;
  ck.require(K == Kb, "inner dims differ: op(a) is {}x{}, op(b) is {}x{} (trans_a={}, trans_b={})",
             M, K, Kb, N, trans_a, trans_b);
  if (r == 3) {
    ck.require(c.dim(0) == batch, "c's batch {} must equal a's batch {}", c.dim(0), batch);
    if (b.rank() == 3)
      ck.require(b.dim(0) == batch, "b's batch {} must equal a's batch {}", b.dim(0), batch);
  }
  ck.require(c.dim(-2) == M && c.dim(-1) == N, "c must be {}x{} (op(a) is {}x{}, op(b) is {}x{})",
             M, N, M, K, K, N);

  backend::MatmulArgs m;
  m.trans_a = trans_a;
  m.trans_b = trans_b;
  m.M = M;
  m.N = N;
  m.K = K;
  m.lda = a1;
  m.ldb = b1;
  m.ldc = N;
  m.batch = batch;
  m.stride_a = a0 * a1;
  m.stride_b = b.rank() == 3 ? b0 * b1 : 0;
  m.stride_c = M * N;
  m.alpha = alpha;
  m.beta = beta;
  m.a_dtype = adt;
  m.b_dtype = bdt;
  m.c_dtype = cdt;
  be.matmul(m, a.raw(), b.raw(), c.raw());
}

// ids must index rows of a table with V rows; checked here so kernels never read out of bounds.
// Ids already on a device were checked where they were made (the data loader), before upload.
static void check_ids(const Check& ck, const Tensor& ids, int64_t V) {
  if (!ids.on_host()) return;
  const int32_t* p = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    ck.require(p[i] >= 0 && p[i] < V, "ids[{}] = {} is out of range [0, {})", i, p[i], V);
}

static Shape ids_plus(const Tensor& ids, int64_t C) {
  std::vector<int64_t> d = ids.shape().dims();
  d.push_back(C);
  return Shape(d);
}

void embedding_forward(Backend& be, const Tensor& ids, const Tensor& table, Tensor& out) {
  Check ck(be, Kernel::Embedding, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  ck.defined_and_contiguous();
  ck.require(ids.dtype() == DType::I32 && (ids.rank() == 1 || ids.rank() == 2),
             "ids must be i32 (n) or (B, T)");
  ck.require(table.rank() == 2, "table must be 2-D (V, C)");
  ck.supported(table.dtype());
  const int64_t C = table.dim(1);
  ck.like("out", out, table.dtype(), ids_plus(ids, C), "ids' shape + (C), table's dtype");
  check_ids(ck, ids, table.dim(0));
  be.embedding_forward(table.dtype(), ids.data<int32_t>(), table.raw(), out.raw(), ids.numel(), C);
}

void embedding_backward(Backend& be, const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  Check ck(be, Kernel::Embedding, {{"ids", &ids}, {"dout", &dout}, {"dtable", &dtable}});
  ck.defined_and_contiguous();
  ck.require(ids.dtype() == DType::I32 && (ids.rank() == 1 || ids.rank() == 2),
             "ids must be i32 (n) or (B, T)");
  ck.require(dtable.rank() == 2 && dtable.dtype() == DType::F32, "dtable must be f32 (V, C)");
  ck.supported(dout.dtype());
  const int64_t C = dtable.dim(1);
  ck.require(dout.shape() == ids_plus(ids, C), "dout must have shape {} (ids' shape + (C))",
             ids_plus(ids, C).str());
  check_ids(ck, ids, dtable.dim(0));
  be.embedding_backward(dout.dtype(), ids.data<int32_t>(), dout.raw(), dtable.data<float>(),
                        ids.numel(), C);
}

// Shared checks of the norms: x (..., C), w (C) of x's dtype, stats f32 (rows).
static void check_norm_x(const Check& ck, const Tensor& x) {
  ck.require(x.rank() >= 1, "x must have rank >= 1 (..., C)");
  ck.supported(x.dtype());
}
static void check_norm_w(const Check& ck, const char* name, const Tensor& w, const Tensor& x) {
  const int64_t C = x.dim(-1);
  ck.like(name, w, x.dtype(), Shape{C}, fmt::format("x's dtype, C={}", C));
}

void layernorm_forward(Backend& be, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                       Tensor& mean, Tensor& rstd, float eps) {
  Check ck(be, Kernel::LayerNorm,
           {{"x", &x}, {"w", &w}, {"b", &b}, {"y", &y}, {"mean", &mean}, {"rstd", &rstd}});
  ck.defined_and_contiguous({"b"});
  check_norm_x(ck, x);
  check_norm_w(ck, "w", w, x);
  if (b.defined()) check_norm_w(ck, "b", b, x);
  ck.like("y", y, x.dtype(), x.shape(), "x's dtype and shape");
  const int64_t N = rows_of(x), C = x.dim(-1);
  ck.f32_numel("mean", mean, N, "one per row of x");
  ck.f32_numel("rstd", rstd, N, "one per row of x");
  be.layernorm_forward(x.dtype(), x.raw(), w.raw(), b.defined() ? b.raw() : nullptr, y.raw(),
                       mean.data<float>(), rstd.data<float>(), N, C, eps);
}

void layernorm_backward(Backend& be, const Tensor& dy, const Tensor& x, const Tensor& w,
                        const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                        Tensor& db) {
  Check ck(be, Kernel::LayerNorm,
           {{"dy", &dy},
            {"x", &x},
            {"w", &w},
            {"mean", &mean},
            {"rstd", &rstd},
            {"dx", &dx},
            {"dw", &dw},
            {"db", &db}});
  ck.defined_and_contiguous({"db"});
  check_norm_x(ck, x);
  check_norm_w(ck, "w", w, x);
  ck.like("dy", dy, x.dtype(), x.shape(), "x's dtype and shape");
  ck.like("dx", dx, x.dtype(), x.shape(), "x's dtype and shape");
  const int64_t N = rows_of(x), C = x.dim(-1);
  ck.f32_numel("mean", mean, N, "one per row of x");
  ck.f32_numel("rstd", rstd, N, "one per row of x");
  ck.like("dw", dw, DType::F32, Shape{C}, "parameter gradients are f32");
  if (db.defined()) ck.like("db", db, DType::F32, Shape{C}, "parameter gradients are f32");
  be.layernorm_backward(x.dtype(), dy.raw(), x.raw(), w.raw(), mean.data<float>(),
                        rstd.data<float>(), dx.raw(), dw.data<float>(),
                        db.defined() ? db.data<float>() : nullptr, N, C);
}

void rmsnorm_forward(Backend& be, const Tensor& x, const Tensor& w, Tensor& y, Tensor& rstd,
                     float eps) {
  Check ck(be, Kernel::RmsNorm, {{"x", &x}, {"w", &w}, {"y", &y}, {"rstd", &rstd}});
  ck.defined_and_contiguous();
  check_norm_x(ck, x);
  check_norm_w(ck, "w", w, x);
  ck.like("y", y, x.dtype(), x.shape(), "x's dtype and shape");
  const int64_t N = rows_of(x), C = x.dim(-1);
  ck.f32_numel("rstd", rstd, N, "one per row of x");
  be.rmsnorm_forward(x.dtype(), x.raw(), w.raw(), y.raw(), rstd.data<float>(), N, C, eps);
}

void rmsnorm_backward(Backend& be, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd, Tensor& dx, Tensor& dw) {
  Check ck(be, Kernel::RmsNorm,
           {{"dy", &dy}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"dx", &dx}, {"dw", &dw}});
  ck.defined_and_contiguous();
  check_norm_x(ck, x);
  check_norm_w(ck, "w", w, x);
  ck.like("dy", dy, x.dtype(), x.shape(), "x's dtype and shape");
  ck.like("dx", dx, x.dtype(), x.shape(), "x's dtype and shape");
  const int64_t N = rows_of(x), C = x.dim(-1);
  ck.f32_numel("rstd", rstd, N, "one per row of x");
  ck.like("dw", dw, DType::F32, Shape{C}, "parameter gradients are f32");
  be.rmsnorm_backward(x.dtype(), dy.raw(), x.raw(), w.raw(), rstd.data<float>(), dx.raw(),
                      dw.data<float>(), N, C);
}

static backend::RopeArgs rope_args(const Check& ck, const char* xname, const Tensor& x,
                                   const char* yname, const Tensor& y, int64_t pos0, float theta) {
  ck.require(x.rank() == 4, "{} must be 4-D (B, T, NH, HS)", xname);
  ck.require(x.dim(3) % 2 == 0, "HS={} must be even (rope rotates pairs)", x.dim(3));
  ck.require(pos0 >= 0, "pos0={} must be >= 0", pos0);
  ck.supported(x.dtype());
  ck.like(yname, y, x.dtype(), x.shape(), "same dtype and shape");
  backend::RopeArgs r;
  r.B = x.dim(0);
  r.T = x.dim(1);
  r.NH = x.dim(2);
  r.HS = x.dim(3);
  r.row_stride = r.NH * r.HS;
  r.batch_stride = r.T * r.row_stride;
  r.pos0 = pos0;
  r.theta = theta;
  r.dt = x.dtype();
  return r;
}

void rope_forward(Backend& be, const Tensor& x, Tensor& y, int64_t pos0, float theta) {
  Check ck(be, Kernel::Rope, {{"x", &x}, {"y", &y}});
  ck.defined_and_contiguous();
  be.rope_forward(rope_args(ck, "x", x, "y", y, pos0, theta), x.raw(), y.raw());
}

void rope_backward(Backend& be, const Tensor& dy, Tensor& dx, int64_t pos0, float theta) {
  Check ck(be, Kernel::Rope, {{"dy", &dy}, {"dx", &dx}});
  ck.defined_and_contiguous();
  be.rope_backward(rope_args(ck, "dy", dy, "dx", dx, pos0, theta), dy.raw(), dx.raw());
}

static backend::AttentionArgs attention_args(const Check& ck, const Tensor& q, const Tensor& k,
                                             const Tensor& v, const Tensor& o, const Tensor& lse,
                                             float scale) {
  ck.require(q.rank() == 4 && k.rank() == 4 && v.rank() == 4,
             "q must be (B, Tq, NH, HS), k and v (B, Tk, NKV, HS)");
  ck.supported(q.dtype());
  const int64_t B = q.dim(0), Tq = q.dim(1), NH = q.dim(2), HS = q.dim(3);
  const int64_t Tk = k.dim(1), NKV = k.dim(2);
  ck.require(k.dtype() == q.dtype() && k.dim(0) == B && k.dim(3) == HS,
             "k must be {}(B={}, Tk, NKV, HS={})", dtype_name(q.dtype()), B, HS);
  ck.like("v", v, q.dtype(), k.shape(), "k's dtype and shape");
  ck.require(NKV > 0 && NH % NKV == 0, "NH={} must be a multiple of NKV={}", NH, NKV);
  ck.require(Tq <= Tk, "Tq={} must be <= Tk={}", Tq, Tk);
  ck.like("o", o, q.dtype(), q.shape(), "q's dtype and shape");
  ck.like("lse", lse, DType::F32, Shape{B, NH, Tq}, "f32 (B, NH, Tq)");
  backend::AttentionArgs a;
  a.B = B;
  a.Tq = Tq;
  a.Tk = Tk;
  a.NH = NH;
  a.NKV = NKV;
  a.HS = HS;
  a.q_row_stride = NH * HS;
  a.q_batch_stride = Tq * NH * HS;
  a.kv_row_stride = NKV * HS;
  a.kv_batch_stride = Tk * NKV * HS;
  a.scale = scale > 0.f ? scale : float(1.0 / std::sqrt(double(HS)));
  a.dt = q.dtype();
  return a;
}

void attention_forward(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                       Tensor& lse, float scale) {
  Check ck(be, Kernel::Attention, {{"q", &q}, {"k", &k}, {"v", &v}, {"o", &o}, {"lse", &lse}});
  ck.defined_and_contiguous();
  backend::AttentionArgs a = attention_args(ck, q, k, v, o, lse, scale);
  be.attention_forward(a, q.raw(), k.raw(), v.raw(), o.raw(), lse.data<float>());
}

void attention_backward(Backend& be, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, Tensor& dq, Tensor& dk,
                        Tensor& dv, float scale) {
  Check ck(be, Kernel::Attention,
           {{"dout", &dout},
            {"q", &q},
            {"k", &k},
            {"v", &v},
            {"o", &o},
            {"lse", &lse},
            {"dq", &dq},
            {"dk", &dk},
            {"dv", &dv}});
  ck.defined_and_contiguous();
  backend::AttentionArgs a = attention_args(ck, q, k, v, o, lse, scale);
  ck.like("dout", dout, q.dtype(), q.shape(), "o's dtype and shape");
  ck.like("dq", dq, q.dtype(), q.shape(), "q's dtype and shape");
  ck.like("dk", dk, k.dtype(), k.shape(), "k's dtype and shape");
  ck.like("dv", dv, v.dtype(), v.shape(), "v's dtype and shape");
  be.attention_backward(a, dout.raw(), q.raw(), k.raw(), v.raw(), o.raw(), lse.data<float>(),
                        dq.raw(), dk.raw(), dv.raw());
}

}  // namespace keel::ops
