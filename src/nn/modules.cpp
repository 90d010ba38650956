// Module constructors (parameter names, shapes, init) and attention's forward.
#include "nn/modules.h"

#include "core/error.h"

namespace keel::nn {

Embedding::Embedding(ParamStore& ps, const std::string& name, int64_t V, int64_t C, float std)
    : weight(ps.add(name + ".weight", Shape{V, C}, true, ParamInit::normal(std))) {}

Linear::Linear(ParamStore& ps, const std::string& name, int64_t in, int64_t out, bool has_bias,
               float std)
    : weight(ps.add(name + ".weight", Shape{out, in}, true, ParamInit::normal(std))),
      bias(has_bias ? ps.add(name + ".bias", Shape{out}, false, ParamInit::zeros()) : nullptr) {}

LayerNorm::LayerNorm(ParamStore& ps, const std::string& name, int64_t C, float e)
    : weight(ps.add(name + ".weight", Shape{C}, false, ParamInit::ones())),
      bias(ps.add(name + ".bias", Shape{C}, false, ParamInit::zeros())),
      eps(e) {}

RMSNorm::RMSNorm(ParamStore& ps, const std::string& name, int64_t C, float e)
    : weight(ps.add(name + ".weight", Shape{C}, false, ParamInit::ones())), eps(e) {}

CausalSelfAttention::CausalSelfAttention(ParamStore& ps, const std::string& prefix,
                                         const AttentionConfig& c, const std::string& qkv_name,
                                         const std::string& out_name)
    : cfg(c) {
  if (c.n_head <= 0 || c.n_kv_head <= 0 || c.n_embd % c.n_head != 0 || c.n_head % c.n_kv_head != 0)
    fail<ConfigError>("attention {}: n_embd={} n_head={} n_kv_head={} do not divide", prefix,
                      c.n_embd, c.n_head, c.n_kv_head);
  // Separate projections write into one buffer, which a per-projection bias cannot follow.
  if (!c.fused_qkv && c.bias)
    fail<ConfigError>("attention {}: separate q/k/v projections take no bias", prefix);
  const int64_t C = c.n_embd, HS = C / c.n_head, kv = c.n_kv_head * HS;
  if (c.fused_qkv) {
    qkv = Linear(ps, prefix + "." + qkv_name, C, C + 2 * kv, c.bias, c.std);
  } else {
    q = Linear(ps, prefix + ".q_proj", C, C, c.bias, c.std);
    k = Linear(ps, prefix + ".k_proj", C, kv, c.bias, c.std);
    v = Linear(ps, prefix + ".v_proj", C, kv, c.bias, c.std);
  }
  out = Linear(ps, prefix + "." + out_name, C, C, c.bias, c.out_std);
}

Value CausalSelfAttention::forward(Tape& tape, const Value& x) const {
  const int64_t B = x.t.dim(0), T = x.t.dim(1), HS = head_size();
  AttentionShape s;
  s.B = B;
  s.T = T;
  s.NH = cfg.n_head;
  s.NKV = cfg.n_kv_head;
  s.HS = HS;
  s.rope = cfg.rope;
  s.rope_theta = cfg.rope_theta;
  Value qkvv;
  if (cfg.fused_qkv) {
    qkvv = qkv.forward(tape, x);
  } else {
    const int64_t kv = cfg.n_kv_head * HS;
    qkvv = tape.make(Shape{B, T, cfg.n_embd + 2 * kv});
    linear_into(tape, x, *q.weight, qkvv, 0);
    linear_into(tape, x, *k.weight, qkvv, cfg.n_embd);
    linear_into(tape, x, *v.weight, qkvv, cfg.n_embd + kv);
  }
  return out.forward(tape, causal_attention(tape, qkvv, s));
}

MLP::MLP(ParamStore& ps, const std::string& fc_name, const std::string& proj_name, int64_t C,
         int64_t hidden, float std, float out_std)
    : fc(ps, fc_name, C, hidden, true, std), proj(ps, proj_name, hidden, C, true, out_std) {}

SwiGLUMLP::SwiGLUMLP(ParamStore& ps, const std::string& prefix, int64_t C, int64_t hidden,
                     float std, float out_std)
    : gate(ps, prefix + ".gate_proj", C, hidden, false, std),
      up(ps, prefix + ".up_proj", C, hidden, false, std),
      down(ps, prefix + ".down_proj", hidden, C, false, out_std) {}

}  // namespace keel::nn
