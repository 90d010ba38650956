// Modules: named groups of parameters with a forward made of nn/functional
// ops. An architecture composes them; backward comes from the tape.
#pragma once
#include <cstdint>
#include <string>

#include "nn/functional.h"
#include "nn/param_store.h"

namespace keel::nn {

struct Embedding {
  Parameter* weight = nullptr;  // (V, C)
  Embedding() = default;
  Embedding(ParamStore& ps, const std::string& name, int64_t V, int64_t C, float std);
  Value forward(Tape& tape, const Tensor& ids) const { return embedding(tape, ids, *weight); }
};

// y = x W^T + b with W (out, in), like torch.nn.Linear.
struct Linear {
  Parameter* weight = nullptr;
  Parameter* bias = nullptr;  // null when built without bias
  Linear() = default;
  Linear(ParamStore& ps, const std::string& name, int64_t in, int64_t out, bool bias, float std);
  Value forward(Tape& tape, const Value& x) const { return linear(tape, x, *weight, bias); }
};

struct LayerNorm {
  Parameter* weight = nullptr;
  Parameter* bias = nullptr;
  float eps = 1e-5f;
  LayerNorm() = default;
  LayerNorm(ParamStore& ps, const std::string& name, int64_t C, float eps);
  Value forward(Tape& tape, const Value& x) const { return layernorm(tape, x, *weight, bias, eps); }
};

struct RMSNorm {
  Parameter* weight = nullptr;
  float eps = 1e-5f;
  RMSNorm() = default;
  RMSNorm(ParamStore& ps, const std::string& name, int64_t C, float eps);
  Value forward(Tape& tape, const Value& x) const { return rmsnorm(tape, x, *weight, eps); }
};

struct AttentionConfig {
  int64_t n_embd = 0, n_head = 0, n_kv_head = 0;
  bool bias = false;
  bool rope = false;
  float rope_theta = 10000.f;
  bool fused_qkv = true;  // one "c_attn" weight; else q_proj, k_proj, v_proj
  float std = 0.02f, out_std = 0.02f;
};

// Multi-head / grouped-query causal self-attention. The projections write one
// (B, T, (NH + 2*NKV) * HS) buffer that attention reads through strides.
struct CausalSelfAttention {
  AttentionConfig cfg;
  Linear qkv;      // fused (gpt2's c_attn)
  Linear q, k, v;  // separate (llama's q_proj, k_proj, v_proj)
  Linear out;      // c_proj / o_proj
  CausalSelfAttention() = default;
  // Parameters are named prefix.qkv_name (fused) or prefix.{q,k,v}_proj, and
  // prefix.out_name, each with .weight (and .bias when cfg.bias).
  CausalSelfAttention(ParamStore& ps, const std::string& prefix, const AttentionConfig& c,
                      const std::string& qkv_name, const std::string& out_name);
  Value forward(Tape& tape, const Value& x) const;  // x (B, T, C)
  int64_t head_size() const { return cfg.n_embd / cfg.n_head; }
};

// GPT-2 MLP: c_proj(gelu_tanh(c_fc(x))).
struct MLP {
  Linear fc, proj;
  MLP() = default;
  MLP(ParamStore& ps, const std::string& fc_name, const std::string& proj_name, int64_t C,
      int64_t hidden, float std, float out_std);
  Value forward(Tape& tape, const Value& x) const {
    return proj.forward(tape, gelu(tape, fc.forward(tape, x)));
  }
};

// Llama MLP: down(silu(gate(x)) * up(x)), no biases.
struct SwiGLUMLP {
  Linear gate, up, down;
  SwiGLUMLP() = default;
  SwiGLUMLP(ParamStore& ps, const std::string& prefix, int64_t C, int64_t hidden, float std,
            float out_std);
  Value forward(Tape& tape, const Value& x) const {
    return down.forward(tape, swiglu(tape, gate.forward(tape, x), up.forward(tape, x)));
  }
};

}  // namespace keel::nn
