// The ref backend (the oracle of every other backend) checked against an
// independent implementation: seeded random inputs go through ops.h on `ref`,
// inputs are written to a temporary directory, tests/reference/kernels_torch.py
// recomputes every output in float64 with PyTorch (autograd for backward,
// torch.optim.AdamW) or NumPy (quantization rules), and the results are
// compared here. Gradient buffers start non-zero, so accumulation is checked.
//
// Tolerances: max |ref - torch| / max |torch| per output; 1e-5 for f32 outputs,
// 1e-2 for bf16 (8 significant bits), exact (0) for casts and dequantization.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend/ops.h"
#include "backend/ref/ref_backend.h"
#include "core/rng.h"

namespace {

namespace fs = std::filesystem;
namespace ops = keel::ops;
using keel::DType;
using keel::Shape;
using keel::Tensor;

constexpr double kF32 = 1e-5, kBF16 = 1e-2, kF16 = 2e-3, kExact = 0;
constexpr const char* kPython = "/usr/bin/python3";

std::vector<double> values(const Tensor& t) {
  std::vector<float> f = t.to_f32_vector();
  return {f.begin(), f.end()};
}

// Collects cases (inputs + ref outputs), runs the Python reference once, compares.
class TorchCheck {
 public:
  explicit TorchCheck(const std::string& group) {
    dir_ = fs::temp_directory_path() / fmt::format("keel_ref_vs_torch_{}_{}", group, getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~TorchCheck() {
    if (!::testing::Test::HasFailure()) fs::remove_all(dir_);  // kept for a failing run
  }

  Tensor randn(const Shape& s, float stddev = 1.f, DType dt = DType::F32) {
    std::vector<float> v(size_t(s.numel()));
    keel::Rng(20240601, ++stream_).fill_normal(v.data(), s.numel(), stddev);
    Tensor t = Tensor::from_f32(v, s);
    return dt == DType::F32 ? t : t.to(dt);
  }

  void begin(const std::string& name, const std::string& op, const std::string& attrs = "") {
    cases_.push_back({name, op, attrs, {}, {}});
  }
  // Writes t's raw bytes; Python reads them by dtype and shape.
  void input(const std::string& name, const Tensor& t) {
    Case& c = cases_.back();
    const std::string file = fmt::format("{}.{}.bin", c.name, name);
    std::ofstream(dir_ / file, std::ios::binary)
        .write(static_cast<const char*>(t.raw()), std::streamsize(t.nbytes()));
    c.inputs.push_back(fmt::format(R"("{}": {{"file": "{}", "dtype": "{}", "shape": [{}]}})", name,
                                   file, keel::dtype_name(t.dtype()),
                                   fmt::join(t.shape().dims(), ", ")));
  }
  void expect(const std::string& name, const Tensor& ref, double tol) {
    expect(name, values(ref), tol);
  }
  void expect(const std::string& name, std::vector<double> ref, double tol) {
    cases_.back().outs.push_back({name, std::move(ref), tol});
  }

  void run() {
    ASSERT_TRUE(fs::exists(kPython))
        << kPython << " not found: the ref-vs-PyTorch check needs Debian's python3 with "
        << "python3-torch and python3-numpy (scripts/setup.sh installs them)";
    write_manifest();
    const std::string script = std::string(KEEL_SOURCE_DIR) + "/tests/reference/kernels_torch.py";
    const fs::path log = dir_ / "python.log";
    const std::string cmd =
        fmt::format("{} {} {} > {} 2>&1", kPython, script, dir_.string(), log.string());
    const int status = std::system(cmd.c_str());
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::stringstream ss;
    ss << std::ifstream(log).rdbuf();
    ASSERT_EQ(rc, 0) << "PyTorch reference failed: `" << cmd << "`\n"
                     << ss.str() << "\n(needs " << kPython << " with torch and numpy importable)";
    for (const Case& c : cases_)
      for (const Out& o : c.outs) compare(c, o);
  }

 private:
  struct Out {
    std::string name;
    std::vector<double> ref;
    double tol;
  };
  struct Case {
    std::string name, op, attrs;
    std::vector<std::string> inputs;
    std::vector<Out> outs;
  };

  void write_manifest() {
    std::string js = "{\"cases\": [\n";
    for (size_t i = 0; i < cases_.size(); ++i) {
      const Case& c = cases_[i];
      std::vector<std::string> outs;
      for (const Out& o : c.outs) outs.push_back("\"" + o.name + "\"");
      js += fmt::format(R"(  {{"name": "{}", "op": "{}", "attrs": {{{}}}, "inputs": {{{}}}, )"
                        R"("outputs": [{}]}}{})",
                        c.name, c.op, c.attrs, fmt::join(c.inputs, ", "), fmt::join(outs, ", "),
                        i + 1 < cases_.size() ? ",\n" : "\n");
    }
    js += "]}\n";
    std::ofstream(dir_ / "manifest.json") << js;
  }

  void compare(const Case& c, const Out& o) {
    const fs::path file = dir_ / fmt::format("{}.{}.out", c.name, o.name);
    std::vector<double> want(o.ref.size());
    std::ifstream in(file, std::ios::binary);
    in.read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size() * 8));
    ASSERT_TRUE(in && fs::file_size(file) == want.size() * 8)
        << c.name << "." << o.name << ": torch output missing or of the wrong size (" << file
        << ", expected " << want.size() << " values)";
    double scale = 0, worst = 0;
    size_t at = 0, mismatches = 0;
    for (double w : want)
      if (std::isfinite(w)) scale = std::max(scale, std::fabs(w));
    for (size_t i = 0; i < want.size(); ++i) {
      const double r = o.ref[i], w = want[i];
      const bool same = r == w || (std::isnan(r) && std::isnan(w));
      if (!same) ++mismatches;
      double err = std::fabs(r - w);
      if (!same && !(std::isfinite(r) && std::isfinite(w))) err = INFINITY;
      if (err > worst) worst = err, at = i;
    }
    const double rel = scale > 0 ? worst / scale : worst;
    if (std::getenv("KEEL_REF_VS_TORCH_VERBOSE"))
      fmt::print("{:>28}.{:<12} n={:<5} max|torch|={:<10.4g} rel err={:.3g} (tol {:g})\n", c.name,
                 o.name, want.size(), scale, rel, o.tol);
    if (o.tol == kExact) {
      EXPECT_EQ(mismatches, 0u) << c.name << "." << o.name << ": " << mismatches << " of "
                                << want.size() << " differ; worst at [" << at
                                << "]: ref=" << o.ref[at] << " torch=" << want[at];
    } else {
      EXPECT_LE(rel, o.tol) << c.name << "." << o.name
                            << ": max |ref - torch| / max |torch| = " << rel << " at [" << at
                            << "]: ref=" << o.ref[at] << " torch=" << want[at] << " (tolerance "
                            << o.tol << ")";
    }
  }

  fs::path dir_;
  uint64_t stream_ = 0;
  std::vector<Case> cases_;
};

std::vector<double> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw());
  return {p, p + t.nbytes()};
}

std::string num(double x) {
  return fmt::format("{}", x);
}
double tol_of(DType dt) {
  return dt == DType::F32 ? kF32 : dt == DType::BF16 ? kBF16 : kF16;
}

// ------------------------------------------------------------------ matmul, embedding, norms

void add_matmul(TorchCheck& tc, keel::backend::Backend& be, const std::string& name, Tensor a,
                bool ta, Tensor b, bool tb, Tensor c, float alpha, float beta) {
  tc.begin(name, "matmul",
           fmt::format(R"("trans_a": {}, "trans_b": {}, "alpha": {}, "beta": {})", ta, tb,
                       num(alpha), num(beta)));
  tc.input("a", a);
  tc.input("b", b);
  if (beta != 0.f) tc.input("c", c);
  ops::matmul(be, a, ta, b, tb, c, alpha, beta);
  tc.expect("c", c, c.dtype() == DType::F32 ? kF32 : kBF16);
}

void add_layernorm(TorchCheck& tc, keel::backend::Backend& be, const std::string& name, DType dt) {
  const int64_t N = 6, C = 10;
  Tensor x = tc.randn({N, C}, 2.f, dt), w = tc.randn({C}, 1.f, dt), b = tc.randn({C}, 1.f, dt);
  Tensor y = Tensor::zeros({N, C}, dt), mean = Tensor::zeros({N}, DType::F32),
         rstd = Tensor::zeros({N}, DType::F32);
  Tensor dy = tc.randn({N, C}, 1.f, dt), dx = tc.randn({N, C}, 1.f, dt), dw = tc.randn({C}),
         db = tc.randn({C});
  const float eps = 1e-5f;
  tc.begin(name, "layernorm", fmt::format(R"("eps": {})", num(eps)));
  for (auto [n, t] : {std::pair{"x", &x},
                      {"w", &w},
                      {"b", &b},
                      {"dy", &dy},
                      {"dx", &dx},
                      {"dw", &dw},
                      {"db", &db}})
    tc.input(n, *t);
  ops::layernorm_forward(be, x, w, b, y, mean, rstd, eps);
  ops::layernorm_backward(be, dy, x, w, mean, rstd, dx, dw, db);
  tc.expect("y", y, tol_of(dt));
  tc.expect("mean", mean, kF32);
  tc.expect("rstd", rstd, kF32);
  tc.expect("dx", dx, tol_of(dt));
  tc.expect("dw", dw, kF32);
  tc.expect("db", db, kF32);
}

void add_rmsnorm(TorchCheck& tc, keel::backend::Backend& be, const std::string& name, DType dt) {
  const int64_t N = 5, C = 12;
  Tensor x = tc.randn({N, C}, 1.5f, dt), w = tc.randn({C}, 1.f, dt);
  Tensor y = Tensor::zeros({N, C}, dt), rstd = Tensor::zeros({N}, DType::F32);
  Tensor dy = tc.randn({N, C}, 1.f, dt), dx = tc.randn({N, C}, 1.f, dt), dw = tc.randn({C});
  const float eps = 1e-6f;
  tc.begin(name, "rmsnorm", fmt::format(R"("eps": {})", num(eps)));
  for (auto [n, t] : {std::pair{"x", &x}, {"w", &w}, {"dy", &dy}, {"dx", &dx}, {"dw", &dw}})
    tc.input(n, *t);
  ops::rmsnorm_forward(be, x, w, y, rstd, eps);
  ops::rmsnorm_backward(be, dy, x, w, rstd, dx, dw);
  tc.expect("y", y, tol_of(dt));
  tc.expect("rstd", rstd, kF32);
  tc.expect("dx", dx, tol_of(dt));
  tc.expect("dw", dw, kF32);
}

TEST(RefVsTorch, MatmulEmbeddingNorms) {
  auto be = keel::backend::make_ref_backend();
  TorchCheck tc("dense");
  const int64_t M = 5, K = 7, N = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = ta ? tc.randn({K, M}) : tc.randn({M, K});
      Tensor b = tb ? tc.randn({N, K}) : tc.randn({K, N});
      add_matmul(tc, *be, fmt::format("matmul_t{}{}", int(ta), int(tb)), a, ta, b, tb,
                 tc.randn({M, N}), 1.5f, 0.5f);
    }
  // beta = 0 must not read c: fill it with NaN.
  Tensor c_nan = Tensor::from_f32(std::vector<float>(3 * 4 * 5, NAN), {3, 4, 5});
  add_matmul(tc, *be, "matmul_batched", tc.randn({3, 4, 6}), false, tc.randn({3, 6, 5}), false,
             c_nan, 1.f, 0.f);
  add_matmul(tc, *be, "matmul_batched_shared_b", tc.randn({2, 6, 4}), true, tc.randn({5, 6}), true,
             Tensor::zeros({2, 4, 5}, DType::F32), 1.f, 0.f);
  add_matmul(tc, *be, "matmul_bf16_f32", tc.randn({5, 8}, 1.f, DType::BF16), false,
             tc.randn({8, 6}, 1.f, DType::BF16), false, Tensor::zeros({5, 6}, DType::F32), 1.f,
             0.f);
  add_matmul(tc, *be, "matmul_bf16_bf16", tc.randn({8, 5}, 1.f, DType::BF16), true,
             tc.randn({6, 8}, 1.f, DType::BF16), true, tc.randn({5, 6}, 1.f, DType::BF16), 1.f,
             1.f);

  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor ids = Tensor::from_i32({1, 4, 1, 0, 5, 4}, {2, 3}), table = tc.randn({6, 4}, 1.f, dt);
    Tensor out = Tensor::zeros({2, 3, 4}, dt), dout = tc.randn({2, 3, 4}, 1.f, dt),
           dtable = tc.randn({6, 4});
    tc.begin(fmt::format("embedding_{}", keel::dtype_name(dt)), "embedding");
    for (auto [n, t] :
         {std::pair{"ids", &ids}, {"table", &table}, {"dout", &dout}, {"dtable", &dtable}})
      tc.input(n, *t);
    ops::embedding_forward(*be, ids, table, out);
    ops::embedding_backward(*be, ids, dout, dtable);
    tc.expect("out", out, kExact);
    tc.expect("dtable", dtable, kF32);
  }
  add_layernorm(tc, *be, "layernorm_f32", DType::F32);
  add_layernorm(tc, *be, "layernorm_bf16", DType::BF16);
  add_rmsnorm(tc, *be, "rmsnorm_f32", DType::F32);
  add_rmsnorm(tc, *be, "rmsnorm_bf16", DType::BF16);
  tc.run();
}

// ------------------------------------------------------------------ rope, attention

void add_rope(TorchCheck& tc, keel::backend::Backend& be, const std::string& name, DType dt,
              int64_t pos0) {
  const Shape s{2, 3, 2, 8};
  const float theta = 10000.f;
  Tensor x = tc.randn(s, 1.f, dt), y = Tensor::zeros(s, dt), dy = tc.randn(s, 1.f, dt),
         dx = tc.randn(s, 1.f, dt);
  tc.begin(name, "rope", fmt::format(R"("pos0": {}, "theta": {})", pos0, num(theta)));
  tc.input("x", x);
  tc.input("dy", dy);
  tc.input("dx", dx);
  ops::rope_forward(be, x, y, pos0, theta);
  ops::rope_backward(be, dy, dx, pos0, theta);
  tc.expect("y", y, tol_of(dt));
  tc.expect("dx", dx, tol_of(dt));
}

void add_attention(TorchCheck& tc, keel::backend::Backend& be, const std::string& name, DType dt,
                   int64_t B, int64_t Tq, int64_t Tk, int64_t NH, int64_t NKV, int64_t HS) {
  Tensor q = tc.randn({B, Tq, NH, HS}, 1.f, dt), k = tc.randn({B, Tk, NKV, HS}, 1.f, dt),
         v = tc.randn({B, Tk, NKV, HS}, 1.f, dt);
  Tensor o = Tensor::zeros({B, Tq, NH, HS}, dt), lse = Tensor::zeros({B, NH, Tq}, DType::F32);
  Tensor dout = tc.randn({B, Tq, NH, HS}, 1.f, dt), dq = tc.randn({B, Tq, NH, HS}, 1.f, dt),
         dk = tc.randn({B, Tk, NKV, HS}, 1.f, dt), dv = tc.randn({B, Tk, NKV, HS}, 1.f, dt);
  const float scale = float(1.0 / std::sqrt(double(HS)));  // what ops uses for scale <= 0
  tc.begin(name, "attention", fmt::format(R"("scale": {})", num(scale)));
  for (auto [n, t] : {std::pair{"q", &q},
                      {"k", &k},
                      {"v", &v},
                      {"dout", &dout},
                      {"dq", &dq},
                      {"dk", &dk},
                      {"dv", &dv}})
    tc.input(n, *t);
  ops::attention_forward(be, q, k, v, o, lse);
  ops::attention_backward(be, dout, q, k, v, o, lse, dq, dk, dv);
  tc.expect("o", o, tol_of(dt));
  tc.expect("lse", lse, kF32);
  tc.expect("dq", dq, tol_of(dt));
  tc.expect("dk", dk, tol_of(dt));
  tc.expect("dv", dv, tol_of(dt));
}

TEST(RefVsTorch, RopeAttention) {
  auto be = keel::backend::make_ref_backend();
  TorchCheck tc("attention");
  add_rope(tc, *be, "rope_f32", DType::F32, 3);
  add_rope(tc, *be, "rope_bf16_far", DType::BF16, 1000);
  add_attention(tc, *be, "attention_gqa", DType::F32, 2, 5, 5, 4, 2, 8);
  add_attention(tc, *be, "attention_decode_mqa", DType::F32, 2, 3, 7, 4, 1, 8);
  add_attention(tc, *be, "attention_bf16", DType::BF16, 1, 6, 6, 2, 2, 16);
  tc.run();
}

// ------------------------------------------------------------------ activations, loss, optimizer

void add_unary(TorchCheck& tc, keel::backend::Backend& be, const std::string& op, DType dt) {
  const Shape s{64};
  Tensor x = tc.randn(s, 2.5f, dt), y = Tensor::zeros(s, dt), dy = tc.randn(s, 1.f, dt),
         dx = tc.randn(s, 1.f, dt);
  tc.begin(fmt::format("{}_{}", op, keel::dtype_name(dt)), op);
  tc.input("x", x);
  tc.input("dy", dy);
  tc.input("dx", dx);
  if (op == "gelu") {
    ops::gelu_forward(be, x, y);
    ops::gelu_backward(be, x, dy, dx);
  } else {
    ops::silu_forward(be, x, y);
    ops::silu_backward(be, x, dy, dx);
  }
  tc.expect("y", y, tol_of(dt));
  tc.expect("dx", dx, tol_of(dt));
}

void add_cross_entropy(TorchCheck& tc, keel::backend::Backend& be, DType dt) {
  const int64_t N = 6, V = 13;
  Tensor logits = tc.randn({N, V}, 3.f, dt), targets = Tensor::from_i32({3, -1, 12, 0, 7, -5}, {N});
  Tensor losses = Tensor::zeros({N}, DType::F32), lse = Tensor::zeros({N}, DType::F32);
  Tensor dloss = tc.randn({N}), dlogits = tc.randn({N, V}, 1.f, dt);
  tc.begin(fmt::format("cross_entropy_{}", keel::dtype_name(dt)), "cross_entropy");
  for (auto [n, t] : {std::pair{"logits", &logits},
                      {"targets", &targets},
                      {"dloss", &dloss},
                      {"dlogits", &dlogits}})
    tc.input(n, *t);
  ops::cross_entropy_forward(be, logits, targets, losses, lse);
  ops::cross_entropy_backward(be, logits, targets, lse, dloss, dlogits);
  EXPECT_EQ(losses.data<float>()[1], 0.f);  // ignored targets give loss 0
  tc.expect("losses", losses, kF32);
  tc.expect("lse", lse, kF32);
  tc.expect("dlogits", dlogits, tol_of(dt));
}

TEST(RefVsTorch, ActivationsLossOptimizer) {
  auto be = keel::backend::make_ref_backend();
  TorchCheck tc("elementwise");
  add_unary(tc, *be, "gelu", DType::F32);
  add_unary(tc, *be, "gelu", DType::BF16);
  add_unary(tc, *be, "gelu", DType::F16);
  add_unary(tc, *be, "silu", DType::F32);
  add_unary(tc, *be, "silu", DType::BF16);
  for (DType dt : {DType::F32, DType::BF16}) {
    const Shape s{48};
    Tensor g = tc.randn(s, 2.f, dt), u = tc.randn(s, 1.f, dt), y = Tensor::zeros(s, dt);
    Tensor dy = tc.randn(s, 1.f, dt), dg = tc.randn(s, 1.f, dt), du = tc.randn(s, 1.f, dt);
    tc.begin(fmt::format("swiglu_{}", keel::dtype_name(dt)), "swiglu");
    for (auto [n, t] :
         {std::pair{"gate", &g}, {"up", &u}, {"dy", &dy}, {"dgate", &dg}, {"dup", &du}})
      tc.input(n, *t);
    ops::swiglu_forward(*be, g, u, y);
    ops::swiglu_backward(*be, g, u, dy, dg, du);
    tc.expect("y", y, tol_of(dt));
    tc.expect("dgate", dg, tol_of(dt));
    tc.expect("dup", du, tol_of(dt));
  }
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const Shape s{4, 6};
    Tensor a = tc.randn(s, 1.f, dt), b = tc.randn(s, 1.f, dt), y = Tensor::zeros(s, dt),
           y0 = tc.randn(s, 1.f, dt);
    const float alpha = -0.75f;
    tc.begin(fmt::format("add_{}", keel::dtype_name(dt)), "add",
             fmt::format(R"("alpha": {})", num(alpha)));
    tc.input("a", a);
    tc.input("b", b);
    tc.input("y0", y0);
    ops::add(*be, a, b, y);
    Tensor acc = y0.clone();
    ops::accumulate(*be, a, acc, alpha);
    tc.expect("y", y, tol_of(dt));
    tc.expect("acc", acc, tol_of(dt));

    Tensor yb = tc.randn(s, 1.f, dt), bias = tc.randn({6}, 1.f, dt), dyb = tc.randn(s, 1.f, dt),
           dbias = tc.randn({6});
    tc.begin(fmt::format("bias_{}", keel::dtype_name(dt)), "bias");
    for (auto [n, t] : {std::pair{"y", &yb}, {"bias", &bias}, {"dy", &dyb}, {"dbias", &dbias}})
      tc.input(n, *t);
    ops::bias_add(*be, yb, bias);
    ops::bias_backward(*be, dyb, dbias);
    tc.expect("y", yb, tol_of(dt));
    tc.expect("dbias", dbias, kF32);
  }
  add_cross_entropy(tc, *be, DType::F32);
  add_cross_entropy(tc, *be, DType::BF16);

  // Plain AdamW against torch.optim.AdamW; with a kept share of the second
  // moment's noise (one rank's own step) against the formula written in torch.
  for (float keep : {1.f, 0.5f}) {
    const int64_t n = 37;
    Tensor p = tc.randn({n}), g = tc.randn({n}), m = tc.randn({n}, 0.1f), v = tc.randn({n}, 0.1f);
    for (int64_t i = 0; i < n; ++i) v.data<float>()[i] *= v.data<float>()[i];  // v >= 0
    Tensor pb = Tensor::zeros({n}, DType::BF16);
    keel::backend::AdamWArgs args;
    args.lr = 1e-2f;
    args.beta1 = 0.9f;
    args.beta2 = 0.95f;
    args.eps = 1e-8f;
    args.weight_decay = 0.1f;
    args.grad_scale = 0.5f;
    args.t = 3;
    args.variance_keep = keep;
    tc.begin(keep == 1.f ? "adamw" : "adamw_variance_keep", "adamw",
             fmt::format(R"("lr": {}, "beta1": {}, "beta2": {}, "eps": {}, "weight_decay": {}, )"
                         R"("grad_scale": {}, "t": {}, "variance_keep": {})",
                         num(args.lr), num(args.beta1), num(args.beta2), num(args.eps),
                         num(args.weight_decay), num(args.grad_scale), args.t, num(keep)));
    for (auto [nm, t] : {std::pair{"param", &p}, {"grad", &g}, {"m", &m}, {"v", &v}})
      tc.input(nm, *t);
    ops::adamw_update(*be, args, p, g, m, v, pb);
    tc.expect("param", p, 1e-6);
    tc.expect("m", m, 1e-6);
    tc.expect("v", v, 1e-6);
    tc.expect("param_bf16", pb, kBF16);
    tc.run();
  }
}

// ------------------------------------------------------------------ reductions, casts,
// quantization

// f32 values whose bf16 / f16 rounding is an exact tie, plus subnormal, overflowing
// and ordinary values, to pin down round-to-nearest-even.
std::vector<float> cast_inputs(TorchCheck& tc) {
  std::vector<float> v = tc.randn({64}, 100.f).to_f32_vector();
  auto from_bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  for (uint32_t b : {0x3f80u, 0x3f81u, 0xc2d3u, 0x4101u, 0x0001u, 0x7f7eu})
    v.push_back(from_bits((b << 16) | 0x8000u));  // bf16 ties, even and odd
  for (uint16_t h : {0x3c00u, 0x3c01u, 0xc7ffu, 0x0400u, 0x0001u, 0x7bfeu})
    v.push_back(keel::f16_to_f32(h));  // exact f16 values
  for (uint16_t h : {0x3c00u, 0x3c01u, 0x4a4bu, 0x0400u}) {
    uint32_t u;
    float f = keel::f16_to_f32(h);
    std::memcpy(&u, &f, 4);
    v.push_back(from_bits(u + 0x1000u));  // halfway to the next f16
  }
  for (float f : {3e-6f, -6e-8f, 1e-9f, 65519.f, 65520.f, 1e5f, -3.4e38f, 0.f, -0.f})
    v.push_back(f);
  return v;
}

TEST(RefVsTorch, ReductionsCastsQuantization) {
  auto be = keel::backend::make_ref_backend();
  TorchCheck tc("quant");
  using keel::backend::ReduceOp;
  for (auto [op, name] :
       {std::pair{ReduceOp::Sum, "sum"}, {ReduceOp::Mean, "mean"}, {ReduceOp::Max, "max"}})
    for (DType dt : {DType::F32, DType::BF16}) {
      Tensor x = tc.randn({5, 9}, 1.f, dt), y = Tensor::zeros({5}, DType::F32), dy = tc.randn({5}),
             dx = tc.randn({5, 9}, 1.f, dt);
      tc.begin(fmt::format("reduce_{}_{}", name, keel::dtype_name(dt)), "reduce",
               fmt::format(R"("reduce": "{}")", name));
      tc.input("x", x);
      tc.input("dy", dy);
      tc.input("dx", dx);
      ops::reduce_forward(*be, op, x, y);
      ops::reduce_backward(*be, op, x, dy, dx);
      tc.expect("y", y, kF32);
      tc.expect("dx", dx, tol_of(dt));
    }
  Tensor xs = tc.randn({1000}, 3.f);
  tc.begin("sum_squares", "sum_squares");
  tc.input("x", xs);
  tc.expect("ss", std::vector<double>{ops::sum_squares(*be, xs)}, 1e-12);

  std::vector<float> cv = cast_inputs(tc);
  const Shape cs{int64_t(cv.size())};
  Tensor src = Tensor::from_f32(cv, cs), to_bf16 = Tensor::zeros(cs, DType::BF16),
         to_f16 = Tensor::zeros(cs, DType::F16), bf_f16 = Tensor::zeros(cs, DType::F16),
         f16_bf = Tensor::zeros(cs, DType::BF16);
  ops::cast(*be, src, to_bf16);
  ops::cast(*be, src, to_f16);
  ops::cast(*be, to_bf16, bf_f16);
  ops::cast(*be, to_f16, f16_bf);
  tc.begin("cast", "cast");
  tc.input("src", src);
  tc.expect("bf16", to_bf16, kExact);
  tc.expect("f16", to_f16, kExact);
  tc.expect("bf16_to_f16", bf_f16, kExact);
  tc.expect("f16_to_bf16", f16_bf, kExact);

  // Rows: ordinary, all zero, tiny (f16-subnormal block scales), large.
  const int64_t N = 4, K = 64;
  Tensor w = tc.randn({N, K});
  for (int64_t k = 0; k < K; ++k) {
    w.data<float>()[1 * K + k] = 0.f;
    w.data<float>()[2 * K + k] *= 1e-4f;
    w.data<float>()[3 * K + k] *= 300.f;
  }
  Tensor x = tc.randn({3, K});
  const std::pair<DType, double> qtypes[] = {
      {DType::I8, 3e-2}, {DType::Q8_0, 3e-2}, {DType::Q4_0, 0.25}};
  for (auto [qdt, loose] : qtypes) {
    const std::string qn(keel::dtype_name(qdt));
    Tensor q = Tensor::zeros({N, K}, qdt), deq = Tensor::zeros({N, K}, DType::F32);
    Tensor scale = qdt == DType::I8 ? Tensor::zeros({N}, DType::F32) : Tensor();
    ops::quantize(*be, w, q, scale);
    ops::dequantize(*be, q, scale, deq);
    tc.begin("quantize_" + qn, "quantize", fmt::format(R"("qdt": "{}")", qn));
    tc.input("w", w);
    tc.expect("w_deq", deq, kExact);
    tc.expect("q_bytes", bytes_of(q), kExact);  // the GGUF block layout itself

    // qmatmul against the NumPy rule (tight) and against the float product (loose).
    Tensor wm = tc.randn({5, K}), wq = Tensor::zeros({5, K}, qdt),
           y = Tensor::zeros({3, 5}, DType::F32);
    Tensor ws = qdt == DType::I8 ? Tensor::zeros({5}, DType::F32) : Tensor();
    ops::quantize(*be, wm, wq, ws);
    ops::qmatmul(*be, x, wq, ws, y);
    tc.begin("qmatmul_" + qn, "qmatmul", fmt::format(R"("qdt": "{}")", qn));
    tc.input("x", x);
    tc.input("w", wm);
    tc.expect("y", y, 1e-6);
    tc.expect("y_vs_float", y, loose);
  }
  tc.run();
}

}  // namespace
