// Shared pieces of the engine tests: a small BPE tokenizer, tiny gpt2 and
// llama run directories written by save_run, and the weights of a model as
// the engine sees them.
#pragma once
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/tokenizer.h"
#include "io/config.h"
#include "model/model.h"
#include "serve/inference_model.h"
#include "serve/kv_cache.h"
#include "store/model_weights.h"
#include "store/run_dir.h"
#include "store/run_model.h"

namespace keel::serve::testing {

inline data::Tokenizer small_tokenizer() {
  std::vector<std::string_view> docs = {"the state of the union is strong",
                                        "the union of the states", "héllo wörld ünïcode 日本語",
                                        "strong states make a strong union"};
  data::BpeTrainOptions o;
  o.vocab_size = 300;
  return data::Tokenizer::train(docs, o);
}

inline io::Config small_config(const std::string& arch, const std::string& dir) {
  io::Config c = io::default_config();
  std::vector<std::string> o = {"model.arch=" + arch, "model.n_layer=2",      "model.n_head=4",
                                "model.n_embd=64",    "model.max_seq_len=48", "train.seq_len=48",
                                "run.dir=" + dir};
  if (arch == "llama") o.push_back("model.n_kv_head=2");
  io::apply_overrides(c, o);
  return c;
}

// Writes (once per process and arch) a run directory with random weights.
inline std::string tiny_run(const std::string& arch) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("keel_engine_" + arch + "_" + std::to_string(::getpid())) / "tiny";
  if (std::filesystem::exists(dir / store::kRunWeightsFile)) return dir.string();
  const data::Tokenizer tok = small_tokenizer();
  const io::Config cfg = small_config(arch, dir.string());
  auto be = store::make_run_backend(cfg);
  auto m = model::make_model(store::run_model_config(cfg, tok.vocab_size()), *be);
  m->init(7);
  m->sync_compute_weights();
  store::save_run(dir.string(), cfg, *m, tok, {{"val_loss", 0.0}});
  return dir.string();
}

// The independent oracle for the engine's greedy decoding: the training
// model's full forward pass over the whole context for every new token (no
// KV cache, no inference code). Ties go to the smaller id, as the sampler's.
inline std::vector<int32_t> full_recompute_greedy(model::Model& m, std::vector<int32_t> ids,
                                                  int64_t max_tokens) {
  const int64_t V = m.config().vocab_size;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_tokens; ++i) {
    const auto T = int64_t(ids.size());
    const Tensor logits = m.logits(Tensor::from_i32(ids, {1, T}));
    const float* last = logits.data<float>() + (T - 1) * V;
    const auto next = int32_t(std::max_element(last, last + V) - last);
    ids.push_back(next);
    out.push_back(next);
  }
  return out;
}

// The engine's view of an in-memory model's weights.
inline store::ModelWeights weights_of(model::Model& m) {
  store::ModelWeights w;
  w.config = m.config();
  for (nn::Parameter* p : m.parameters()) w.tensors[p->name] = p->value;
  w.dir = "<memory>";
  return w;
}

inline std::vector<int32_t> some_ids(int64_t n, int64_t V, uint64_t seed) {
  const Rng rng(seed, 1);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(int32_t(rng.below(uint64_t(i), uint64_t(V))));
  return ids;
}

inline float max_abs_diff(const float* a, const float* b, int64_t n) {
  float d = 0;
  for (int64_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// The inference forward against the training forward m.logits on T tokens,
// each logit within tol: a prefill of all T (every row's logits); a prefill
// of P then one token at a time through the cache; and sequences prefilled to
// `lens` decoded as one batch, each row equal to its sequence's alone.
inline void expect_inference_matches_logits(model::Model& m, InferenceModel& im, int64_t T,
                                            int64_t P, const std::vector<int64_t>& lens,
                                            float tol = 1e-4f) {
  const int64_t V = m.config().vocab_size;
  const auto ids = some_ids(T, V, 3);
  const std::vector<float> ref = m.logits(Tensor::from_i32(ids, {1, T})).to_f32_vector();
  KvCachePool pool(m.config().n_layer, im.kv_dim(), size_t(1) << 24, nullptr, im.kv_dtype());

  auto s1 = pool.try_allocate(T);
  ASSERT_TRUE(s1);
  std::vector<float> all(size_t(T * V));
  im.prefill(*s1, ids, all.data(), true);
  EXPECT_LT(max_abs_diff(all.data(), ref.data(), T * V), tol);
  EXPECT_EQ(s1->length(), T);

  auto s2 = pool.try_allocate(T);
  std::vector<float> row(static_cast<size_t>(V));
  im.prefill(*s2, {ids.data(), size_t(P)}, row.data());
  EXPECT_LT(max_abs_diff(row.data(), ref.data() + (P - 1) * V, V), tol);
  for (int64_t t = P; t < T; ++t) {
    KvSequence* seqs[] = {s2.get()};
    im.decode(seqs, {&ids[size_t(t)], 1}, row.data());
    EXPECT_LT(max_abs_diff(row.data(), ref.data() + t * V, V), tol) << "position " << t;
  }

  std::vector<std::unique_ptr<KvSequence>> seqs;
  std::vector<KvSequence*> ptrs;
  std::vector<int32_t> next;
  for (size_t i = 0; i < lens.size(); ++i) {
    const auto other = some_ids(lens[i] + 1, V, 20 + i);
    seqs.push_back(pool.try_allocate(T));
    im.prefill(*seqs.back(), {other.data(), size_t(lens[i])}, row.data());
    ptrs.push_back(seqs.back().get());
    next.push_back(other.back());
  }
  std::vector<float> batch(lens.size() * size_t(V));
  im.decode(ptrs, next, batch.data());
  for (size_t i = 0; i < lens.size(); ++i) {
    const auto other = some_ids(lens[i] + 1, V, 20 + i);
    const auto full = m.logits(Tensor::from_i32(other, {1, lens[i] + 1})).to_f32_vector();
    EXPECT_LT(max_abs_diff(batch.data() + i * V, full.data() + lens[i] * V, V), tol)
        << "sequence " << i;
    EXPECT_EQ(seqs[i]->length(), lens[i] + 1);
  }
}

}  // namespace keel::serve::testing
