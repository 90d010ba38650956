#include "serve/inference_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "core/log.h"
#include "serve/inference_deepseek.h"

namespace keel::serve {

DType weight_format_from_name(const std::string& name) {
  if (name == "none" || name == "f32") return DType::F32;
  if (name == "int8" || name == "i8") return DType::I8;
  if (name == "q8_0" || name == "q8") return DType::Q8_0;
  if (name == "q4" || name == "q4_0") return DType::Q4_0;
  fail<ConfigError>("quant: unknown weight format '{}' (none, int8, q8_0, q4)", name);
}

DType kv_dtype_from_name(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  fail<ConfigError>("kv_dtype: unknown KV cache dtype '{}' (f32, bf16)", name);
}

namespace {

// The backend's thread count set to n for a scope, then restored.
class ScopedThreads {
 public:
  ScopedThreads(backend::Backend& be, int n) : be_(be), saved_(be.threads()) {
    if (n != saved_) be_.set_threads(n);
  }
  ~ScopedThreads() {
    if (be_.threads() != saved_) be_.set_threads(saved_);
  }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  backend::Backend& be_;
  int saved_;
};

}  // namespace

const char* ForwardProfile::name(int phase) {
  static const char* const names[kCount] = {"embed", "norm",       "qkv",  "attention", "out",
                                            "up",    "activation", "down", "residual",  "head"};
  return phase >= 0 && phase < kCount ? names[phase] : "?";
}

InferenceModel::InferenceModel(const store::ModelWeights& w, backend::Backend& be, DType format,
                               DType kv_dtype)
    : cfg_(w.config),
      be_(be),
      format_(format),
      kv_dtype_(kv_dtype),
      llama_(w.config.arch == "llama") {
  if (kv_dtype != DType::F32 && kv_dtype != DType::BF16)
    fail<ConfigError>("kv_dtype: {} is not f32 or bf16", dtype_name(kv_dtype));
  if (kv_dtype == DType::BF16) {
    if (cfg_.arch == "deepseek")
      fail<ConfigError>(
          "{}: kv_dtype bf16: deepseek's latent cache (normalised latent and rotated key) is "
          "kept in f32 only; use f32",
          w.dir);
    if (!be.supports(backend::Kernel::Attention, DType::BF16) ||
        !be.supports(backend::Kernel::Cast, DType::BF16))
      fail<ConfigError>("kv_dtype bf16: backend {} has no bf16 attention; use f32", be.name());
  }
  if (cfg_.arch == "deepseek") {
    deepseek_ = std::make_unique<DeepSeekInference>(w, be, format);
    kv_dim_ = deepseek_->pool_kv_dim();
    return;
  }
  if (cfg_.arch != "gpt2" && cfg_.arch != "llama")
    fail<ConfigError>("{}: model.arch '{}' cannot be served (gpt2, llama, deepseek)", w.dir,
                      cfg_.arch);
  kv_dim_ = cfg_.n_kv_head * head_size();
  const int64_t C = cfg_.n_embd, V = cfg_.vocab_size, F = cfg_.ffn_hidden, kv = kv_dim();
  const auto t = [&](const std::string& n, const Shape& s) { return &store::weight(w, n, s); };
  layers_.resize(size_t(cfg_.n_layer));
  if (!llama_) {
    tok_emb_ = *t("wte.weight", {V, C});
    pos_emb_ = *t("wpe.weight", {cfg_.max_seq_len, C});
    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = "h." + std::to_string(l) + ".";
      Layer& L = layers_[size_t(l)];
      L.norm1_w = *t(p + "ln_1.weight", {C});
      L.norm1_b = *t(p + "ln_1.bias", {C});
      L.norm2_w = *t(p + "ln_2.weight", {C});
      L.norm2_b = *t(p + "ln_2.bias", {C});
      L.qkv = make_linear({t(p + "attn.c_attn.weight", {C + 2 * kv, C})},
                          t(p + "attn.c_attn.bias", {C + 2 * kv}));
      L.out = make_linear({t(p + "attn.c_proj.weight", {C, C})}, t(p + "attn.c_proj.bias", {C}));
      L.up = make_linear({t(p + "mlp.c_fc.weight", {F, C})}, t(p + "mlp.c_fc.bias", {F}));
      L.down = make_linear({t(p + "mlp.c_proj.weight", {C, F})}, t(p + "mlp.c_proj.bias", {C}));
    }
    final_w_ = *t("ln_f.weight", {C});
    final_b_ = *t("ln_f.bias", {C});
    head_ = make_linear({&tok_emb_}, nullptr);  // tied to the token embedding
  } else {
    tok_emb_ = *t("model.embed_tokens.weight", {V, C});
    for (int64_t l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer& L = layers_[size_t(l)];
      L.norm1_w = *t(p + "input_layernorm.weight", {C});
      L.norm2_w = *t(p + "post_attention_layernorm.weight", {C});
      L.qkv = make_linear(
          {t(p + "self_attn.q_proj.weight", {C, C}), t(p + "self_attn.k_proj.weight", {kv, C}),
           t(p + "self_attn.v_proj.weight", {kv, C})},
          nullptr);
      L.out = make_linear({t(p + "self_attn.o_proj.weight", {C, C})}, nullptr);
      L.up = make_linear(
          {t(p + "mlp.gate_proj.weight", {F, C}), t(p + "mlp.up_proj.weight", {F, C})}, nullptr);
      L.down = make_linear({t(p + "mlp.down_proj.weight", {C, F})}, nullptr);
    }
    final_w_ = *t("model.norm.weight", {C});
    head_ = make_linear({t("lm_head.weight", {V, C})}, nullptr);
  }
  // The linears above uploaded their own weights; the rest follow.
  const auto place = [&](Tensor& w) {
    if (w.defined()) w = backend::to_device(be_, w, "weight");
  };
  place(tok_emb_);
  place(pos_emb_);
  place(final_w_);
  place(final_b_);
  for (Layer& L : layers_)
    for (Tensor* w : {&L.norm1_w, &L.norm1_b, &L.norm2_w, &L.norm2_b}) place(*w);
  if (be_.host_memory()) gather_weights();
}

// Decode streams every weight matrix from memory once per token. A matrix
// under host_alloc's huge-page size (most of a small model's: a Q4_0 layer's
// are 0.3-2 MiB, an f32 one's 2-7 MiB) comes from the heap on 4 KiB pages,
// where each page costs a TLB walk and the hardware prefetcher stops at
// every page end. One arena for all of them is large enough for 2 MiB
// pages: measured 0.61-0.91x the CPU time per token for Q4_0 and 0.74-0.98x
// for f32 (one thread, gpt2-124m-sized llama, under load; values unchanged).
// A head tied to the token embedding stays where it is (the embedding
// still reads it).
void InferenceModel::gather_weights() {
  std::vector<Linear*> ls;
  for (Layer& L : layers_)
    for (Linear* l : {&L.qkv, &L.out, &L.up, &L.down}) ls.push_back(l);
  if (head_.w.raw() != tok_emb_.raw()) ls.push_back(&head_);
  const auto padded = [](size_t n) { return (n + 63) / 64 * 64; };
  size_t total = 0;
  for (const Linear* l : ls) total += padded(l->w.nbytes());
  if (total == 0) return;
  weight_arena_ = Tensor::zeros({int64_t(total)}, DType::I8);
  char* base = static_cast<char*>(weight_arena_.raw());
  size_t off = 0;
  for (Linear* l : ls) {
    const size_t n = l->w.nbytes();
    std::memcpy(base + off, l->w.raw(), n);
    l->w = Tensor::view(base + off, l->w.shape(), l->w.dtype());
    off += padded(n);
  }
}

InferenceModel::~InferenceModel() = default;

InferenceModel::Linear InferenceModel::make_linear(const std::vector<const Tensor*>& parts,
                                                   const Tensor* bias) const {
  return make_inference_linear(be_, parts, bias, format_);
}

size_t InferenceModel::weight_bytes_per_token() const {
  if (deepseek_) return deepseek_->weight_bytes_per_token();
  size_t b = 0;
  const auto lin = [&](const Linear& l) {
    b += l.w.nbytes() + (l.scale.defined() ? l.scale.nbytes() : 0) +
         (l.bias.defined() ? l.bias.nbytes() : 0);
  };
  for (const Layer& L : layers_) {
    lin(L.qkv);
    lin(L.out);
    lin(L.up);
    lin(L.down);
    for (const Tensor* t : {&L.norm1_w, &L.norm1_b, &L.norm2_w, &L.norm2_b})
      if (t->defined()) b += t->nbytes();
  }
  lin(head_);
  const size_t row = size_t(cfg_.n_embd) * sizeof(float);
  return b + row * (pos_emb_.defined() ? 2 : 1);
}

void InferenceModel::linear(const Linear& l, const float* x, float* y, int64_t M) {
  const ScopedThreads st(be_, linear_threads_);
  apply_inference_linear(be_, l, x, y, M);
}

void InferenceModel::norm(const Tensor& w, const Tensor& b, const float* x, float* y, int64_t M) {
  float* stats = grown<float>(be_, stats_, 2 * M, DType::F32);
  if (llama_)
    be_.rmsnorm_forward(DType::F32, x, w.raw(), y, stats, M, cfg_.n_embd, cfg_.norm_eps);
  else
    be_.layernorm_forward(DType::F32, x, w.raw(), b.raw(), y, stats, stats + M, M, cfg_.n_embd,
                          cfg_.norm_eps);
}

void InferenceModel::forward(std::span<const Segment> segs, const int32_t* ids, int64_t M,
                             std::span<const int64_t> logit_rows, float* logits) {
  const int64_t C = cfg_.n_embd, NH = cfg_.n_head, NKV = cfg_.n_kv_head, HS = head_size();
  const int64_t kvd = kv_dim(), R = C + 2 * kvd, F = cfg_.ffn_hidden;
  const int64_t up_w = llama_ ? 2 * F : F;
  const auto grow = [&](Tensor& t, int64_t n) { return grown<float>(be_, t, n, DType::F32); };
  float *x = grow(x_, M * C), *h = grow(h_, M * C), *qkv = grow(qkv_, M * R),
        *att = grow(att_, M * C), *ff = grow(ff_, M * up_w), *ff2 = grow(ff2_, M * F);
  // Profiling: the time since the previous mark goes to phase ph.
  using Clock = std::chrono::steady_clock;
  Clock::time_point t_mark = profile_ ? Clock::now() : Clock::time_point{};
  const auto mark = [&](ForwardProfile::Phase ph) {
    if (!profile_) return;
    const Clock::time_point t = Clock::now();
    profile_->seconds[ph] += std::chrono::duration<double>(t - t_mark).count();
    t_mark = t;
  };
  using P = ForwardProfile;
  int64_t max_rows = 0;
  for (const Segment& s : segs) {
    max_rows = std::max(max_rows, s.rows);
    if (s.seq->dtype() != kv_dtype_)
      fail<KernelError>("KV cache of {} given to a model whose cache is {} (kv_dtype)",
                        dtype_name(s.seq->dtype()), dtype_name(kv_dtype_));
  }
  float* lse = grow(lse_, NH * max_rows);
  const bool kv16 = kv_dtype_ == DType::BF16;
  const int64_t ke = int64_t(dtype_size(kv_dtype_));
  char* att_kv = kv16 ? grown<char>(be_, att16_, M * C, DType::BF16) : reinterpret_cast<char*>(att);
  // Token ids and positions are made on the host; a device gets them uploaded.
  const bool device = !be_.host_memory();
  if (device) {
    int32_t* d = grown<int32_t>(be_, ids_, M, DType::I32);
    be_.upload(d, ids, size_t(M) * sizeof(int32_t));
    ids = d;
  }
  be_.embedding_forward(DType::F32, ids, tok_emb_.raw(), x, M, C);
  if (!llama_) {
    pos_.resize(size_t(M));
    for (const Segment& s : segs)
      for (int64_t t = 0; t < s.rows; ++t) pos_[size_t(s.row0 + t)] = int32_t(s.pos0 + t);
    const int32_t* pos = pos_.data();
    if (device) {
      int32_t* d = grown<int32_t>(be_, pos_dev_, M, DType::I32);
      be_.upload(d, pos, size_t(M) * sizeof(int32_t));
      pos = d;
    }
    be_.embedding_forward(DType::F32, pos, pos_emb_.raw(), h, M, C);
    be_.add(DType::F32, x, h, x, M * C);
  }
  mark(P::kEmbed);
  // A decode step's norms, activations and residual adds are a few thousand
  // values, and its attention over a short cache a few tens of
  // microseconds: split over threads, each fork and join costs more than
  // the split saves, and the pool's threads then spin on the cores the next
  // matmul's team needs. So at decode sizes everything but the matmuls (and
  // attention from kSerialAttention query x key x head triples up) runs on
  // this thread; results do not depend on the thread count. The exception
  // is a one-row segment's attention: the backend hands its heads to the
  // matmuls' team (cpu_attention_rows.h), which is still awake.
  constexpr int64_t kSerialRows = 8, kSerialAttention = int64_t(1) << 14;
  const int threads = be_.threads();
  int64_t att_work = 0;
  for (const Segment& s : segs) att_work += s.rows * (s.pos0 + s.rows) * NH;
  const bool serial = M <= kSerialRows;
  const int att_threads = serial && att_work < kSerialAttention ? 1 : threads;
  const ScopedThreads scoped(be_, serial ? 1 : threads);
  linear_threads_ = threads;
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const Layer& L = layers_[size_t(l)];
    norm(L.norm1_w, L.norm1_b, x, h, M);
    mark(P::kNorm);
    linear(L.qkv, h, qkv, M);
    mark(P::kQkv);
    if (llama_) {
      for (const Segment& s : segs) {
        // q and k heads sit side by side in each row: one rotation covers both.
        backend::RopeArgs r;
        r.B = 1;
        r.T = s.rows;
        r.NH = NH + NKV;
        r.HS = HS;
        r.row_stride = R;
        r.batch_stride = s.rows * R;
        r.pos0 = s.pos0;
        r.theta = cfg_.rope_theta;
        float* q = qkv + s.row0 * R;
        be_.rope_forward(r, q, q);
      }
    }
    // A bf16 cache: q, k and v are rounded once here, the attention runs on
    // bf16 storage (f32 sums) and its output is widened back.
    char* qkv_kv = reinterpret_cast<char*>(qkv);
    if (kv16) {
      qkv_kv = grown<char>(be_, qkv16_, M * R, DType::BF16);
      be_.cast(DType::F32, qkv, DType::BF16, qkv_kv, M * R);
    }
    for (const Segment& s : segs) {
      const char* q = qkv_kv + s.row0 * R * ke;
      char *kc = static_cast<char*>(s.seq->keys(l)), *vc = static_cast<char*>(s.seq->values(l));
      // Backend copies: a memmove on the host, a queued copy on a device.
      for (int64_t t = 0; t < s.rows; ++t) {
        be_.copy(kc + (s.pos0 + t) * kvd * ke, q + (t * R + C) * ke, size_t(kvd * ke));
        be_.copy(vc + (s.pos0 + t) * kvd * ke, q + (t * R + C + kvd) * ke, size_t(kvd * ke));
      }
      backend::AttentionArgs a;
      a.B = 1;
      a.Tq = s.rows;
      a.Tk = s.pos0 + s.rows;
      a.NH = NH;
      a.NKV = NKV;
      a.HS = HS;
      a.q_row_stride = R;
      a.q_batch_stride = s.rows * R;
      a.kv_row_stride = kvd;
      a.kv_batch_stride = s.seq->capacity() * kvd;
      a.scale = float(1.0 / std::sqrt(double(HS)));
      a.dt = kv_dtype_;
      const ScopedThreads st(be_, s.rows == 1 ? threads : att_threads);
      be_.attention_forward(a, q, kc, vc, att_kv + s.row0 * C * ke, lse);
    }
    if (kv16) be_.cast(DType::BF16, att_kv, DType::F32, att, M * C);
    mark(P::kAttention);
    linear(L.out, att, h, M);
    mark(P::kOut);
    be_.add(DType::F32, x, h, x, M * C);
    mark(P::kResidual);
    norm(L.norm2_w, L.norm2_b, x, h, M);
    mark(P::kNorm);
    linear(L.up, h, ff, M);
    mark(P::kUp);
    if (llama_) {
      for (int64_t r = 0; r < M; ++r)
        be_.swiglu_forward(DType::F32, ff + r * up_w, ff + r * up_w + F, ff2 + r * F, F);
    } else {
      be_.gelu_forward(DType::F32, ff, ff2, M * F);
    }
    mark(P::kActivation);
    linear(L.down, ff2, h, M);
    mark(P::kDown);
    be_.add(DType::F32, x, h, x, M * C);
    mark(P::kResidual);
  }
  const int64_t NL = int64_t(logit_rows.size());
  float* rows = grow(rows_, NL * C);
  for (int64_t i = 0; i < NL; ++i)
    be_.copy(rows + i * C, x + logit_rows[size_t(i)] * C, size_t(C) * sizeof(float));
  norm(final_w_, final_b_, rows, h, NL);
  mark(P::kNorm);
  {
    const ScopedThreads st(be_, linear_threads_);
    apply_inference_head(be_, head_, h, logits, NL, logits_);
  }
  mark(P::kHead);
  if (profile_) ++profile_->calls;
}

void InferenceModel::prefill(KvSequence& seq, std::span<const int32_t> ids, float* logits,
                             bool all_logits) {
  if (deepseek_) return deepseek_->prefill(seq, ids, logits, all_logits);
  prefill_through(seq, ids, all_logits,
                  [&](std::span<const Segment> segs, const int32_t* x, int64_t M,
                      std::span<const int64_t> rows) { forward(segs, x, M, rows, logits); });
}

void InferenceModel::decode(std::span<KvSequence* const> seqs, std::span<const int32_t> tokens,
                            float* logits) {
  if (deepseek_) return deepseek_->decode(seqs, tokens, logits);
  decode_through(seqs, tokens,
                 [&](std::span<const Segment> segs, const int32_t* x, int64_t M,
                     std::span<const int64_t> rows) { forward(segs, x, M, rows, logits); });
}

void InferenceModel::copy_cache_prefix(KvSequence& dst, KvSequence& src, int64_t T) const {
  const int64_t L = cfg_.n_layer;
  for (int64_t l = 0; l < L; ++l) {
    if (deepseek_) {
      // One latent row of cache_width() floats per token from keys(l) on.
      be_.copy(dst.keys(l), src.keys(l), size_t(T * deepseek_->cache_width()) * sizeof(float));
      continue;
    }
    const size_t row = size_t(T) * size_t(src.kv_dim()) * dtype_size(src.dtype());
    be_.copy(dst.keys(l), src.keys(l), row);
    be_.copy(dst.values(l), src.values(l), row);
  }
  dst.set_length(T);
}

}  // namespace keel::serve
