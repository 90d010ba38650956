// DeepSeekMoE forward (routing, dispatch to experts, grouped expert SwiGLU,
// weighted combine, shared experts), balance statistics and bias update.
#include "model/deepseek_moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "nn/functional_moe.h"

namespace keel::model {

MoeFeedForward::MoeFeedForward(nn::ParamStore& ps, const std::string& p, const ModelConfig& c,
                               float std, float out_std)
    : E_(c.n_routed_experts),
      K_(c.top_k),
      capacity_factor_(c.capacity_factor),
      bias_rate_(c.bias_update_rate),
      aux_alpha_(c.aux_loss_alpha),
      noise_(c.router_noise) {
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
  load_ = Tensor::zeros(Shape{4, E_}, DType::F32);
  integral_ = Tensor::zeros(Shape{E_}, DType::F32);
}

nn::Value MoeFeedForward::forward(nn::Tape& tape, const nn::Value& x, bool train, float grad_scale,
                                  double* aux_loss) {
  const int64_t B = x.t.dim(0), T = x.t.dim(1), N = B * T;
  backend::MoeRouteArgs a = route_;
  a.N = N;
  if (train) a.noise = noise_, a.noise_seed = noise_seed_;
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
    // The choice without the jitter is what inference makes and what the bias balances.
    Tensor plain_idx = d.idx;
    if (a.noise > 0.f) {
      backend::MoeRouteArgs plain = a;
      plain.noise = 0.f;
      plain_idx = nn::moe_route_choice(tape, logits, bias_, plain);
    }
    count(d.idx, plain_idx, d.scores, d.dropped);
    counted_ = true;
  }
  if (!train) {
    std::vector<int64_t> load(static_cast<size_t>(E_), 0);
    const int32_t* id = d.idx.data<int32_t>();
    for (int64_t i = 0; i < N * K_; ++i) ++load[size_t(id[i])];
    const int64_t mx = *std::max_element(load.begin(), load.end());
    eval_load_sum_ += double(mx) * double(E_) / double(N * K_);
    ++eval_forwards_;
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

void MoeFeedForward::count(const Tensor& idx, const Tensor& plain_idx, const Tensor& scores,
                           int64_t dropped) {
  const int64_t N = idx.dim(0);
  const int32_t* id = idx.data<int32_t>();
  float* load = load_.data<float>();
  for (int64_t i = 0; i < N * K_; ++i) load[id[i]] += 1.f;  // exact integers in f32
  const float* s = scores.data<float>();
  const int32_t* plain_id = plain_idx.data<int32_t>();
  for (int64_t i = 0; i < N * K_; ++i) load[3 * E_ + plain_id[i]] += 1.f;
  for (int64_t e = 0; e < E_; ++e) {  // per-expert score sums for the spread (f64 per micro-batch)
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      const double v = double(s[n * E_ + e]);
      s1 += v;
      s2 += v * v;
    }
    load[E_ + e] = float(double(load[E_ + e]) + s1);
    load[2 * E_ + e] = float(double(load[2 * E_ + e]) + s2);
  }
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

double MoeFeedForward::take_eval_load_max_over_mean() {
  const double r = eval_forwards_ > 0 ? eval_load_sum_ / double(eval_forwards_) : 0.0;
  eval_load_sum_ = 0;
  eval_forwards_ = 0;
  return r;
}

void MoeFeedForward::end_step(bool applied) {
  float* l = load_.data<float>();
  if (applied && bias_rate_ > 0.f) {
    const float* plain = l + 3 * E_;  // the load without the jitter
    double sum = 0;
    for (int64_t e = 0; e < E_; ++e) sum += double(plain[e]);
    const double mean = sum / double(E_), tokens = sum / double(K_);
    // bias_e = c_e - (m_e - mean over experts of m), m_e the mean score of
    // expert e over the step's tokens, c_e += rate * sd_e * clamp((mean load -
    // load_e) / mean load, -1, 1), sd_e the spread of those scores.
    // DeepSeek-V3's fixed 1e-3 sign step on the bias fails at this size: the
    // normalised hidden states feeding the router gain a component shared by
    // all tokens that moves fast early in training, so every token's score
    // for an expert moves together, ~0.01 per step, while the per-token
    // spread that top-k should pick on shrinks to ~0.007 (measured on
    // deepseek-tiny; top-2 of 8 collapsed to max/mean ~4, all tokens on two
    // experts, within 15 steps; a larger fixed step overshoots once balanced,
    // max/mean stayed ~1.6). Subtracting m_e cancels that shared drift with a
    // one-step lag, and it needs no feedback, so it cannot oscillate. The
    // integral term c_e removes what is left, the lag included, and is taken
    // in units of sd_e so its effect on the selection (moving a key by x sd
    // moves about 0.3 x of the tokens near the threshold) does not depend on
    // how spread the scores are: one rate settles both early and late.
    float* b = bias_.data<float>();
    float* c = integral_.data<float>();
    std::vector<double> m(static_cast<size_t>(E_), 0.0);
    double mm = 0;
    if (tokens > 0) {
      for (int64_t e = 0; e < E_; ++e) {
        m[size_t(e)] = double(l[E_ + e]) / tokens;
        mm += m[size_t(e)] / double(E_);
      }
      for (int64_t e = 0; e < E_; ++e) {
        const double m2 = double(l[2 * E_ + e]) / tokens;
        const double sd = std::sqrt(std::max(0.0, m2 - m[size_t(e)] * m[size_t(e)]));
        const double gap = std::clamp((mean - double(plain[e])) / mean, -1.0, 1.0);
        c[e] = float(double(c[e]) + double(bias_rate_) * sd * gap);
        b[e] = float(double(c[e]) - (m[size_t(e)] - mm));
      }
    }
  }
  std::fill_n(l, 4 * E_, 0.f);
  entropy_sum_ = 0;
  tokens_ = 0;
  dropped_ = 0;
}

}  // namespace keel::model
