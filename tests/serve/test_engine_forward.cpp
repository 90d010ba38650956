// The inference forward (prefill and batched decode over the KV cache)
// against the training forward Model::logits, on ref and cpu, for gpt2 and
// llama; and the quantized weight formats against f32.
#include <gtest/gtest.h>

#include <cmath>

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
  float spread = 0;
  for (float v : f32) spread = std::max(spread, std::fabs(v));
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

TEST(WeightFormat, Names) {
  EXPECT_EQ(weight_format_from_name("none"), DType::F32);
  EXPECT_EQ(weight_format_from_name("int8"), DType::I8);
  EXPECT_EQ(weight_format_from_name("q8_0"), DType::Q8_0);
  EXPECT_EQ(weight_format_from_name("q4"), DType::Q4_0);
  EXPECT_THROW(weight_format_from_name("q3"), ConfigError);
}

}  // namespace
