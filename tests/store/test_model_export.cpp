// Export and import: the Hugging Face folder loads back to the same logits,
// matches an independent PyTorch model written with Hugging Face's own
// conventions (Conv1D layout, rotate-half RoPE), the GGUF export reads back
// with the right names, shapes and bytes, and bad folders are clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/gguf_reader.h"
#include "model/model.h"
#include "store/model_export.h"
#include "store/model_import.h"
#include "store_test_util.h"

using namespace keel;
using keel::store::testing::temp_dir;
using keel::store::testing::tokenizer;
namespace fs = std::filesystem;

namespace {

model::ModelConfig config(const std::string& arch) {
  model::ModelConfig c;
  c.arch = arch;
  c.vocab_size = tokenizer().vocab_size() + 4;  // a padded vocabulary
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == "llama" ? 2 : 0;
  c.n_embd = 64;
  c.max_seq_len = 32;
  return c;
}

std::unique_ptr<model::Model> make(backend::Backend& be, const std::string& arch, uint64_t seed) {
  auto m = model::make_model(config(arch), be);
  m->init(seed);
  m->sync_compute_weights();
  return m;
}

std::vector<int32_t> sample_ids() {
  return tokenizer().encode("the quick dog, isn't it? 12");
}

std::vector<float> logits_of(model::Model& m, const std::vector<int32_t>& ids) {
  return m.logits(Tensor::from_i32(ids, Shape{1, int64_t(ids.size())})).to_f32_vector();
}

class ExportArch : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST(ModelExport, RopeRowPermutationByHand) {
  // Two heads of size 4, one column holding the row index.
  const Tensor w = Tensor::from_f32({0, 1, 2, 3, 4, 5, 6, 7}, Shape{8, 1});
  // keel row 2i + j -> Hugging Face row j * HS/2 + i: per head [r0, r2, r1, r3].
  const Tensor hf = store::rope_rows_keel_to_hf(w, 2);
  EXPECT_EQ(hf.to_f32_vector(), (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  EXPECT_EQ(store::rope_rows_hf_to_keel(hf, 2).to_f32_vector(), w.to_f32_vector());
  // Head size 8: keel [0..7] -> [0, 2, 4, 6, 1, 3, 5, 7].
  const Tensor w8 = Tensor::from_f32({0, 1, 2, 3, 4, 5, 6, 7}, Shape{8, 1});
  EXPECT_EQ(store::rope_rows_keel_to_hf(w8, 1).to_f32_vector(),
            (std::vector<float>{0, 2, 4, 6, 1, 3, 5, 7}));
  EXPECT_THROW(store::rope_rows_keel_to_hf(Tensor::from_f32({0, 1, 2}, Shape{3, 1}), 1), Error);
}

TEST_P(ExportArch, HfFolderLoadsBackToTheSameLogits) {
  auto be = backend::make_backend("cpu");
  auto m = make(*be, GetParam(), 3);
  const std::string dir = temp_dir("roundtrip_" + GetParam());
  store::export_hf_folder(dir, *m, tokenizer());
  for (const char* f : {"model.safetensors", "config.json", "vocab.json", "merges.txt",
                        "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  store::LoadedModel back = store::load_model_folder(dir, *be);
  EXPECT_EQ(back.config.n_layer, 2);
  EXPECT_EQ(back.config.vocab_size, config(GetParam()).vocab_size);
  EXPECT_EQ(back.tokenizer.id(), tokenizer().id());
  const auto ids = sample_ids();
  EXPECT_EQ(logits_of(*back.model, ids), logits_of(*m, ids));

  // --init: a model started from another seed takes the folder's weights.
  auto fresh = make(*be, GetParam(), 77);
  ASSERT_NE(logits_of(*fresh, ids), logits_of(*m, ids));
  store::init_weights_from(dir, *fresh);
  EXPECT_EQ(logits_of(*fresh, ids), logits_of(*m, ids));
}

TEST_P(ExportArch, HfFolderMatchesPyTorchWithHuggingFaceConventions) {
  auto be = backend::make_backend("ref");
  auto m = make(*be, GetParam(), 4);
  const std::string dir = temp_dir("torch_" + GetParam());
  store::export_hf_folder(dir, *m, tokenizer());
  const auto ids = sample_ids();
  io::write_file_atomic(dir + "/ids.json", nlohmann::json(ids).dump());
  const std::string cmd = std::string("/usr/bin/python3 ") + KEEL_SOURCE_DIR +
                          "/tests/store/hf_folder_torch.py " + dir + " " + dir + "/ids.json " +
                          dir + "/logits.f64";
  const int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << cmd;
  const std::string raw = io::read_file_bytes(dir + "/logits.f64");
  const auto keel_logits = logits_of(*m, ids);
  ASSERT_EQ(raw.size(), keel_logits.size() * sizeof(double));
  double max_diff = 0;
  for (size_t i = 0; i < keel_logits.size(); ++i) {
    double ref;
    std::memcpy(&ref, raw.data() + i * sizeof(double), sizeof(double));
    max_diff = std::max(max_diff, std::fabs(ref - double(keel_logits[i])));
  }
  EXPECT_LT(max_diff, 1e-5) << GetParam();
  std::printf("[%s] max |keel - torch(HF conventions)| logit difference: %.3g\n",
              GetParam().c_str(), max_diff);
}

TEST_P(ExportArch, GgufExportReadsBack) {
  auto be = backend::make_backend("cpu");
  auto m = make(*be, GetParam(), 5);
  const std::string dir = temp_dir("gguf_" + GetParam());
  const auto& c = m->config();
  for (const auto wt : {store::GgufWeights::F32, store::GgufWeights::F16, store::GgufWeights::Q8_0,
                        store::GgufWeights::Q4_0}) {
    const std::string path = dir + "/m.gguf";
    store::export_gguf(path, *m, tokenizer(), wt, *be);
    const io::GgufFile f = io::GgufFile::open(path);
    const std::string a = GetParam();
    EXPECT_EQ(f.get_string("general.architecture"), a);
    EXPECT_EQ(f.get_int(a + ".block_count"), 2);
    EXPECT_EQ(f.get_int(a + ".embedding_length"), 64);
    EXPECT_EQ(f.get_int(a + ".feed_forward_length"), c.ffn_hidden);
    EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
    EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "gpt-2");
    const auto& tokens = f.get_string_array("tokenizer.ggml.tokens");
    ASSERT_EQ(int64_t(tokens.size()), c.vocab_size);
    EXPECT_EQ(tokens[size_t(' ')], "\xc4\xa0");  // byte 0x20 shown as U+0120
    EXPECT_EQ(tokens[size_t(tokenizer().eot_id())], "<|endoftext|>");
    EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type")[size_t(tokenizer().eot_id())], 3);
    EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type").back(), 5);
    EXPECT_EQ(int64_t(f.get_string_array("tokenizer.ggml.merges").size()),
              tokenizer().num_merges());
    EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), tokenizer().eot_id());
    if (a == "llama") {
      EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 2);
      EXPECT_EQ(f.get_int("llama.rope.dimension_count"), 16);
      EXPECT_TRUE(f.has_tensor("output.weight"));
    } else {
      EXPECT_TRUE(f.has_tensor("position_embd.weight"));
      EXPECT_TRUE(f.has_tensor("blk.1.attn_qkv.bias"));
      // Tied head written out, as llama.cpp's converter does (older loaders require it).
      ASSERT_TRUE(f.has_tensor("output.weight"));
      EXPECT_EQ(f.get_f32("output.weight").to_f32_vector(),
                f.get_f32("token_embd.weight").to_f32_vector());
    }
    ASSERT_EQ(f.tensors().size(), m->parameters().size() + (a == "gpt2" ? 1 : 0));
    for (auto* p : m->parameters()) {
      const std::string g = store::gguf_tensor_name(a, p->name);
      const auto& info = f.tensor_info(g);
      EXPECT_EQ(info.shape(), p->value.shape()) << g;
      const DType want = p->value.rank() == 1 || wt == store::GgufWeights::F32 ? DType::F32
                         : wt == store::GgufWeights::F16                       ? DType::F16
                         : wt == store::GgufWeights::Q8_0                      ? DType::Q8_0
                                                                               : DType::Q4_0;
      EXPECT_EQ(info.dtype, want) << g;
      const auto got = f.get_f32(g).to_f32_vector(), exp = p->value.to_f32_vector();
      float amax = 0;
      for (float x : exp) amax = std::max(amax, std::fabs(x));
      // f16 keeps ~11 bits, q8_0 half a step of amax/127 per 32-block, q4_0 a step of amax/8
      // (its grid runs from -8 d to 7 d with d = -max/8: the far side rounds by up to a step);
      // all bounded by the tensor's amax.
      const float tol = want == DType::F32    ? 0.f
                        : want == DType::F16  ? amax / 1024
                        : want == DType::Q8_0 ? amax / 200
                                              : amax / 7.9f;
      for (size_t i = 0; i < exp.size(); ++i) ASSERT_NEAR(got[i], exp[i], tol) << g << " " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, ExportArch, ::testing::Values("gpt2", "llama"));

TEST(ModelImport, BadFoldersAreClearErrors) {
  auto be = backend::make_backend("cpu");
  auto m = make(*be, "llama", 6);
  const std::string dir = temp_dir("bad");
  store::export_hf_folder(dir, *m, tokenizer());
  auto error_of = [&](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const IoError& e) {
      return e.what();
    }
    return "";
  };
  // Another architecture in config.json names the key.
  nlohmann::json cfg = nlohmann::json::parse(io::read_file_bytes(dir + "/config.json"));
  cfg["model_type"] = "bert";
  io::write_file_atomic(dir + "/config.json", cfg.dump());
  EXPECT_NE(error_of([&] { store::load_model_folder(dir, *be); }).find("model_type"),
            std::string::npos);
  cfg["model_type"] = "llama";
  cfg["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  io::write_file_atomic(dir + "/config.json", cfg.dump());
  EXPECT_NE(error_of([&] { store::load_model_folder(dir, *be); }).find("rope_scaling"),
            std::string::npos);
  // A model of another shape: the misshapen tensor is named.
  auto other = model::make_model(
      [] {
        auto c = config("llama");
        c.n_embd = 32;
        return c;
      }(),
      *be);
  cfg.erase("rope_scaling");
  io::write_file_atomic(dir + "/config.json", cfg.dump());
  EXPECT_NE(
      error_of([&] { store::init_weights_from(dir, *other); }).find("model.embed_tokens.weight"),
      std::string::npos);
  // --init with a run whose tokenizer differs.
  const data::Tokenizer other_tok = [] {
    const std::string doc = "another corpus entirely, with other merges";
    std::vector<std::string_view> v = {doc};
    data::BpeTrainOptions o;
    o.vocab_size = 270;
    return data::Tokenizer::train(v, o);
  }();
  EXPECT_NE(error_of([&] { store::init_weights_from(dir, *m, &other_tok); }).find("tokenizer"),
            std::string::npos);
  EXPECT_NO_THROW(store::init_weights_from(dir, *m, &tokenizer()));
  // --init from a gpt2 folder into a llama run.
  auto g = make(*be, "gpt2", 1);
  const std::string gdir = temp_dir("bad_gpt2");
  store::export_hf_folder(gdir, *g, tokenizer());
  EXPECT_NE(error_of([&] { store::init_weights_from(gdir, *m); }).find("gpt2"), std::string::npos);
  // No tokenizer files.
  fs::remove(fs::path(dir) / "vocab.json");
  fs::remove(fs::path(dir) / "tokenizer.json");
  EXPECT_NE(error_of([&] { store::load_model_folder(dir, *be); }).find("tokenizer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { store::load_model_folder(dir + "/nope", *be); }).find("not found"),
            std::string::npos);
}

TEST(ModelImport, TokenizerJsonAloneIsEnough) {
  auto be = backend::make_backend("cpu");
  auto m = make(*be, "gpt2", 6);
  const std::string dir = temp_dir("tokjson");
  store::export_hf_folder(dir, *m, tokenizer());
  fs::remove(fs::path(dir) / "vocab.json");
  fs::remove(fs::path(dir) / "merges.txt");
  EXPECT_EQ(store::load_folder_tokenizer(dir).id(), tokenizer().id());
}

// deepseek2: the keys loaders of every era read, with values that change nothing
// (no rope scaling, so the yarn log multiplier is neutral).
TEST(ExportGguf, Deepseek2CarriesTheKeysOlderLoadersRequire) {
  auto be = backend::make_backend("cpu");
  model::ModelConfig c = config("deepseek");
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 16;
  c.n_routed_experts = 4;
  c.top_k = 2;
  c.moe_ffn_hidden = 32;
  auto m = model::make_model(c, *be);
  m->init(5);
  m->sync_compute_weights();
  const std::string path = temp_dir("deepseek2") + "/m.gguf";
  store::export_gguf(path, *m, tokenizer(), store::GgufWeights::F32, *be);
  const auto f = io::GgufFile::open(path);
  EXPECT_EQ(f.get_string("general.architecture"), "deepseek2");
  EXPECT_EQ(f.get_float("deepseek2.rope.scaling.yarn_log_multiplier"), 0.0);
  EXPECT_FALSE(f.has("deepseek2.rope.scaling.type"));  // no scaling at all
  for (const char* k : {"deepseek2.leading_dense_block_count", "deepseek2.expert_shared_count",
                        "deepseek2.expert_feed_forward_length", "deepseek2.attention.kv_lora_rank",
                        "deepseek2.attention.q_lora_rank", "deepseek2.expert_gating_func"})
    EXPECT_TRUE(f.has(k)) << k;
}
