// llama.cpp's per-tensor type choice (src/llama-quant.cpp: tensor categories,
// llama_tensor_get_type_impl, tensor_type_fallback) restricted to the three
// presets keel writes, as of the llama.cpp bundled with node-llama-cpp 3.21.1.
#include "store/gguf_quant_mix.h"

#include <cstdio>

#include "core/error.h"
#include "io/gguf_kquants.h"

namespace keel::store {

namespace {

using io::GgmlType;

enum class Category { Output, TokenEmbd, AttnVLike, AttnK, AttnOutput, FfnDown, Other };

bool has(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// Substring tests in llama.cpp's order: the first that matches decides.
// attn_qkv and attn_kv_b count as attn_v: they hold the values.
Category category(const std::string& n) {
  if (n == "output.weight") return Category::Output;
  if (n == "token_embd.weight") return Category::TokenEmbd;
  if (has(n, "attn_qkv.weight") || has(n, "attn_kv_b.weight") || has(n, "attn_v.weight"))
    return Category::AttnVLike;
  if (has(n, "attn_k.weight")) return Category::AttnK;
  if (has(n, "attn_q.weight")) return Category::Other;
  if (has(n, "attn_output.weight")) return Category::AttnOutput;
  if (has(n, "ffn_up") || has(n, "ffn_gate")) return Category::Other;
  if (has(n, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}

bool quantizable(const MixTensor& t) {
  const std::string& n = t.name;
  return t.shape.rank() >= 2 && n.ends_with("weight") && !has(n, "_norm.weight") &&
         !has(n, "ffn_gate_inp.weight") && n != "position_embd.weight";
}

// The layers that get more bits: the first and last eighth and every third between.
bool use_more_bits(int i, int n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// A row length the chosen type cannot block: the k-quant's 32-block
// counterpart, and f16 when even that does not divide it.
GgmlType fallback(GgmlType t, int64_t cols) {
  if (cols % io::ggml_block_elems(t) == 0) return t;
  GgmlType r = t == GgmlType::Q4_K   ? GgmlType::Q5_0
               : t == GgmlType::Q5_K ? GgmlType::Q5_1
               : t == GgmlType::Q6_K ? GgmlType::Q8_0
                                     : t;
  return cols % io::ggml_block_elems(r) == 0 ? r : GgmlType::F16;
}

}  // namespace

uint32_t kquant_file_type(KQuantPreset p) {
  return p == KQuantPreset::Q4_K_M ? 15u : p == KQuantPreset::Q5_K_M ? 17u : 18u;
}

std::vector<GgmlType> kquant_mix(KQuantPreset p, const std::vector<MixTensor>& tensors, int n_layer,
                                 int n_expert) {
  const bool km = p == KQuantPreset::Q4_K_M || p == KQuantPreset::Q5_K_M;
  const GgmlType base = p == KQuantPreset::Q4_K_M   ? GgmlType::Q4_K
                        : p == KQuantPreset::Q5_K_M ? GgmlType::Q5_K
                                                    : GgmlType::Q6_K;
  int n_wv = 0;
  bool tied = true;  // no output.weight: the embedding doubles as the head
  for (const auto& t : tensors) {
    const Category c = category(t.name);
    if (c == Category::AttnVLike) ++n_wv;
    if (c == Category::Output) tied = false;
  }
  int i_wv = 0, i_down = 0;
  std::vector<GgmlType> out;
  for (const auto& t : tensors) {
    if (!quantizable(t)) {
      out.push_back(GgmlType::F32);
      continue;
    }
    const int64_t cols = t.shape[t.shape.rank() - 1];
    const Category c = category(t.name);
    GgmlType type = base;
    if (c == Category::Output || (tied && c == Category::TokenEmbd)) {
      type = cols % io::ggml_block_elems(base) != 0 ? GgmlType::Q8_0 : GgmlType::Q6_K;
    } else if (c == Category::AttnVLike) {
      if (km && use_more_bits(i_wv, n_wv)) type = GgmlType::Q6_K;
      if (n_expert == 8) type = GgmlType::Q8_0;
      ++i_wv;
    } else if (c == Category::AttnK) {
      if (n_expert == 8) type = GgmlType::Q8_0;
    } else if (c == Category::FfnDown) {
      // MoE files interleave experts, so the layer comes from the name.
      int layer = i_down;
      if (n_expert > 1 && std::sscanf(t.name.c_str(), "blk.%d.", &layer) != 1)
        fail("GGUF {}: cannot tell the layer of tensor '{}'", "k-quant export", t.name);
      if (km && use_more_bits(layer, n_layer)) type = GgmlType::Q6_K;
      ++i_down;
    } else if (c == Category::AttnOutput) {
      if (p == KQuantPreset::Q4_K_M && n_expert == 8) type = GgmlType::Q5_K;
    }
    out.push_back(fallback(type, cols));
  }
  return out;
}

}  // namespace keel::store
