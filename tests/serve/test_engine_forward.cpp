// The inference forward (prefill and batched decode over the KV cache)
// against the training forward Model::logits, on ref and cpu, for gpt2 and
// llama; and the quantized weight formats against f32.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/model.h"
#include "serve/inference_model.h"
#include "serve/kv_cache.h"
#include "test_engine_util.h"

using namespace keel;
using namespace keel::serve;
using serve::testing::max_abs_diff;
using serve::testing::some_ids;

namespace {

model::ModelConfig config(const std::string& arch) {
  model::ModelConfig c;
  c.arch = arch;
  c.vocab_size = 96;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == "llama" ? 2 : 0;
  c.n_embd = 64;
  c.max_seq_len = 32;
  return c;
}

// The largest |logit|: tolerances are relative to the logits' spread.
float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

struct Case {
  std::string arch, backend;
};

class ForwardVsTraining : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardVsTraining, PrefillAndDecodeMatchModelLogits) {
  const Case c = GetParam();
  auto be = backend::make_backend(c.backend);
  auto m = model::make_model(config(c.arch), *be);
  m->init(11);
  m->sync_compute_weights();
  InferenceModel im(serve::testing::weights_of(*m), *be, DType::F32);
  serve::testing::expect_inference_matches_logits(*m, im, 20, 6, {3, 9, 14});
}

INSTANTIATE_TEST_SUITE_P(All, ForwardVsTraining,
                         ::testing::Values(Case{"gpt2", "ref"}, Case{"gpt2", "cpu"},
                                           Case{"llama", "ref"}, Case{"llama", "cpu"}),
                         [](const auto& info) {
                           return info.param.arch + "_" + info.param.backend;
                         });

// Quantized weights: close to f32 (relative to the logits' spread), and the
// cpu backend's integer kernels agree with ref's.
TEST(QuantizedForward, CloseToF32AndCpuMatchesRef) {
  auto ref = backend::make_backend("ref");
  auto cpu = backend::make_backend("cpu");
  auto m = model::make_model(config("llama"), *ref);
  m->init(5);
  m->sync_compute_weights();
  const auto w = serve::testing::weights_of(*m);
  const int64_t T = 12, V = m->config().vocab_size;
  const auto ids = some_ids(T, V, 8);
  const std::vector<float> f32 = m->logits(Tensor::from_i32(ids, {1, T})).to_f32_vector();
  const float spread = max_abs(f32);
  for (DType fmt : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    std::vector<float> out[2];
    int i = 0;
    for (backend::Backend* be : {ref.get(), cpu.get()}) {
      InferenceModel im(w, *be, fmt);
      KvCachePool pool(m->config().n_layer, im.kv_dim(), size_t(1) << 24);
      auto s = pool.try_allocate(T);
      out[i].resize(size_t(T * V));
      im.prefill(*s, ids, out[i].data(), true);
      ++i;
    }
    const float tol = fmt == DType::Q4_0 ? 0.25f : 0.05f;
    EXPECT_LT(max_abs_diff(out[0].data(), f32.data(), T * V), tol * spread) << dtype_name(fmt);
    EXPECT_LT(max_abs_diff(out[0].data(), out[1].data(), T * V), 1e-4f * spread)
        << dtype_name(fmt) << ": cpu vs ref";
    EXPECT_GT(max_abs_diff(out[0].data(), f32.data(), T * V), 0.f)
        << dtype_name(fmt) << ": quantization changed nothing";
  }
}

// A bf16 KV cache: q, k and v rounded to bf16, attention summed in f32.
// Against the training forward (f32 throughout) the logits move by about
// bf16's rounding and no more; cpu and ref agree to well within that; every
// path through the cache (prefill, token by token, batched decode) gives the
// same logits as the others; and a batch's rows are bit for bit those of
// each sequence decoded alone.
TEST_P(ForwardVsTraining, Bf16KvCacheWithinRoundingOfF32) {
  const Case c = GetParam();
  auto be = backend::make_backend(c.backend);
  auto m = model::make_model(config(c.arch), *be);
  m->init(11);
  m->sync_compute_weights();
  const auto w = serve::testing::weights_of(*m);
  InferenceModel im(w, *be, DType::F32, DType::BF16);
  EXPECT_EQ(im.kv_dtype(), DType::BF16);
  const int64_t T = 20, V = m->config().vocab_size;
  const auto ids = some_ids(T, V, 3);
  const std::vector<float> f32 = m->logits(Tensor::from_i32(ids, {1, T})).to_f32_vector();
  const float spread = max_abs(f32);
  KvCachePool pool(m->config().n_layer, im.kv_dim(), size_t(1) << 24, nullptr, DType::BF16);
  auto s = pool.try_allocate(T);
  std::vector<float> all(size_t(T * V));
  im.prefill(*s, ids, all.data(), true);
  const float moved = max_abs_diff(all.data(), f32.data(), T * V);
  EXPECT_GT(moved, 0.f) << "a bf16 cache changed nothing";
  // bf16 keeps 8 significant bits (2^-9 relative a value); the logits moved
  // 5e-4 to 2e-3 of their spread on every model here, whatever the CPU's
  // vector level (the roundings are the same; only f32 sums differ).
  EXPECT_LT(moved, 1e-2f * spread);
  // Prefill, token-by-token decode and batched decode through the bf16 cache.
  serve::testing::expect_inference_matches_logits(*m, im, T, 6, {3, 9, 14}, 1e-2f * spread);
  // cpu against ref, both with a bf16 cache: their difference is the f32
  // sums' order, far below the rounding both share.
  auto ref = backend::make_backend("ref");
  InferenceModel im_ref(w, *ref, DType::F32, DType::BF16);
  auto r = pool.try_allocate(T);
  std::vector<float> all_ref(size_t(T * V));
  im_ref.prefill(*r, ids, all_ref.data(), true);
  EXPECT_LT(max_abs_diff(all.data(), all_ref.data(), T * V), 0.1f * moved + 1e-5f * spread);
  // Batched decode is each sequence's own decode, bit for bit.
  std::vector<std::unique_ptr<KvSequence>> alone, batched;
  std::vector<KvSequence*> ptrs;
  std::vector<int32_t> next;
  std::vector<float> row(static_cast<size_t>(V)), rows_alone;
  for (int64_t i = 0; i < 3; ++i) {
    const auto other = some_ids(4 + 5 * i + 1, V, 40 + uint64_t(i));
    const std::span<const int32_t> head(other.data(), other.size() - 1);
    for (auto* v : {&alone, &batched}) {
      v->push_back(pool.try_allocate(T));
      im.prefill(*v->back(), head, row.data());
    }
    KvSequence* one[] = {alone.back().get()};
    im.decode(one, {&other.back(), 1}, row.data());
    rows_alone.insert(rows_alone.end(), row.begin(), row.end());
    ptrs.push_back(batched.back().get());
    next.push_back(other.back());
  }
  std::vector<float> rows_batch(size_t(3 * V));
  im.decode(ptrs, next, rows_batch.data());
  EXPECT_EQ(rows_batch, rows_alone);
}

// A prefill long enough for the tiled attention with heads of 64 (on
// AVX512-BF16 CPUs the bf16 pair-product path, which also rounds the
// softmax weights to bf16 before P V): still within bf16's rounding of the
// f32 cache's logits, on cpu as on ref.
TEST(KvDtype, Bf16TiledPrefillWithinRoundingOfF32) {
  model::ModelConfig c = config("llama");
  c.n_embd = 128;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.max_seq_len = 64;
  auto ref = backend::make_backend("ref");
  auto m = model::make_model(c, *ref);
  m->init(7);
  m->sync_compute_weights();
  const auto w = serve::testing::weights_of(*m);
  const int64_t T = 48, V = c.vocab_size;
  const auto ids = some_ids(T, V, 9);
  const std::vector<float> f32 = m->logits(Tensor::from_i32(ids, {1, T})).to_f32_vector();
  const float spread = max_abs(f32);
  for (const char* name : {"ref", "cpu"}) {
    auto be = backend::make_backend(name);
    InferenceModel im(w, *be, DType::F32, DType::BF16);
    KvCachePool pool(c.n_layer, im.kv_dim(), size_t(1) << 24, nullptr, DType::BF16);
    auto s = pool.try_allocate(T);
    std::vector<float> all(size_t(T * V));
    im.prefill(*s, ids, all.data(), true);
    const float moved = max_abs_diff(all.data(), f32.data(), T * V);
    EXPECT_GT(moved, 0.f) << name;
    // Measured 1.9e-3 of the spread (the pair path's rounded softmax weights
    // included); bound as above.
    EXPECT_LT(moved, 1e-2f * spread) << name;
  }
}

TEST(KvDtype, NamesAndRefusals) {
  EXPECT_EQ(kv_dtype_from_name("f32"), DType::F32);
  EXPECT_EQ(kv_dtype_from_name("bf16"), DType::BF16);
  EXPECT_THROW(kv_dtype_from_name("f16"), ConfigError);
  auto be = backend::make_backend("cpu");
  auto m = model::make_model(config("llama"), *be);
  m->init(1);
  const auto w = serve::testing::weights_of(*m);
  try {
    InferenceModel im(w, *be, DType::F32, DType::I8);
    ADD_FAILURE() << "an int8 KV cache must be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("kv_dtype"), std::string::npos) << e.what();
  }
  // A cache of the other dtype is refused, not read as the wrong type.
  InferenceModel im(w, *be, DType::F32, DType::BF16);
  KvCachePool f32_pool(m->config().n_layer, im.kv_dim(), size_t(1) << 20);
  auto s = f32_pool.try_allocate(4);
  std::vector<float> logits(static_cast<size_t>(m->config().vocab_size));
  const int32_t id = 1;
  EXPECT_THROW(im.prefill(*s, {&id, 1}, logits.data()), KernelError);
}

TEST(WeightFormat, Names) {
  EXPECT_EQ(weight_format_from_name("none"), DType::F32);
  EXPECT_EQ(weight_format_from_name("int8"), DType::I8);
  EXPECT_EQ(weight_format_from_name("q8_0"), DType::Q8_0);
  EXPECT_EQ(weight_format_from_name("q4"), DType::Q4_0);
  EXPECT_THROW(weight_format_from_name("q3"), ConfigError);
}

}  // namespace
