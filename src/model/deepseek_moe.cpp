// DeepSeekMoE forward (routing, dispatch to experts, grouped expert SwiGLU,
// weighted combine, shared experts), balance statistics and bias update.
#include "model/deepseek_moe.h"

#include <algorithm>
#include <cmath>

#include "nn/functional_moe.h"

namespace keel::model {

MoeFeedForward::MoeFeedForward(nn::ParamStore& ps, const std::string& p, const ModelConfig& c,
                               float std, float out_std)
    : E_(c.n_routed_experts),
      K_(c.top_k),
      capacity_factor_(c.capacity_factor),
      bias_rate_(c.bias_update_rate),
      aux_alpha_(c.aux_loss_alpha) {
  route_.E = E_;
  route_.K = K_;
  route_.gating = c.gating == "sigmoid" ? backend::MoeGating::Sigmoid : backend::MoeGating::Softmax;
  route_.norm_topk = c.norm_topk_prob;
  route_.scale = c.routed_scaling;
  const int64_t C = c.n_embd, F = c.moe_ffn_hidden;
  gate_ = nn::Linear(ps, p + ".gate", C, E_, false, std);
  w_gate_ =
      ps.add(p + ".experts.gate_proj.weight", Shape{E_, F, C}, true, nn::ParamInit::normal(std));
  w_up_ = ps.add(p + ".experts.up_proj.weight", Shape{E_, F, C}, true, nn::ParamInit::normal(std));
  w_down_ = ps.add(p + ".experts.down_proj.weight", Shape{E_, C, F}, true,
                   nn::ParamInit::normal(out_std));
  if (c.n_shared_experts > 0) {
    has_shared_ = true;
    shared_ = nn::SwiGLUMLP(ps, p + ".shared_experts", C, F * c.n_shared_experts, std, out_std);
  }
  bias_ = Tensor::zeros(Shape{E_}, DType::F32);
  load_ = Tensor::zeros(Shape{E_}, DType::F32);
}

nn::Value MoeFeedForward::forward(nn::Tape& tape, const nn::Value& x, bool train, float grad_scale,
                                  double* aux_loss) {
  const int64_t B = x.t.dim(0), T = x.t.dim(1), N = B * T;
  backend::MoeRouteArgs a = route_;
  a.N = N;
  const nn::Value logits = nn::linear_out(tape, x, *gate_.weight, nullptr, DType::F32);
  // The balance loss's gradient depends on the routing below; its buffer is
  // handed to the routing node now and filled once the routing is known.
  const bool aux = train && aux_alpha_ > 0.f;
  Tensor dscores = aux ? tape.scratch_zeros(Shape{N, E_}, DType::F32) : Tensor();
  nn::MoeDispatch d;
  const nn::Value w = nn::moe_route(tape, logits, bias_, a, dscores, d);
  const int64_t capacity =
      capacity_factor_ > 0.f
          ? int64_t(std::ceil(double(capacity_factor_) * double(N * K_) / double(E_)))
          : 0;
  nn::moe_plan(tape, E_, capacity, d);
  last_idx_ = d.idx;
  if (aux) {
    double l = 0;
    Tensor g = aux_gradient(tape, d.idx, d.scores, B, T, grad_scale, &l);
    std::copy_n(g.data<float>(), N * E_, dscores.data<float>());
    if (!counted_ && aux_loss) *aux_loss += l;
  }
  if (train && !counted_) {
    count(d.idx, d.scores, d.dropped);
    counted_ = true;
  }
  const nn::Value xp = nn::moe_permute(tape, x, d);
  const nn::Value h = nn::swiglu(tape, nn::grouped_linear(tape, xp, *w_gate_, d),
                                 nn::grouped_linear(tape, xp, *w_up_, d));
  const nn::Value yp = nn::grouped_linear(tape, h, *w_down_, d);
  nn::Value y = nn::moe_unpermute(tape, yp, w, d, x.t.shape());
  if (has_shared_) y = nn::add(tape, y, shared_.forward(tape, x));
  return y;
}

Tensor MoeFeedForward::aux_gradient(nn::Tape& tape, const Tensor& idx, const Tensor& scores,
                                    int64_t B, int64_t T, float grad_scale, double* loss) const {
  // Per sequence: f_e = E / (K T) * (times e was chosen), P_e = mean_t s'_te
  // with s' the scores normalised per token; L = alpha * sum_e f_e P_e, averaged
  // over the B sequences. f is a count (no gradient); dL/ds'_te = alpha f_e / (T B).
  Tensor g = tape.scratch_zeros(Shape{B * T, E_}, DType::F32);
  const int32_t* id = idx.data<int32_t>();
  const float* s = scores.data<float>();
  float* gp = g.data<float>();
  const size_t ne = static_cast<size_t>(E_);
  std::vector<double> f(ne), P(ne), gs(ne);
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      for (int64_t k = 0; k < K_; ++k) f[size_t(id[t * K_ + k])] += double(E_) / double(K_ * T);
      double z = 0;
      for (int64_t e = 0; e < E_; ++e) z += double(s[t * E_ + e]);
      for (int64_t e = 0; e < E_; ++e) P[size_t(e)] += double(s[t * E_ + e]) / z / double(T);
    }
    for (int64_t e = 0; e < E_; ++e) total += double(aux_alpha_) * f[size_t(e)] * P[size_t(e)];
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      double z = 0, dot = 0;
      for (int64_t e = 0; e < E_; ++e) z += double(s[t * E_ + e]);
      for (int64_t e = 0; e < E_; ++e) {
        gs[size_t(e)] = double(aux_alpha_) * f[size_t(e)] / double(T * B);
        dot += gs[size_t(e)] * double(s[t * E_ + e]) / z;
      }
      for (int64_t e = 0; e < E_; ++e)
        gp[t * E_ + e] = float(double(grad_scale) * (gs[size_t(e)] - dot) / z);
    }
  }
  *loss = total / double(B);
  return g;
}

void MoeFeedForward::count(const Tensor& idx, const Tensor& scores, int64_t dropped) {
  const int64_t N = idx.dim(0);
  const int32_t* id = idx.data<int32_t>();
  float* load = load_.data<float>();
  for (int64_t i = 0; i < N * K_; ++i) load[id[i]] += 1.f;  // exact integers in f32
  const float* s = scores.data<float>();
  for (int64_t n = 0; n < N; ++n) {
    double z = 0, h = 0;
    for (int64_t e = 0; e < E_; ++e) z += double(s[n * E_ + e]);
    for (int64_t e = 0; e < E_; ++e) {
      const double p = double(s[n * E_ + e]) / z;
      if (p > 0) h -= p * std::log(p);
    }
    entropy_sum_ += h;
  }
  tokens_ += N;
  dropped_ += dropped;
}

double MoeFeedForward::load_max_over_mean() const {
  const float* l = load_.data<float>();
  double sum = 0, mx = 0;
  for (int64_t e = 0; e < E_; ++e) {
    sum += double(l[e]);
    mx = std::max(mx, double(l[e]));
  }
  return sum > 0 ? mx / (sum / double(E_)) : 0.0;
}

void MoeFeedForward::end_step(bool applied) {
  float* l = load_.data<float>();
  if (applied && bias_rate_ > 0.f) {
    double sum = 0;
    for (int64_t e = 0; e < E_; ++e) sum += double(l[e]);
    const double mean = sum / double(E_);
    float* b = bias_.data<float>();
    for (int64_t e = 0; e < E_; ++e) {
      const double diff = mean - double(l[e]);
      b[e] += diff > 0 ? bias_rate_ : diff < 0 ? -bias_rate_ : 0.f;
    }
  }
  std::fill_n(l, E_, 0.f);
  entropy_sum_ = 0;
  tokens_ = 0;
  dropped_ = 0;
}

}  // namespace keel::model
