// deepseek inference: MLA over the compressed latent cache and top-k MoE
// decode, mirroring model/deepseek's training forward step by step (same
// kernels, same routing) so the logits agree with Model::logits.
#include "serve/inference_deepseek.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "core/log.h"

namespace keel::serve {
namespace {

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
    : cfg_(w.config), be_(be), format_(format), device_(!be.host_memory()) {
  const model::ModelConfig& c = cfg_;
  const int64_t C = c.n_embd, V = c.vocab_size, NH = c.n_head;
  const int64_t D = c.qk_nope_head_dim + c.qk_rope_head_dim, R = c.kv_lora_rank;
  const int64_t E = c.n_routed_experts, F = c.moe_ffn_hidden;
  // Norm weights, the embedding and the selection bias go to the backend's
  // memory (themselves on the host); the linears upload their own.
  const auto t = [&](const std::string& n, const Shape& s) -> Tensor {
    return backend::to_device(be_, store::weight(w, n, s), "weight");
  };
  const auto host = [&](const std::string& n, const Shape& s) -> const Tensor& {
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
      L.q_a = make_linear(host(a + "q_a_proj.weight", {c.q_lora_rank, C}));
      L.q_a_norm = t(a + "q_a_layernorm.weight", {c.q_lora_rank});
      L.q_b = make_linear(host(a + "q_b_proj.weight", {NH * D, c.q_lora_rank}));
    } else {
      L.q = make_linear(host(a + "q_proj.weight", {NH * D, C}));
    }
    L.kv_a = make_linear(host(a + "kv_a_proj_with_mqa.weight", {R + c.qk_rope_head_dim, C}));
    L.kv_a_norm = t(a + "kv_a_layernorm.weight", {R});
    L.kv_b =
        make_linear(host(a + "kv_b_proj.weight", {NH * (c.qk_nope_head_dim + c.v_head_dim), R}));
    L.o = make_linear(host(a + "o_proj.weight", {C, NH * c.v_head_dim}));
    if (l < c.n_dense_layers) {
      L.dense.gate_up = stacked(host(m + "gate_proj.weight", {c.ffn_hidden, C}),
                                host(m + "up_proj.weight", {c.ffn_hidden, C}));
      L.dense.down = make_linear(host(m + "down_proj.weight", {C, c.ffn_hidden}));
      continue;
    }
    L.moe = true;
    L.router = make_linear(host(m + "gate.weight", {E, C}), true);
    L.bias = t(m + "gate.e_score_correction_bias", {E});
    const Tensor& g = host(m + "experts.gate_proj.weight", {E, F, C});
    const Tensor& u = host(m + "experts.up_proj.weight", {E, F, C});
    const Tensor& d = host(m + "experts.down_proj.weight", {E, C, F});
    for (int64_t e = 0; e < E; ++e)
      L.experts.push_back(
          {stacked(expert_slice(g, e), expert_slice(u, e)), make_linear(expert_slice(d, e))});
    if (c.n_shared_experts > 0) {
      const int64_t S = F * c.n_shared_experts;
      L.has_shared = true;
      L.shared.gate_up = stacked(host(m + "shared_experts.gate_proj.weight", {S, C}),
                                 host(m + "shared_experts.up_proj.weight", {S, C}));
      L.shared.down = make_linear(host(m + "shared_experts.down_proj.weight", {C, S}));
    }
  }
  final_norm_ = t("model.norm.weight", {C});
  head_ = make_linear(host("lm_head.weight", {V, C}));
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

void DeepSeekInference::copy_block(float* dst, int64_t ldd, const float* src, int64_t lds,
                                   int64_t rows, int64_t cols, int64_t batch, int64_t dbs,
                                   int64_t sbs) {
  if (rows <= 0 || cols <= 0 || batch <= 0) return;
  // The backend's strided row copy: memcpy per row on the host, one dispatch
  // on a device.
  if (dbs == rows * ldd && sbs == rows * lds) {
    be_.copy_rows(DType::F32, src, lds, dst, ldd, rows * batch, cols, false);
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    be_.copy_rows(DType::F32, src + b * sbs, lds, dst + b * dbs, ldd, rows, cols, false);
}

void DeepSeekInference::rmsnorm(const Tensor& w, const float* x, float* y, int64_t M, int64_t C) {
  float* stats = grown<float>(be_, stats_, M, DType::F32);
  be_.rmsnorm_forward(DType::F32, x, w.raw(), y, stats, M, C, cfg_.norm_eps);
}

void DeepSeekInference::mlp(const Mlp& m, const float* x, float* y, int64_t M) {
  const int64_t F = m.down.K;
  float* f1 = grown<float>(be_, f1_, M * 2 * F, DType::F32);
  float* f2 = grown<float>(be_, f2_, M * F, DType::F32);
  linear(m.gate_up, x, f1, M);
  for (int64_t r = 0; r < M; ++r)
    be_.swiglu_forward(DType::F32, f1 + r * 2 * F, f1 + r * 2 * F + F, f2 + r * F, F);
  linear(m.down, f2, y, M);
}

void DeepSeekInference::attention(const Layer& L, int64_t layer, std::span<const Segment> segs,
                                  const float* h, int64_t M, float* out) {
  const model::ModelConfig& c = cfg_;
  const int64_t NH = c.n_head, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const int64_t vd = c.v_head_dim, D = nope + rope, R = c.kv_lora_rank, W = cache_width();
  const int64_t QD = NH * D, KVW = nope + vd;
  const auto grow = [&](Tensor& t, int64_t n) { return grown<float>(be_, t, n, DType::F32); };
  float *q = grow(q_, M * QD), *ckv = grow(ckv_, M * W), *o = grow(o_, M * QD),
        *ov = grow(ov_, M * NH * vd);
  // Per-segment scratch sized for the longest cache up front: replacing a
  // device buffer waits for the queue, and sized by the keys so far it would
  // grow (and wait) at every decode step.
  int64_t max_tk = 0, max_rows = 0;
  for (const Segment& s : segs) {
    max_tk = std::max(max_tk, s.seq->capacity());
    max_rows = std::max(max_rows, s.rows);
  }
  float *lat = grow(lat_, max_tk * R), *kv = grow(kv_, max_tk * NH * KVW),
        *k = grow(k_, max_tk * QD), *v = grow(v_, max_tk * QD), *lse = grow(lse_, NH * max_rows);
  if (c.q_lora_rank > 0) {
    float* qa = grow(qa_, 2 * M * c.q_lora_rank);
    linear(L.q_a, h, qa, M);
    rmsnorm(L.q_a_norm, qa, qa + M * c.q_lora_rank, M, c.q_lora_rank);
    linear(L.q_b, qa + M * c.q_lora_rank, q, M);
  } else {
    linear(L.q, h, q, M);
  }
  linear(L.kv_a, h, ckv, M);
  for (const Segment& s : segs) {
    // Cache rows pos0.. of this layer: [normalised latent | rotated shared key].
    float* cache = static_cast<float*>(s.seq->keys(layer));
    for (int64_t t = 0; t < s.rows; ++t)
      rmsnorm(L.kv_a_norm, ckv + (s.row0 + t) * W, cache + (s.pos0 + t) * W, 1, R);
    copy_block(cache + s.pos0 * W + R, W, ckv + s.row0 * W + R, W, s.rows, rope);
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
      float* qr = q + s.row0 * QD + hd * D + nope;
      be_.rope_forward(r, qr, qr);
    }
    // Rebuild every head's keys and values of positions 0 .. pos0 + rows
    // from the latent: k_h = [kv_b(latent)_nope,h | kpe], v_h zero-padded to D.
    const int64_t Tk = s.pos0 + s.rows;
    copy_block(lat, R, cache, W, Tk, R);
    linear(L.kv_b, lat, kv, Tk);
    be_.fill_zero(v, size_t(Tk * QD) * sizeof(float));
    copy_block(k, QD, kv, NH * KVW, Tk, nope, NH, D, KVW);
    copy_block(k + nope, QD, cache + R, W, Tk, rope, NH, D, 0);
    copy_block(v, QD, kv + nope, NH * KVW, Tk, vd, NH, D, KVW);
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
    be_.attention_forward(a, q + s.row0 * QD, k, v, o + s.row0 * QD, lse);
  }
  copy_block(ov, NH * vd, o, QD, M, vd, NH, vd, D);
  linear(L.o, ov, out, M);
}

void DeepSeekInference::moe(const Layer& L, const float* h, int64_t M, float* out) {
  const model::ModelConfig& c = cfg_;
  const int64_t C = c.n_embd, E = c.n_routed_experts, K = c.top_k;
  const auto grow = [&](Tensor& t, int64_t n) { return grown<float>(be_, t, n, DType::F32); };
  float *logits = grow(route_logits_, M * E), *scores = grow(scores_, M * E),
        *wts = grow(wts_, M * K), *gx = grow(gx_, M * K * C), *gy = grow(gy_, M * K * C);
  idx_.resize(size_t(M * K));
  pos_.resize(size_t(M * K));
  int32_t* idx = device_ ? grown<int32_t>(be_, idx_dev_, M * K, DType::I32) : idx_.data();
  linear(L.router, h, logits, M);
  backend::MoeRouteArgs ra;
  ra.N = M;
  ra.E = E;
  ra.K = K;
  ra.gating = c.gating == "sigmoid" ? backend::MoeGating::Sigmoid : backend::MoeGating::Softmax;
  ra.norm_topk = c.norm_topk_prob;
  ra.scale = c.routed_scaling;
  be_.moe_route_forward(ra, logits, L.bias.data<float>(), scores, idx, wts);
  // Which rows each expert runs decides how many rows each expert matmul
  // takes, and those sizes are host arguments: the choice comes back once per
  // MoE layer (the wait of a device forward besides the logits).
  if (device_) be_.download(idx_.data(), idx, size_t(M * K) * sizeof(int32_t));
  // Slots in expert order, token order within an expert (the training
  // dispatch's order, without its capacity: inference drops no token).
  offsets_.assign(size_t(E + 1), 0);
  for (int64_t i = 0; i < M * K; ++i) {
    const int32_t e = idx_[size_t(i)];
    if (e < 0 || e >= E)
      fail<KernelError>("deepseek moe: {} routed token {} slot {} to expert {} of {}", be_.name(),
                        i / K, i % K, e, E);
    ++offsets_[size_t(e + 1)];
  }
  for (int64_t e = 0; e < E; ++e) offsets_[size_t(e + 1)] += offsets_[size_t(e)];
  {
    std::vector<int64_t> next(offsets_.begin(), offsets_.end() - 1);
    for (int64_t i = 0; i < M * K; ++i) pos_[size_t(i)] = int32_t(next[size_t(idx_[size_t(i)])]++);
  }
  const int32_t* pos = pos_.data();
  if (device_) {
    int32_t* d = grown<int32_t>(be_, pos_dev_, M * K, DType::I32);
    be_.upload(d, pos, size_t(M * K) * sizeof(int32_t));
    pos = d;
  }
  be_.moe_permute_forward(DType::F32, pos, h, gx, M, K, C);
  // Each expert runs once over its rows.
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets_[size_t(e)], n = offsets_[size_t(e + 1)] - r0;
    if (n > 0) mlp(L.experts[size_t(e)], gx + r0 * C, gy + r0 * C, n);
  }
  if (device_) {
    be_.moe_unpermute_forward(DType::F32, pos, wts, gy, out, M, K, C);
  } else {
    // The host sums in f64, k ascending (the training combine's order);
    // served results stay bit for bit what they were before the device path.
    for (int64_t r = 0; r < M; ++r)
      for (int64_t ch = 0; ch < C; ++ch) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += double(wts[r * K + k]) * double(gy[int64_t(pos[r * K + k]) * C + ch]);
        out[r * C + ch] = float(acc);
      }
  }
  if (L.has_shared) {
    float* f3 = grow(f3_, M * C);
    mlp(L.shared, h, f3, M);
    be_.add(DType::F32, out, f3, out, M * C);
  }
}

void DeepSeekInference::forward(std::span<const Segment> segs, const int32_t* ids, int64_t M,
                                std::span<const int64_t> logit_rows, float* logits) {
  const int64_t C = cfg_.n_embd;
  const auto grow = [&](Tensor& t, int64_t n) { return grown<float>(be_, t, n, DType::F32); };
  float *x = grow(x_, M * C), *h = grow(h_, M * C), *a = grow(a_, M * C);
  if (device_) {
    int32_t* d = grown<int32_t>(be_, ids_, M, DType::I32);
    be_.upload(d, ids, size_t(M) * sizeof(int32_t));
    ids = d;
  }
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
  float* rows = grow(rows_, NL * C);
  for (int64_t i = 0; i < NL; ++i)
    be_.copy(rows + i * C, x + logit_rows[size_t(i)] * C, size_t(C) * sizeof(float));
  rmsnorm(final_norm_, rows, h, NL, C);
  apply_inference_head(be_, head_, h, logits, NL, logits_);
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
