// DeepSeekMoE forward (routing, dispatch to experts, grouped expert SwiGLU,
// weighted combine, shared experts), balance statistics and bias update.
#include "model/deepseek_moe.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/device_tensor.h"
#include "nn/functional_moe.h"

namespace keel::model {

MoeFeedForward::MoeFeedForward(nn::ParamStore& ps, const std::string& p, const ModelConfig& c,
                               float std, float out_std, double* aux_loss)
    : be_(&ps.backend()),
      E_(c.n_routed_experts),
      K_(c.top_k),
      capacity_factor_(c.capacity_factor),
      bias_rate_(c.bias_update_rate),
      aux_alpha_(c.aux_loss_alpha),
      noise_(c.router_noise),
      aux_loss_(aux_loss) {
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
  bias_ = backend::empty_on(*be_, Shape{E_}, DType::F32, p + ".gate.e_score_correction_bias");
  load_ = backend::empty_on(*be_, Shape{4, E_}, DType::F32, p + ".expert_load");
  integral_ = Tensor::zeros(Shape{E_}, DType::F32);
  stats_ = backend::empty_on(*be_, Shape{4}, DType::I32, p + " routing statistics");
  aux_discard_ = backend::empty_on(*be_, Shape{2}, DType::I32, p + " recomputed balance loss");
}

nn::Value MoeFeedForward::forward(nn::Tape& tape, const nn::Value& x, bool train,
                                  float grad_scale) {
  const int64_t B = x.t.dim(0), T = x.t.dim(1), N = B * T;
  backend::MoeRouteArgs a = route_;
  a.N = N;
  if (train) a.noise = noise_, a.noise_seed = noise_seed_;
  const nn::Value logits = nn::linear_out(tape, x, *gate_.weight, nullptr, DType::F32);
  // The balance loss's gradient depends on the routing below; its buffer is
  // handed to the routing node now and filled once the routing is known.
  const bool aux = train && aux_alpha_ > 0.f;
  Tensor dscores = aux ? tape.scratch(Shape{N, E_}, DType::F32) : Tensor();
  nn::MoeDispatch d;
  const nn::Value w = nn::moe_route(tape, logits, bias_, a, dscores, d);
  const int64_t capacity =
      capacity_factor_ > 0.f
          ? int64_t(std::ceil(double(capacity_factor_) * double(N * K_) / double(E_)))
          : 0;
  nn::moe_plan(tape, E_, capacity, d);
  last_idx_ = d.idx;
  if (aux) {
    double* into = !counted_ && aux_loss_ ? aux_loss_ : static_cast<double*>(aux_discard_.raw());
    be_->moe_aux_loss(a, T, aux_alpha_, grad_scale, d.scores.data<float>(), d.idx.data<int32_t>(),
                      dscores.data<float>(), into);
  }
  if (train && !counted_) {
    // The choice without the jitter is what inference makes and what the bias balances.
    Tensor plain_idx = d.idx;
    if (a.noise > 0.f) {
      backend::MoeRouteArgs plain = a;
      plain.noise = 0.f;
      plain_idx = nn::moe_route_choice(tape, logits, bias_, plain);
    }
    be_->moe_route_stats(a, d.scores.data<float>(), d.idx.data<int32_t>(),
                         plain_idx.data<int32_t>(), d.pos.data<int32_t>(), load_.data<float>(),
                         static_cast<double*>(stats_.raw()));
    tokens_ += N;
    counted_ = true;
    host_fresh_ = false;
  }
  if (!train) {
    // Evaluation only (not a training step): the choice read back here.
    const Tensor idx = backend::to_host(*be_, d.idx);
    std::vector<int64_t> load(static_cast<size_t>(E_), 0);
    const int32_t* id = idx.data<int32_t>();
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

const MoeFeedForward::HostStats& MoeFeedForward::host_stats() const {
  if (!host_fresh_) {  // load and statistics in one read
    const std::vector<Tensor> h = backend::to_host_all(*be_, {&load_, &stats_});
    host_.load.assign(h[0].data<float>(), h[0].data<float>() + 4 * E_);
    const double* st = static_cast<const double*>(h[1].raw());
    host_.entropy_sum = st[0];
    host_.dropped = st[1];
    host_fresh_ = true;
  }
  return host_;
}

double MoeFeedForward::load_max_over_mean() const {
  const float* l = host_stats().load.data();
  double sum = 0, mx = 0;
  for (int64_t e = 0; e < E_; ++e) {
    sum += double(l[e]);
    mx = std::max(mx, double(l[e]));
  }
  return sum > 0 ? mx / (sum / double(E_)) : 0.0;
}

double MoeFeedForward::mean_entropy() const {
  return tokens_ > 0 ? host_stats().entropy_sum / double(tokens_) : 0.0;
}

int64_t MoeFeedForward::dropped() const {
  return int64_t(host_stats().dropped);
}

double MoeFeedForward::take_eval_load_max_over_mean() {
  const double r = eval_forwards_ > 0 ? eval_load_sum_ / double(eval_forwards_) : 0.0;
  eval_load_sum_ = 0;
  eval_forwards_ = 0;
  return r;
}

void MoeFeedForward::end_step(bool applied) {
  if (applied && bias_rate_ > 0.f) {
    const float* l = host_stats().load.data();
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
    std::vector<float> b(static_cast<size_t>(E_));
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
        b[size_t(e)] = float(double(c[e]) - (m[size_t(e)] - mm));
      }
      be_->upload(bias_.raw(), b.data(), b.size() * sizeof(float));
    }
  }
  backend::zero(*be_, load_);
  backend::zero(*be_, stats_);
  tokens_ = 0;
  host_fresh_ = false;
}

}  // namespace keel::model
