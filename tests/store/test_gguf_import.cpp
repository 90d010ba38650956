// GGUF import: a file keel exports reads back into the same parameters,
// configuration and tokenizer (bit for bit in f32), a model loaded from it
// computes the same logits, and everything keel's models cannot express is an
// IoError naming the key or the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "backend/backend.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "model/model.h"
#include "store/gguf_import.h"
#include "store/model_export.h"
#include "store_test_util.h"

using namespace keel;
using keel::store::testing::temp_dir;
using keel::store::testing::tokenizer;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<model::Model> make(backend::Backend& be, const std::string& arch, uint64_t seed) {
  model::ModelConfig c;
  c.arch = arch;
  c.vocab_size = tokenizer().vocab_size() + 2;  // padded rows travel as unused tokens
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == "llama" ? 2 : 0;
  c.n_embd = 32;
  c.max_seq_len = 24;
  auto m = model::make_model(c, be);
  m->init(seed);
  m->sync_compute_weights();
  return m;
}

// Rewrites a GGUF file through `edit`, which may change metadata (by key) or
// tensors (by name) before they are written again.
void rewrite(const std::string& from, const std::string& to,
             const std::function<bool(const std::string&, io::GgufWriter&)>& edit_key,
             const std::function<bool(const std::string&, io::GgufWriter&)>& edit_tensor) {
  const io::GgufFile f = io::GgufFile::open(from);
  io::GgufWriter w;
  for (const auto& [k, v] : f.metadata()) {
    if (edit_key(k, w)) continue;
    switch (v.type) {
      case io::GgufType::String:
        w.add_string(k, v.s);
        break;
      case io::GgufType::F32:
        w.add_f32(k, float(v.f));
        break;
      case io::GgufType::Bool:
        w.add_bool(k, v.i != 0);
        break;
      case io::GgufType::I32:
        w.add_i32(k, int32_t(v.i));
        break;
      case io::GgufType::Array:
        if (v.elem == io::GgufType::String) {
          w.add_string_array(k, v.strings);
        } else {
          std::vector<int32_t> ints(v.ints.begin(), v.ints.end());
          w.add_i32_array(k, ints);
        }
        break;
      default:
        w.add_u32(k, uint32_t(v.i));
        break;
    }
  }
  for (const auto& t : f.tensors())
    if (!edit_tensor(t.name, w)) w.add_tensor(t.name, f.get(t.name));
  w.write(to);
}

const auto keep = [](const std::string&, io::GgufWriter&) { return false; };

void expect_io_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one naming " << needle;
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

class GgufImport : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(GgufImport, F32ExportReadsBackBitForBit) {
  const std::string arch = GetParam();
  auto be = backend::make_backend("cpu");
  auto m = make(*be, arch, 3);
  const std::string path = temp_dir("gguf_import_" + arch) + "/m.gguf";
  store::export_gguf(path, *m, tokenizer(), store::GgufWeights::F32, *be);
  ASSERT_TRUE(store::is_gguf_file(path));

  const store::ModelWeights w = store::read_gguf_model(path);
  const auto& c = m->config();
  EXPECT_EQ(w.config.arch, arch);
  EXPECT_EQ(w.config.vocab_size, c.vocab_size);
  EXPECT_EQ(w.config.n_layer, c.n_layer);
  EXPECT_EQ(w.config.n_head, c.n_head);
  EXPECT_EQ(w.config.n_kv_head, c.n_kv_head);
  EXPECT_EQ(w.config.n_embd, c.n_embd);
  EXPECT_EQ(w.config.ffn_hidden, c.ffn_hidden);
  EXPECT_EQ(w.config.max_seq_len, c.max_seq_len);
  EXPECT_EQ(w.config.norm_eps, c.norm_eps);
  EXPECT_EQ(w.tokenizer.id(), tokenizer().id());
  EXPECT_EQ(w.tensors.size(), m->parameters().size());
  for (auto* p : m->parameters()) {
    ASSERT_TRUE(w.tensors.count(p->name)) << p->name;
    EXPECT_EQ(w.tensors.at(p->name).to_f32_vector(), p->value.to_f32_vector()) << p->name;
  }

  // A model loaded from the file computes what the original computes.
  auto fresh = make(*be, arch, 99);
  store::load_gguf_weights(w, *fresh);
  const std::vector<int32_t> ids = tokenizer().encode("the quick dog, isn't it");
  const Tensor x = Tensor::from_i32(ids, Shape{1, int64_t(ids.size())});
  EXPECT_EQ(fresh->logits(x).to_f32_vector(), m->logits(x).to_f32_vector());

  // A parameter the file lacks, and a file of another architecture, are named.
  const std::string dir = fs::path(path).parent_path().string();
  const std::string dropped = arch == "gpt2" ? "blk.1.ffn_up.bias" : "blk.1.ffn_gate.weight";
  rewrite(path, dir + "/fewer.gguf", keep,
          [&](const std::string& n, io::GgufWriter&) { return n == dropped; });
  expect_io_error(
      [&] { store::load_gguf_weights(store::read_gguf_model(dir + "/fewer.gguf"), *fresh); },
      "no tensor for parameter '" + *store::keel_name_from_gguf(arch, dropped) + "'");
  auto other = make(*be, arch == "gpt2" ? "llama" : "gpt2", 1);
  expect_io_error([&] { store::load_gguf_weights(w, *other); }, "holds a " + arch + " model");
}

// k-quant presets on a width-256 model (whole super-blocks): every tensor
// reads back as the file decodes it, within the format's rounding of the
// original, and the loaded model runs. gpt2's head, stored in q6_K beside a
// q4_K/q5_K embedding, is accepted; keel keeps the embedding.
TEST_P(GgufImport, KQuantExportsReadBack) {
  const std::string arch = GetParam();
  auto be = backend::make_backend("cpu");
  model::ModelConfig c;
  c.arch = arch;
  c.vocab_size = tokenizer().vocab_size();
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == "llama" ? 2 : 0;
  c.n_embd = 256;
  c.max_seq_len = 16;
  auto m = model::make_model(c, *be);
  m->init(5);
  m->sync_compute_weights();
  const std::string dir = temp_dir("gguf_kquant_" + arch);
  for (const auto wt :
       {store::GgufWeights::Q4_K_M, store::GgufWeights::Q5_K_M, store::GgufWeights::Q6_K}) {
    const std::string path = dir + "/m.gguf";
    store::export_gguf(path, *m, tokenizer(), wt, *be);
    const io::GgufFile f = io::GgufFile::open(path);
    EXPECT_EQ(f.get_int("general.file_type"), wt == store::GgufWeights::Q4_K_M   ? 15
                                              : wt == store::GgufWeights::Q5_K_M ? 17
                                                                                 : 18);
    EXPECT_EQ(f.tensor_info("output.weight").ggml, io::GgmlType::Q6_K);
    const store::ModelWeights w = store::read_gguf_model(path);
    for (auto* p : m->parameters()) {
      const std::string g = store::gguf_tensor_name(arch, p->name);
      ASSERT_TRUE(w.tensors.count(p->name)) << p->name;
      const auto got = w.tensors.at(p->name).to_f32_vector();
      EXPECT_EQ(got, f.get_f32(g).to_f32_vector()) << g;
      const auto exp = p->value.to_f32_vector();
      float amax = 0;
      for (float x : exp) amax = std::max(amax, std::fabs(x));
      for (size_t i = 0; i < exp.size(); ++i)
        ASSERT_NEAR(got[i], exp[i], amax / 7.9f) << g << " " << i;
    }
    auto loaded = model::make_model(w.config, *be);
    store::load_gguf_weights(w, *loaded);
    const std::vector<int32_t> ids = tokenizer().encode("the quick dog");
    const Tensor x = Tensor::from_i32(ids, Shape{1, int64_t(ids.size())});
    for (float v : loaded->logits(x).to_f32_vector()) ASSERT_TRUE(std::isfinite(v));
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, GgufImport, ::testing::Values("gpt2", "llama"));

TEST(GgufImportErrors, WhatKeelCannotExpressIsNamed) {
  auto be = backend::make_backend("cpu");
  const std::string dir = temp_dir("gguf_errors");
  auto llama = make(*be, "llama", 4);
  auto gpt2 = make(*be, "gpt2", 5);
  const std::string l = dir + "/llama.gguf", g = dir + "/gpt2.gguf";
  store::export_gguf(l, *llama, tokenizer(), store::GgufWeights::F32, *be);
  store::export_gguf(g, *gpt2, tokenizer(), store::GgufWeights::F32, *be);

  const auto set_string = [](const std::string& key, const std::string& value) {
    return [=](const std::string& k, io::GgufWriter& w) {
      if (k != key) return false;
      w.add_string(k, value);
      return true;
    };
  };
  rewrite(l, dir + "/arch.gguf", set_string("general.architecture", "mamba"), keep);
  expect_io_error([&] { store::read_gguf_model(dir + "/arch.gguf"); },
                  "general.architecture = 'mamba'");
  rewrite(l, dir + "/pre.gguf", set_string("tokenizer.ggml.pre", "llama-bpe"), keep);
  expect_io_error([&] { store::read_gguf_model(dir + "/pre.gguf"); },
                  "tokenizer.ggml.pre = 'llama-bpe'");
  rewrite(
      l, dir + "/scaling.gguf",
      [](const std::string& k, io::GgufWriter& w) {
        if (k == "general.architecture") w.add_string("llama.rope.scaling.type", "linear");
        return false;
      },
      keep);
  expect_io_error([&] { store::read_gguf_model(dir + "/scaling.gguf"); },
                  "llama.rope.scaling.type = 'linear'");
  rewrite(g, dir + "/untied.gguf", keep, [&](const std::string& n, io::GgufWriter& w) {
    if (n != "output.weight") return false;
    Tensor t = io::GgufFile::open(g).get_f32(n);
    t.data<float>()[0] += 1.f;
    w.add_tensor(n, t);
    return true;
  });
  expect_io_error([&] { store::read_gguf_model(dir + "/untied.gguf"); },
                  "tensor 'output.weight' differs from 'token_embd.weight'");
  rewrite(g, dir + "/extra.gguf", keep, [&](const std::string& n, io::GgufWriter& w) {
    if (n == "output_norm.bias")
      w.add_tensor("blk.0.ffn_gate.weight", Tensor::zeros(Shape{4, 4}, DType::F32));
    return false;
  });
  expect_io_error([&] { store::read_gguf_model(dir + "/extra.gguf"); },
                  "tensor 'blk.0.ffn_gate.weight' is not part of keel's gpt2 model");

  // Not a GGUF at all: the engine's loader says so.
  std::ofstream(dir + "/not.gguf") << "GGUX and then some";
  EXPECT_FALSE(store::is_gguf_file(dir + "/not.gguf"));
  expect_io_error([&] { store::load_model_weights(dir + "/not.gguf"); }, "not a GGUF file");
}

// deepseek2: kv_b_proj comes back from attn_k_b / attn_v_b exactly (a pure
// permutation), the routing biases too, and the zero shared expert keel writes
// for a model without one is dropped again.
TEST(GgufImportDeepseek, ReadsBackBitForBit) {
  auto be = backend::make_backend("cpu");
  for (int64_t shared : {0, 1}) {
    model::ModelConfig c;
    c.arch = "deepseek";
    c.vocab_size = tokenizer().vocab_size();
    c.n_layer = 2;
    c.n_head = 4;
    c.n_embd = 32;
    c.max_seq_len = 24;
    c.n_dense_layers = 1;
    c.kv_lora_rank = 16;
    c.qk_nope_head_dim = 8;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 8;
    c.n_routed_experts = 4;
    c.top_k = 2;
    c.moe_ffn_hidden = 16;
    c.n_shared_experts = shared;
    c.gating = shared ? "softmax" : "sigmoid";
    auto m = model::make_model(c, *be);
    m->init(11);
    for (auto& [name, t] : m->inference_buffers()) {  // non-zero routing biases
      float* b = t->data<float>();
      for (int64_t i = 0; i < t->numel(); ++i) b[i] = 0.01f * float(i + 1);
    }
    m->sync_compute_weights();
    const std::string path = temp_dir("gguf_deepseek" + std::to_string(shared)) + "/m.gguf";
    store::export_gguf(path, *m, tokenizer(), store::GgufWeights::F32, *be);
    const store::ModelWeights w = store::read_gguf_model(path);
    EXPECT_EQ(w.config.arch, "deepseek");
    EXPECT_EQ(w.config.n_shared_experts, shared);
    EXPECT_EQ(w.config.gating, c.gating);
    EXPECT_EQ(w.config.qk_nope_head_dim, 8);
    EXPECT_EQ(w.tensors.size(), m->parameters().size() + m->inference_buffers().size());
    for (auto* p : m->parameters())
      EXPECT_EQ(w.tensors.at(p->name).to_f32_vector(), p->value.to_f32_vector()) << p->name;
    auto fresh = model::make_model(w.config, *be);
    store::load_gguf_weights(w, *fresh);
    for (auto& [name, t] : fresh->inference_buffers())
      EXPECT_EQ(t->to_f32_vector(), w.tensors.at(name).to_f32_vector()) << name;
    const std::vector<int32_t> ids = tokenizer().encode("the quick dog, isn't it");
    const Tensor x = Tensor::from_i32(ids, Shape{1, int64_t(ids.size())});
    EXPECT_EQ(fresh->logits(x).to_f32_vector(), m->logits(x).to_f32_vector()) << shared;
  }
}
