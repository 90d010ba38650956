// MLA parameters (Hugging Face DeepseekV2 names) and forward, built from
// linear layers and the nn/functional_mla assembly ops.
#include "model/deepseek_mla.h"

#include "nn/functional_mla.h"

namespace keel::model {

MlaAttention::MlaAttention(nn::ParamStore& ps, const std::string& p, const ModelConfig& c,
                           float std, float out_std)
    : n_head(c.n_head),
      q_lora(c.q_lora_rank),
      kv_lora(c.kv_lora_rank),
      nope(c.qk_nope_head_dim),
      rope(c.qk_rope_head_dim),
      v(c.v_head_dim),
      rope_theta(c.rope_theta) {
  const int64_t C = c.n_embd, D = nope + rope;
  if (q_lora > 0) {
    q_a_proj = nn::Linear(ps, p + ".q_a_proj", C, q_lora, false, std);
    q_a_layernorm = nn::RMSNorm(ps, p + ".q_a_layernorm", q_lora, c.norm_eps);
    q_b_proj = nn::Linear(ps, p + ".q_b_proj", q_lora, n_head * D, false, std);
  } else {
    q_proj = nn::Linear(ps, p + ".q_proj", C, n_head * D, false, std);
  }
  kv_a_proj_with_mqa = nn::Linear(ps, p + ".kv_a_proj_with_mqa", C, kv_lora + rope, false, std);
  kv_a_layernorm = nn::RMSNorm(ps, p + ".kv_a_layernorm", kv_lora, c.norm_eps);
  kv_b_proj = nn::Linear(ps, p + ".kv_b_proj", kv_lora, n_head * (nope + v), false, std);
  o_proj = nn::Linear(ps, p + ".o_proj", n_head * v, C, false, out_std);
}

nn::Value MlaAttention::forward(nn::Tape& tape, const nn::Value& x) const {
  nn::MlaShape s;
  s.B = x.t.dim(0);
  s.T = x.t.dim(1);
  s.NH = n_head;
  s.nope = nope;
  s.rope = rope;
  s.v = v;
  s.rope_theta = rope_theta;
  const nn::Value q =
      q_lora > 0 ? q_b_proj.forward(tape, q_a_layernorm.forward(tape, q_a_proj.forward(tape, x)))
                 : q_proj.forward(tape, x);
  const nn::Value ckv = kv_a_proj_with_mqa.forward(tape, x);
  const nn::Value latent = kv_a_layernorm.forward(tape, nn::slice_cols(tape, ckv, 0, kv_lora));
  const nn::Value kpe = nn::slice_cols(tape, ckv, kv_lora, kv_lora + rope);
  const nn::Value kv = kv_b_proj.forward(tape, latent);
  const nn::Value qkv = nn::mla_qkv(tape, q, kv, kpe, s);
  nn::AttentionShape as;
  as.B = s.B;
  as.T = s.T;
  as.NH = n_head;
  as.NKV = n_head;
  as.HS = s.D();  // so the kernel's 1/sqrt(HS) is DeepSeek's (nope + rope)^-1/2
  const nn::Value o = nn::causal_attention(tape, qkv, as);
  return o_proj.forward(tape, nn::mla_heads_out(tape, o, s));
}

}  // namespace keel::model
