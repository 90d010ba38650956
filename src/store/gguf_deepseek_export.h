// keel's DeepSeek models (arch "deepseek") as llama.cpp's "deepseek2" GGUF
// architecture: the hyperparameter keys, the tensor names, and the split of
// kv_b_proj into the per-head attn_k_b / attn_v_b that llama.cpp's MLA reads.
// export_gguf (model_export.h) adds the shared metadata, tokenizer and weights.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "io/gguf_writer.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace keel::store {

// general.architecture of a keel deepseek model in GGUF.
inline constexpr const char* kDeepseek2GgufArch = "deepseek2";

// A keel::Error naming the model key when the configuration has no exact
// deepseek2 equivalent (e.g. model.capacity_factor > 0: keel drops tokens
// past an expert's capacity at inference too, llama.cpp never does).
void check_deepseek2_exportable(const model::ModelConfig& c);

// The "deepseek2.*" keys beyond the ones every architecture shares
// (context/embedding/feed-forward length, block count, head count): MLA run as
// multi-query attention over the latent (head_count_kv 1, key_length
// kv_lora_rank + qk_rope_head_dim, value_length kv_lora_rank, the per-head
// sizes as key_length_mla / value_length_mla), rope, and the MoE keys.
void add_deepseek2_metadata(io::GgufWriter& w, const model::ModelConfig& c);

// The GGUF name of a keel deepseek parameter or inference buffer with a
// one-to-one GGUF tensor ("model.layers.2.mlp.experts.up_proj.weight" ->
// "blk.2.ffn_up_exps.weight"); kv_b_proj (split in two) and unknown names are
// a keel::Error.
std::string deepseek2_gguf_name(const std::string& keel_name);

// Every GGUF tensor of the model under its deepseek2 name, f32, in keel's
// row-major shapes: the parameters, each MoE layer's routing bias as
// blk.N.exp_probs_b.bias, kv_b_proj (NH * (nope + v), R) as attn_k_b
// (NH, R, nope) and attn_v_b (NH, v, R), and a zero shared expert when
// model.n_shared_experts = 0 (llama.cpp requires one; zero adds exactly 0).
std::vector<io::NamedTensor> deepseek2_gguf_tensors(model::Model& m);

// The other direction, for reading deepseek2 files: the keel name of a GGUF
// tensor with a one-to-one keel parameter or buffer (nullopt otherwise), and
// kv_b_proj rebuilt from attn_k_b and attn_v_b (IoError on other shapes).
std::optional<std::string> keel_name_from_deepseek2_gguf(const std::string& gguf_name);
Tensor deepseek2_kv_b_from_gguf(const Tensor& k_b, const Tensor& v_b, const model::ModelConfig& c);

}  // namespace keel::store
