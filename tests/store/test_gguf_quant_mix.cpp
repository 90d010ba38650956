// The type mix of keel's k-quant exports, worked out by hand from llama.cpp's
// rules (src/llama-quant.cpp) for the shapes keel's small models have: the
// head in q6_K, the more-bits layers of attn_v / attn_qkv / ffn_down, the
// 32-block fallbacks for rows that are not a multiple of 256, and what stays f32.
#include <gtest/gtest.h>

#include <map>

#include "io/gguf_kquants.h"
#include "store/gguf_quant_mix.h"

using namespace keel;
using keel::io::GgmlType;
using keel::store::KQuantPreset;

namespace {

// A two-layer llama of width 256 (ffn 704, keel's default for that width) and
// a vocabulary of 384, in the order keel writes it.
std::vector<store::MixTensor> llama2() {
  std::vector<store::MixTensor> t = {{"token_embd.weight", Shape{384, 256}},
                                     {"output_norm.weight", Shape{256}},
                                     {"output.weight", Shape{384, 256}}};
  for (int l = 0; l < 2; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"})
      t.push_back({b + n + ".weight", Shape{256, 256}});
    t.push_back({b + "attn_norm.weight", Shape{256}});
    t.push_back({b + "ffn_norm.weight", Shape{256}});
    t.push_back({b + "ffn_gate.weight", Shape{704, 256}});
    t.push_back({b + "ffn_up.weight", Shape{704, 256}});
    t.push_back({b + "ffn_down.weight", Shape{256, 704}});
  }
  return t;
}

std::map<std::string, GgmlType> mix(KQuantPreset p, const std::vector<store::MixTensor>& t,
                                    int n_layer, int n_expert = 0) {
  const auto types = store::kquant_mix(p, t, n_layer, n_expert);
  std::map<std::string, GgmlType> m;
  for (size_t i = 0; i < t.size(); ++i) m[t[i].name] = types[i];
  return m;
}

}  // namespace

TEST(GgufQuantMix, Q4_K_M_Llama) {
  auto m = mix(KQuantPreset::Q4_K_M, llama2(), 2);
  EXPECT_EQ(m["token_embd.weight"], GgmlType::Q4_K);
  EXPECT_EQ(m["output.weight"], GgmlType::Q6_K);
  EXPECT_EQ(m["output_norm.weight"], GgmlType::F32);
  EXPECT_EQ(m["blk.0.attn_norm.weight"], GgmlType::F32);
  // use_more_bits(i, 2): only the last layer (i >= 7 * 2 / 8).
  EXPECT_EQ(m["blk.0.attn_v.weight"], GgmlType::Q4_K);
  EXPECT_EQ(m["blk.1.attn_v.weight"], GgmlType::Q6_K);
  for (const char* n : {"attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"})
    for (int l = 0; l < 2; ++l)
      EXPECT_EQ(m["blk." + std::to_string(l) + "." + n + ".weight"], GgmlType::Q4_K) << n << l;
  // Rows of 704: q4_K falls back to q5_0, q6_K to q8_0.
  EXPECT_EQ(m["blk.0.ffn_down.weight"], GgmlType::Q5_0);
  EXPECT_EQ(m["blk.1.ffn_down.weight"], GgmlType::Q8_0);
}

TEST(GgufQuantMix, Q5_K_M_AndQ6_K_Llama) {
  auto m = mix(KQuantPreset::Q5_K_M, llama2(), 2);
  EXPECT_EQ(m["token_embd.weight"], GgmlType::Q5_K);
  EXPECT_EQ(m["output.weight"], GgmlType::Q6_K);
  EXPECT_EQ(m["blk.0.attn_v.weight"], GgmlType::Q5_K);
  EXPECT_EQ(m["blk.1.attn_v.weight"], GgmlType::Q6_K);
  EXPECT_EQ(m["blk.0.ffn_down.weight"], GgmlType::Q5_1);
  EXPECT_EQ(m["blk.1.ffn_down.weight"], GgmlType::Q8_0);
  auto s = mix(KQuantPreset::Q6_K, llama2(), 2);
  EXPECT_EQ(s["blk.0.attn_v.weight"], GgmlType::Q6_K);
  EXPECT_EQ(s["blk.0.ffn_down.weight"], GgmlType::Q8_0);
  EXPECT_EQ(s["token_embd.weight"], GgmlType::Q6_K);
  EXPECT_EQ(s["output_norm.weight"], GgmlType::F32);
  EXPECT_EQ(store::kquant_file_type(KQuantPreset::Q4_K_M), 15u);
  EXPECT_EQ(store::kquant_file_type(KQuantPreset::Q5_K_M), 17u);
  EXPECT_EQ(store::kquant_file_type(KQuantPreset::Q6_K), 18u);
}

TEST(GgufQuantMix, MoreBitsLayersOf8AndNarrowRows) {
  // Eight layers: use_more_bits is layers 0 (first eighth), 7 (last eighth), 3, 6.
  std::vector<store::MixTensor> t;
  for (int l = 0; l < 8; ++l) {
    t.push_back({"blk." + std::to_string(l) + ".attn_v.weight", Shape{256, 256}});
    t.push_back({"blk." + std::to_string(l) + ".ffn_down.weight", Shape{256, 512}});
  }
  // Rows of 48: no 32-block fits either, so f16; the head falls to q8_0 at 64.
  t.push_back({"blk.0.attn_q.weight", Shape{64, 48}});
  t.push_back({"output.weight", Shape{100, 64}});
  t.push_back({"position_embd.weight", Shape{128, 256}});
  auto m = mix(KQuantPreset::Q4_K_M, t, 8);
  for (int l = 0; l < 8; ++l) {
    const GgmlType want = (l == 0 || l == 3 || l == 6 || l == 7) ? GgmlType::Q6_K : GgmlType::Q4_K;
    EXPECT_EQ(m["blk." + std::to_string(l) + ".attn_v.weight"], want) << l;
    EXPECT_EQ(m["blk." + std::to_string(l) + ".ffn_down.weight"], want) << l;
  }
  EXPECT_EQ(m["blk.0.attn_q.weight"], GgmlType::F16);
  EXPECT_EQ(m["output.weight"], GgmlType::Q8_0);
  EXPECT_EQ(m["position_embd.weight"], GgmlType::F32);
}

TEST(GgufQuantMix, Gpt2AndMoe) {
  // gpt2: attn_qkv counts as attn_v; keel writes output.weight, so the
  // embedding is not the head and takes the base type.
  std::vector<store::MixTensor> g = {{"token_embd.weight", Shape{384, 256}},
                                     {"position_embd.weight", Shape{128, 256}},
                                     {"output.weight", Shape{384, 256}}};
  for (int l = 0; l < 2; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    g.push_back({b + "attn_qkv.weight", Shape{768, 256}});
    g.push_back({b + "attn_qkv.bias", Shape{768}});
    g.push_back({b + "ffn_down.weight", Shape{256, 1024}});
  }
  auto m = mix(KQuantPreset::Q4_K_M, g, 2);
  EXPECT_EQ(m["token_embd.weight"], GgmlType::Q4_K);
  EXPECT_EQ(m["position_embd.weight"], GgmlType::F32);
  EXPECT_EQ(m["output.weight"], GgmlType::Q6_K);
  EXPECT_EQ(m["blk.0.attn_qkv.weight"], GgmlType::Q4_K);
  EXPECT_EQ(m["blk.1.attn_qkv.weight"], GgmlType::Q6_K);
  EXPECT_EQ(m["blk.0.attn_qkv.bias"], GgmlType::F32);
  EXPECT_EQ(m["blk.1.ffn_down.weight"], GgmlType::Q6_K);
  // Without output.weight the embedding is the head: q6_K.
  g.erase(g.begin() + 2);
  EXPECT_EQ(mix(KQuantPreset::Q4_K_M, g, 2)["token_embd.weight"], GgmlType::Q6_K);

  // Eight routed experts: attn_output takes q5_K under Q4_K_M, the router
  // stays f32, and expert stacks find their layer in the name.
  std::vector<store::MixTensor> e = {{"blk.0.attn_output.weight", Shape{256, 256}},
                                     {"blk.0.ffn_gate_inp.weight", Shape{8, 256}},
                                     {"blk.1.ffn_down_exps.weight", Shape{8, 256, 256}},
                                     {"blk.1.ffn_down_shexp.weight", Shape{256, 256}},
                                     {"blk.0.ffn_down.weight", Shape{256, 256}}};
  auto me = mix(KQuantPreset::Q4_K_M, e, 2, 8);
  EXPECT_EQ(me["blk.0.attn_output.weight"], GgmlType::Q5_K);
  EXPECT_EQ(me["blk.0.ffn_gate_inp.weight"], GgmlType::F32);
  EXPECT_EQ(me["blk.1.ffn_down_exps.weight"], GgmlType::Q6_K);
  EXPECT_EQ(me["blk.1.ffn_down_shexp.weight"], GgmlType::Q6_K);
  EXPECT_EQ(me["blk.0.ffn_down.weight"], GgmlType::Q4_K);
}
