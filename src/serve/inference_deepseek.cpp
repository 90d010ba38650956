// deepseek inference: MLA over the compressed latent cache and top-k MoE
// decode, mirroring model/deepseek's training forward step by step (same
// kernels, same routing) so the logits agree with Model::logits.
#include "serve/inference_deepseek.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/log.h"

namespace keel::serve {
namespace {

void grow(std::vector<float>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
}

// Matrix e of a stacked (E, N, K) tensor as its own (N, K) tensor.
Tensor expert_slice(const Tensor& t, int64_t e) {
  const int64_t N = t.dim(1), K = t.dim(2);
  Tensor out = Tensor::zeros({N, K}, DType::F32);
  std::memcpy(out.raw(), t.data<float>() + e * N * K, size_t(N * K) * sizeof(float));
  return out;
}

}  // namespace

DeepSeekInference::DeepSeekInference(const store::ModelWeights& w, backend::Backend& be,
                                     DType format)
    : cfg_(w.config), be_(be), format_(format) {
  const model::ModelConfig& c = cfg_;
  const int64_t C = c.n_embd, V = c.vocab_size, NH = c.n_head;
  const int64_t D = c.qk_nope_head_dim + c.qk_rope_head_dim, R = c.kv_lora_rank;
  const int64_t E = c.n_routed_experts, F = c.moe_ffn_hidden;
  const auto t = [&](const std::string& n, const Shape& s) -> const Tensor& {
    return store::weight(w, n, s);
  };
  tok_emb_ = t("model.embed_tokens.weight", {V, C});
  layers_.resize(size_t(c.n_layer));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.", m = p + "mlp.";
    Layer& L = layers_[size_t(l)];
    L.attn_norm = t(p + "input_layernorm.weight", {C});
    L.ffn_norm = t(p + "post_attention_layernorm.weight", {C});
    if (c.q_lora_rank > 0) {
      L.q_a = make_linear(t(a + "q_a_proj.weight", {c.q_lora_rank, C}));
      L.q_a_norm = t(a + "q_a_layernorm.weight", {c.q_lora_rank});
      L.q_b = make_linear(t(a + "q_b_proj.weight", {NH * D, c.q_lora_rank}));
    } else {
      L.q = make_linear(t(a + "q_proj.weight", {NH * D, C}));
    }
    L.kv_a = make_linear(t(a + "kv_a_proj_with_mqa.weight", {R + c.qk_rope_head_dim, C}));
    L.kv_a_norm = t(a + "kv_a_layernorm.weight", {R});
    L.kv_b = make_linear(t(a + "kv_b_proj.weight", {NH * (c.qk_nope_head_dim + c.v_head_dim), R}));
    L.o = make_linear(t(a + "o_proj.weight", {C, NH * c.v_head_dim}));
    if (l < c.n_dense_layers) {
      L.dense.gate_up = stacked(t(m + "gate_proj.weight", {c.ffn_hidden, C}),
                                t(m + "up_proj.weight", {c.ffn_hidden, C}));
      L.dense.down = make_linear(t(m + "down_proj.weight", {C, c.ffn_hidden}));
      continue;
    }
    L.moe = true;
    L.router = make_linear(t(m + "gate.weight", {E, C}), true);
    L.bias = t(m + "gate.e_score_correction_bias", {E});
    const Tensor& g = t(m + "experts.gate_proj.weight", {E, F, C});
    const Tensor& u = t(m + "experts.up_proj.weight", {E, F, C});
    const Tensor& d = t(m + "experts.down_proj.weight", {E, C, F});
    for (int64_t e = 0; e < E; ++e)
      L.experts.push_back(
          {stacked(expert_slice(g, e), expert_slice(u, e)), make_linear(expert_slice(d, e))});
    if (c.n_shared_experts > 0) {
      const int64_t S = F * c.n_shared_experts;
      L.has_shared = true;
      L.shared.gate_up = stacked(t(m + "shared_experts.gate_proj.weight", {S, C}),
                                 t(m + "shared_experts.up_proj.weight", {S, C}));
      L.shared.down = make_linear(t(m + "shared_experts.down_proj.weight", {C, S}));
    }
  }
  final_norm_ = t("model.norm.weight", {C});
  head_ = make_linear(t("lm_head.weight", {V, C}));
}

DeepSeekInference::Linear DeepSeekInference::make_linear(const Tensor& f, bool keep_f32) const {
  return make_inference_linear(be_, {&f}, nullptr, keep_f32 ? DType::F32 : format_);
}

DeepSeekInference::Linear DeepSeekInference::stacked(const Tensor& a, const Tensor& b) const {
  return make_inference_linear(be_, {&a, &b}, nullptr, format_);
}

size_t DeepSeekInference::weight_bytes_per_token() const {
  const auto lin = [](const Linear& l) {
    return l.w.defined() ? l.w.nbytes() + (l.scale.defined() ? l.scale.nbytes() : 0) : size_t(0);
  };
  const auto mlp_bytes = [&](const Mlp& m) { return lin(m.gate_up) + lin(m.down); };
  size_t b = 0;
  for (const Layer& L : layers_) {
    b += lin(L.q) + lin(L.q_a) + lin(L.q_b) + lin(L.kv_a) + lin(L.kv_b) + lin(L.o);
    if (!L.moe) {
      b += mlp_bytes(L.dense);
      continue;
    }
    b += lin(L.router) + L.bias.nbytes() + size_t(cfg_.top_k) * mlp_bytes(L.experts[0]);
    if (L.has_shared) b += mlp_bytes(L.shared);
  }
  return b + lin(head_) + size_t(cfg_.n_embd) * sizeof(float);
}

void DeepSeekInference::linear(const Linear& l, const float* x, float* y, int64_t M) {
  apply_inference_linear(be_, l, x, y, M);
}

void DeepSeekInference::rmsnorm(const Tensor& w, const float* x, float* y, int64_t M, int64_t C) {
  grow(stats_, M);
  be_.rmsnorm_forward(DType::F32, x, w.raw(), y, stats_.data(), M, C, cfg_.norm_eps);
}

void DeepSeekInference::mlp(const Mlp& m, const float* x, float* y, int64_t M) {
  const int64_t F = m.down.K;
  grow(f1_, M * 2 * F);
  grow(f2_, M * F);
  linear(m.gate_up, x, f1_.data(), M);
  for (int64_t r = 0; r < M; ++r)
    be_.swiglu_forward(DType::F32, f1_.data() + r * 2 * F, f1_.data() + r * 2 * F + F,
                       f2_.data() + r * F, F);
  linear(m.down, f2_.data(), y, M);
}

void DeepSeekInference::attention(const Layer& L, int64_t layer, std::span<const Segment> segs,
                                  const float* h, int64_t M, float* out) {
  const model::ModelConfig& c = cfg_;
  const int64_t NH = c.n_head, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const int64_t vd = c.v_head_dim, D = nope + rope, R = c.kv_lora_rank, W = cache_width();
  const int64_t QD = NH * D, KVW = nope + vd;
  grow(q_, M * QD);
  grow(ckv_, M * W);
  grow(o_, M * QD);
  grow(ov_, M * NH * vd);
  if (c.q_lora_rank > 0) {
    grow(qa_, 2 * M * c.q_lora_rank);
    linear(L.q_a, h, qa_.data(), M);
    rmsnorm(L.q_a_norm, qa_.data(), qa_.data() + M * c.q_lora_rank, M, c.q_lora_rank);
    linear(L.q_b, qa_.data() + M * c.q_lora_rank, q_.data(), M);
  } else {
    linear(L.q, h, q_.data(), M);
  }
  linear(L.kv_a, h, ckv_.data(), M);
  for (const Segment& s : segs) {
    // Cache rows pos0.. of this layer: [normalised latent | rotated shared key].
    float* cache = s.seq->keys(layer);
    for (int64_t t = 0; t < s.rows; ++t) {
      const float* src = ckv_.data() + (s.row0 + t) * W;
      float* dst = cache + (s.pos0 + t) * W;
      rmsnorm(L.kv_a_norm, src, dst, 1, R);
      std::memcpy(dst + R, src + R, size_t(rope) * sizeof(float));
    }
    backend::RopeArgs r;
    r.B = 1;
    r.T = s.rows;
    r.NH = 1;
    r.HS = rope;
    r.pos0 = s.pos0;
    r.theta = c.rope_theta;
    r.row_stride = W;
    r.batch_stride = s.rows * W;
    float* kpe = cache + s.pos0 * W + R;
    be_.rope_forward(r, kpe, kpe);
    r.row_stride = QD;
    r.batch_stride = s.rows * QD;
    for (int64_t hd = 0; hd < NH; ++hd) {
      float* qr = q_.data() + s.row0 * QD + hd * D + nope;
      be_.rope_forward(r, qr, qr);
    }
    // Rebuild every head's keys and values of positions 0 .. pos0 + rows
    // from the latent: k_h = [kv_b(latent)_nope,h | kpe], v_h zero-padded to D.
    const int64_t Tk = s.pos0 + s.rows;
    grow(lat_, Tk * R);
    grow(kv_, Tk * NH * KVW);
    grow(k_, Tk * QD);
    grow(v_, Tk * QD);
    for (int64_t t = 0; t < Tk; ++t)
      std::memcpy(lat_.data() + t * R, cache + t * W, size_t(R) * sizeof(float));
    linear(L.kv_b, lat_.data(), kv_.data(), Tk);
    std::fill_n(v_.data(), Tk * QD, 0.f);
    for (int64_t t = 0; t < Tk; ++t)
      for (int64_t hd = 0; hd < NH; ++hd) {
        const float* kv = kv_.data() + (t * NH + hd) * KVW;
        float* k = k_.data() + t * QD + hd * D;
        std::memcpy(k, kv, size_t(nope) * sizeof(float));
        std::memcpy(k + nope, cache + t * W + R, size_t(rope) * sizeof(float));
        std::memcpy(v_.data() + t * QD + hd * D, kv + nope, size_t(vd) * sizeof(float));
      }
    backend::AttentionArgs a;
    a.B = 1;
    a.Tq = s.rows;
    a.Tk = Tk;
    a.NH = NH;
    a.NKV = NH;
    a.HS = D;
    a.q_row_stride = QD;
    a.q_batch_stride = s.rows * QD;
    a.kv_row_stride = QD;
    a.kv_batch_stride = Tk * QD;
    a.scale = float(1.0 / std::sqrt(double(D)));
    grow(lse_, NH * s.rows);
    be_.attention_forward(a, q_.data() + s.row0 * QD, k_.data(), v_.data(), o_.data() + s.row0 * QD,
                          lse_.data());
  }
  for (int64_t r = 0; r < M; ++r)
    for (int64_t hd = 0; hd < NH; ++hd)
      std::memcpy(ov_.data() + (r * NH + hd) * vd, o_.data() + r * QD + hd * D,
                  size_t(vd) * sizeof(float));
  linear(L.o, ov_.data(), out, M);
}

void DeepSeekInference::moe(const Layer& L, const float* h, int64_t M, float* out) {
  const model::ModelConfig& c = cfg_;
  const int64_t C = c.n_embd, E = c.n_routed_experts, K = c.top_k;
  grow(route_logits_, M * E);
  grow(scores_, M * E);
  grow(wts_, M * K);
  grow(slots_, M * K * C);
  idx_.resize(size_t(M * K));
  linear(L.router, h, route_logits_.data(), M);
  backend::MoeRouteArgs ra;
  ra.N = M;
  ra.E = E;
  ra.K = K;
  ra.gating = c.gating == "sigmoid" ? backend::MoeGating::Sigmoid : backend::MoeGating::Softmax;
  ra.norm_topk = c.norm_topk_prob;
  ra.scale = c.routed_scaling;
  be_.moe_route_forward(ra, route_logits_.data(), L.bias.data<float>(), scores_.data(), idx_.data(),
                        wts_.data());
  // Each expert runs once over the rows routed to it; results land in slot (n, k).
  std::vector<int64_t> slots;
  for (int64_t e = 0; e < E; ++e) {
    slots.clear();
    for (int64_t i = 0; i < M * K; ++i)
      if (idx_[size_t(i)] == e) slots.push_back(i);
    const int64_t n = int64_t(slots.size());
    if (n == 0) continue;
    grow(gx_, n * C);
    grow(gy_, n * C);
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(gx_.data() + j * C, h + (slots[size_t(j)] / K) * C, size_t(C) * sizeof(float));
    mlp(L.experts[size_t(e)], gx_.data(), gy_.data(), n);
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(slots_.data() + slots[size_t(j)] * C, gy_.data() + j * C,
                  size_t(C) * sizeof(float));
  }
  for (int64_t r = 0; r < M; ++r)
    for (int64_t ch = 0; ch < C; ++ch) {
      double acc = 0;  // k ascending, as the training combine
      for (int64_t k = 0; k < K; ++k)
        acc += double(wts_[size_t(r * K + k)]) * double(slots_[size_t((r * K + k) * C + ch)]);
      out[r * C + ch] = float(acc);
    }
  if (L.has_shared) {
    grow(f3_, M * C);
    mlp(L.shared, h, f3_.data(), M);
    be_.add(DType::F32, out, f3_.data(), out, M * C);
  }
}

void DeepSeekInference::forward(std::span<const Segment> segs, const int32_t* ids, int64_t M,
                                std::span<const int64_t> logit_rows, float* logits) {
  const int64_t C = cfg_.n_embd;
  grow(x_, M * C);
  grow(h_, M * C);
  grow(a_, M * C);
  float *x = x_.data(), *h = h_.data(), *a = a_.data();
  be_.embedding_forward(DType::F32, ids, tok_emb_.raw(), x, M, C);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const Layer& L = layers_[size_t(l)];
    rmsnorm(L.attn_norm, x, h, M, C);
    attention(L, l, segs, h, M, a);
    be_.add(DType::F32, x, a, x, M * C);
    rmsnorm(L.ffn_norm, x, h, M, C);
    if (L.moe)
      moe(L, h, M, a);
    else
      mlp(L.dense, h, a, M);
    be_.add(DType::F32, x, a, x, M * C);
  }
  const int64_t NL = int64_t(logit_rows.size());
  grow(rows_, NL * C);
  for (int64_t i = 0; i < NL; ++i)
    std::memcpy(rows_.data() + i * C, x + logit_rows[size_t(i)] * C, size_t(C) * sizeof(float));
  rmsnorm(final_norm_, rows_.data(), h, NL, C);
  linear(head_, h, logits, NL);
}

void DeepSeekInference::prefill(KvSequence& seq, std::span<const int32_t> ids, float* logits,
                                bool all_logits) {
  KEEL_ASSERT(2 * seq.kv_dim() >= cache_width());
  prefill_through(seq, ids, all_logits,
                  [&](std::span<const Segment> segs, const int32_t* x, int64_t M,
                      std::span<const int64_t> rows) { forward(segs, x, M, rows, logits); });
}

void DeepSeekInference::decode(std::span<KvSequence* const> seqs, std::span<const int32_t> tokens,
                               float* logits) {
  for (const KvSequence* s : seqs) KEEL_ASSERT(2 * s->kv_dim() >= cache_width());
  decode_through(seqs, tokens,
                 [&](std::span<const Segment> segs, const int32_t* x, int64_t M,
                     std::span<const int64_t> rows) { forward(segs, x, M, rows, logits); });
}

}  // namespace keel::serve
