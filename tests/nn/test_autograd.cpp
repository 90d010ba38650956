// Finite-difference checks of every differentiable op's backward through the
// tape (f32, ref backend), and of recomputed segments: the analytic gradient of
// L = sum(w_out * y) must match (L(x + e) - L(x - e)) / 2e for inputs and
// parameters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "core/rng.h"
#include "nn/functional.h"
#include "nn/param_store.h"
#include "nn/tape.h"

namespace keel::nn {
namespace {

using Fn = std::function<Value(Tape&, std::vector<Value>&)>;

struct GradCheck {
  std::vector<Shape> inputs;
  std::vector<Parameter*> params;
  Fn fn;
};

class Harness {
 public:
  explicit Harness(const char* backend = "ref")
      : be_(backend::make_backend(backend)), tape_(*be_, DType::F32) {}

  // L = sum(w_out * fn(inputs)), in double.
  double loss(const GradCheck& c, const std::vector<std::vector<float>>& xs) {
    tape_.begin(false);
    std::vector<Value> in = make_inputs(c, xs);
    Value y = c.fn(tape_, in);
    const float* yp = y.t.data<float>();
    ensure_wout(y.t.numel());
    double l = 0;
    for (int64_t i = 0; i < y.t.numel(); ++i) l += double(wout_[size_t(i)]) * double(yp[i]);
    return l;
  }

  void run(const GradCheck& c, double tol = 2e-3) {
    Rng rng(42, 1);
    std::vector<std::vector<float>> xs;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      xs.emplace_back(size_t(c.inputs[i].numel()));
      rng.fill_normal(xs.back().data(), int64_t(xs.back().size()), 1.f, i * 100000);
    }
    // Analytic.
    for (Parameter* p : c.params) p->grad.fill_zero();
    tape_.begin(true);
    std::vector<Value> in = make_inputs(c, xs);
    Value y = c.fn(tape_, in);
    ensure_wout(y.t.numel());
    Tensor seed = Tensor::from_f32(std::vector<float>(wout_.begin(), wout_.begin() + y.t.numel()),
                                   y.t.shape());
    tape_.alias_grad(y.id, seed);
    tape_.backward();
    std::vector<std::vector<float>> dx;
    for (const Value& v : in)
      dx.push_back(tape_.has_grad(v.id) ? tape_.grad(v.id).to_f32_vector()
                                        : std::vector<float>(size_t(v.t.numel()), 0.f));
    std::vector<std::vector<float>> dp;
    for (Parameter* p : c.params) dp.push_back(p->grad.to_f32_vector());

    const float eps = 1e-2f;
    auto compare = [&](const char* what, size_t k, const std::vector<float>& ana, float* slot) {
      double scale = 1e-3;
      for (float g : ana) scale = std::max(scale, double(std::abs(g)));
      const size_t n = ana.size(), stride = std::max<size_t>(1, n / 24);
      for (size_t j = 0; j < n; j += stride) {
        const float keep = slot[j];
        slot[j] = keep + eps;
        const double lp = loss(c, xs);
        slot[j] = keep - eps;
        const double lm = loss(c, xs);
        slot[j] = keep;
        const double num = (lp - lm) / (2.0 * double(eps));
        EXPECT_NEAR(double(ana[j]), num, tol * scale) << what << " " << k << " element " << j;
      }
    };
    for (size_t k = 0; k < xs.size(); ++k) compare("input", k, dx[k], xs[k].data());
    for (size_t k = 0; k < c.params.size(); ++k)
      compare(c.params[k]->name.c_str(), k, dp[k], c.params[k]->value.data<float>());
  }

  backend::Backend& be() { return *be_; }
  Tape& tape() { return tape_; }

 private:
  std::vector<Value> make_inputs(const GradCheck& c, const std::vector<std::vector<float>>& xs) {
    std::vector<Value> in;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      Value v = tape_.make(c.inputs[i], DType::F32);
      std::copy(xs[i].begin(), xs[i].end(), v.t.data<float>());
      in.push_back(v);
    }
    return in;
  }
  void ensure_wout(int64_t n) {
    if (int64_t(wout_.size()) >= n) return;
    wout_.resize(size_t(n));
    Rng(9, 9).fill_normal(wout_.data(), n, 1.f);
  }

  std::unique_ptr<backend::Backend> be_;
  Tape tape_;
  std::vector<float> wout_;
};

Parameter* param(ParamStore& ps, const std::string& name, const Shape& s, float std = 0.5f) {
  return ps.add(name, s, true, ParamInit::normal(std));
}

TEST(Autograd, LinearWithBias) {
  Harness h;
  ParamStore ps(DType::F32, h.be());
  Parameter* w = param(ps, "w", Shape{4, 5});
  Parameter* b = param(ps, "b", Shape{4});
  ps.init(1);
  h.run({{Shape{2, 3, 5}}, {w, b}, [&](Tape& t, std::vector<Value>& x) {
           return linear(t, x[0], *w, b);
         }});
}

TEST(Autograd, LinearIntoColumnsOfOneBuffer) {
  Harness h;
  ParamStore ps(DType::F32, h.be());
  Parameter* w1 = param(ps, "w1", Shape{3, 5});
  Parameter* w2 = param(ps, "w2", Shape{4, 5});
  ps.init(2);
  h.run({{Shape{6, 5}}, {w1, w2}, [&](Tape& t, std::vector<Value>& x) {
           Value y = t.make(Shape{6, 7});
           linear_into(t, x[0], *w2, y, 3);
           linear_into(t, x[0], *w1, y, 0);
           return gelu(t, y);  // a nonlinearity so dy varies by column
         }});
}

TEST(Autograd, LayerNormAndRmsNorm) {
  Harness h;
  ParamStore ps(DType::F32, h.be());
  Parameter* w = param(ps, "w", Shape{8});
  Parameter* b = param(ps, "b", Shape{8});
  Parameter* g = param(ps, "g", Shape{8});
  ps.init(3);
  h.run({{Shape{5, 8}}, {w, b}, [&](Tape& t, std::vector<Value>& x) {
           return layernorm(t, x[0], *w, b, 1e-5f);
         }});
  h.run({{Shape{5, 8}}, {g}, [&](Tape& t, std::vector<Value>& x) {
           return rmsnorm(t, x[0], *g, 1e-5f);
         }});
}

TEST(Autograd, ActivationsAndAdd) {
  Harness h;
  h.run({{Shape{4, 6}}, {}, [&](Tape& t, std::vector<Value>& x) { return gelu(t, x[0]); }});
  h.run({{Shape{4, 6}, Shape{4, 6}}, {}, [&](Tape& t, std::vector<Value>& x) {
           return swiglu(t, x[0], x[1]);
         }});
  // x used twice: the add's gradient aliasing must still sum both paths.
  h.run({{Shape{4, 6}, Shape{4, 6}}, {}, [&](Tape& t, std::vector<Value>& x) {
           Value s = add(t, x[0], x[1]);
           return add(t, gelu(t, s), add(t, s, x[0]));
         }});
}

TEST(Autograd, Embedding) {
  Harness h;
  ParamStore ps(DType::F32, h.be());
  Parameter* table = param(ps, "table", Shape{7, 4});
  ps.init(4);
  const Tensor ids = Tensor::from_i32({3, 1, 3, 6, 0, 3}, Shape{2, 3});
  h.run({{Shape{2, 3, 4}}, {table}, [&](Tape& t, std::vector<Value>& x) {
           return swiglu(t, embedding(t, ids, *table), x[0]);
         }});
}

AttentionShape attn_shape(int64_t NH, int64_t NKV, bool rope) {
  AttentionShape s;
  s.B = 2;
  s.T = 5;
  s.NH = NH;
  s.NKV = NKV;
  s.HS = 4;
  s.rope = rope;
  s.rope_theta = 100.f;
  return s;
}

TEST(Autograd, AttentionFusedQkv) {
  Harness h;
  const AttentionShape s = attn_shape(2, 2, false);
  h.run({{Shape{2, 5, 6 * 4}}, {}, [&](Tape& t, std::vector<Value>& x) {
           return causal_attention(t, x[0], s);
         }});
}

TEST(Autograd, AttentionGroupedQueryWithRope) {
  Harness h;
  const AttentionShape s = attn_shape(4, 2, true);
  h.run({{Shape{2, 5, 8 * 4}}, {}, [&](Tape& t, std::vector<Value>& x) {
           return causal_attention(t, x[0], s);
         }});
}

TEST(Autograd, CrossEntropySeedsBackward) {
  Harness h;
  Tape& tape = h.tape();
  const Tensor targets = Tensor::from_i32({2, -1, 0, 5}, Shape{4});
  std::vector<float> x(24);
  Rng(5, 5).fill_normal(x.data(), 24, 1.f);
  auto run = [&](bool record, float scale) {
    tape.begin(record);
    Value v = tape.make(Shape{4, 6}, DType::F32);
    std::copy(x.begin(), x.end(), v.t.data<float>());
    const float l = cross_entropy(tape, v, targets, scale);
    if (record) tape.backward();
    return std::make_pair(l, v);
  };
  auto [l0, v] = run(true, 3.f);
  const std::vector<float> g = tape.grad(v.id).to_f32_vector();
  for (int j = 0; j < 6; ++j) EXPECT_EQ(g[size_t(6 + j)], 0.f) << "ignored row has no gradient";
  const float eps = 1e-2f;
  for (size_t j = 0; j < x.size(); ++j) {
    const float keep = x[j];
    x[j] = keep + eps;
    const double lp = run(false, 1.f).first;
    x[j] = keep - eps;
    const double lm = run(false, 1.f).first;
    x[j] = keep;
    EXPECT_NEAR(g[j], 3.0 * (lp - lm) / (2.0 * eps), 2e-3) << "element " << j;
  }
  EXPECT_GT(l0, 0.f);
}

// A block made of several ops, run plainly and as a recomputed segment.
struct Block {
  Parameter *w1, *b1, *w2, *lw, *lb;
  Value operator()(Tape& t, const Value& x) const {
    Value h = layernorm(t, x, *lw, lb, 1e-5f);
    return add(t, x, linear(t, gelu(t, linear(t, h, *w1, b1)), *w2, nullptr));
  }
};

Value block_segment(Tape& t, void* ctx, int64_t, const Value& x) {
  return (*static_cast<Block*>(ctx))(t, x);
}

TEST(Autograd, RecomputedSegmentMatchesPlainAndFiniteDifferences) {
  Harness h;
  ParamStore ps(DType::F32, h.be());
  Block blk{param(ps, "w1", Shape{12, 6}), param(ps, "b1", Shape{12}),
            param(ps, "w2", Shape{6, 12}), param(ps, "lw", Shape{6}), param(ps, "lb", Shape{6})};
  ps.init(6);
  std::vector<std::vector<float>> grads[2];
  for (int recompute = 0; recompute < 2; ++recompute) {
    GradCheck c{{Shape{3, 6}},
                {blk.w1, blk.b1, blk.w2, blk.lw, blk.lb},
                [&](Tape& t, std::vector<Value>& x) {
                  Value y = x[0];
                  for (int l = 0; l < 2; ++l)
                    y = recompute ? t.checkpoint(&block_segment, &blk, l, y) : blk(t, y);
                  return y;
                }};
    h.run(c);
    for (Parameter* p : c.params) grads[recompute].push_back(p->grad.to_f32_vector());
  }
  for (size_t k = 0; k < grads[0].size(); ++k)
    EXPECT_EQ(grads[0][k], grads[1][k]) << "recomputed gradients differ for parameter " << k;
}

}  // namespace
}  // namespace keel::nn
