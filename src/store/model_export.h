// Carrying a trained model out of keel: a Hugging Face style folder
// (model.safetensors, config.json, GPT-2 style tokenizer files) that
// transformers' GPT2LMHeadModel / LlamaForCausalLM load, and a single GGUF
// file (llama, gpt2 or deepseek2 architecture, tokenizer embedded) that
// llama.cpp loads.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "data/tokenizer.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace keel::store {

// Files of an exported Hugging Face style folder.
inline constexpr const char* kHfWeightsFile = "model.safetensors";
inline constexpr const char* kHfConfigFile = "config.json";
inline constexpr const char* kHfVocabFile = "vocab.json";
inline constexpr const char* kHfMergesFile = "merges.txt";
inline constexpr const char* kHfTokenizerFile = "tokenizer.json";
inline constexpr const char* kHfTokenizerConfigFile = "tokenizer_config.json";

// Hugging Face config.json for the model (GPT2LMHeadModel or LlamaForCausalLM);
// bos/eos are the tokenizer's <|endoftext|> when it has one.
nlohmann::json hf_config_json(const model::ModelConfig& cfg, const data::Tokenizer& tok);

// keel's llama rotates adjacent pairs (x[2i], x[2i+1]) of each head; Hugging
// Face's rotates x[i] with x[i + HS/2]. These move the rows of a q or k
// projection weight (n_heads * HS, C) between the two layouts, per head:
// keel row 2i + j <-> Hugging Face row j * HS/2 + i.
Tensor rope_rows_keel_to_hf(const Tensor& w, int64_t n_heads);
// Hugging Face's Conv1D stores GPT-2's attention and MLP projections as
// (in, out), keel as (out, in): true for those parameter names (keel names).
bool is_gpt2_conv1d_weight(const std::string& name);
// A rank-2 f32 tensor transposed (a new tensor).
Tensor transpose_2d(const Tensor& w);
Tensor rope_rows_hf_to_keel(const Tensor& w, int64_t n_heads);

// The model's parameters under Hugging Face names and layouts (gpt2: the
// Conv1D weights transposed to (in, out); llama: q/k rows permuted), f32.
std::vector<io::NamedTensor> hf_tensors(model::Model& model);

// Writes dir/{model.safetensors, config.json, vocab.json, merges.txt,
// tokenizer.json, tokenizer_config.json}; every file atomically.
void export_hf_folder(const std::string& dir, model::Model& model, const data::Tokenizer& tok);

// Weight type of the 2-D tensors in a GGUF export; 1-D tensors (norms,
// biases) always stay f32, and under Q8_0 / Q4_0 (llama.cpp's rounding, every
// matrix in that type: a "pure" file) a matrix whose rows are not a
// multiple of 32 falls back to f16 (as llama.cpp's converter does). Q4_K_M,
// Q5_K_M and Q6_K are llama.cpp's presets: each tensor gets the type
// llama.cpp's quantizer would give it (gguf_quant_mix.h), k-quants included.
enum class GgufWeights { F32, F16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K };
// "f32" | "f16" | "q8_0" | "q4_0" | "q4_k_m" | "q5_k_m" | "q6_k"; anything else
// is a keel::Error naming the value.
GgufWeights gguf_weights_from_name(const std::string& s);

// The GGUF tensor name of a keel parameter ("model.layers.3.self_attn.q_proj.weight"
// -> "blk.3.attn_q.weight"); an unknown name is a keel::Error, and so is a
// deepseek kv_b_proj, which becomes two tensors (gguf_deepseek_export.h).
std::string gguf_tensor_name(const std::string& arch, const std::string& keel_name);
// The inverse for llama and gpt2 ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); nullopt for a name keel's model of that architecture
// does not have.
std::optional<std::string> keel_name_from_gguf(const std::string& arch,
                                               const std::string& gguf_name);

// Writes a GGUF file for llama.cpp: general.architecture = "llama", "gpt2" or
// (keel's deepseek) "deepseek2", the hyperparameters, the tokenizer
// (tokenizer.ggml.model "gpt2", pre-tokenizer "gpt-2", tokens, token types,
// merges, <|endoftext|> as bos/eos) and the weights; f16/q8_0/q4_0 apply to
// matrices and expert stacks, except the f32 MoE router. Quantization
// runs on `be`. A deepseek configuration deepseek2 cannot express is a
// keel::Error naming the model key (check_deepseek2_exportable).
void export_gguf(const std::string& path, model::Model& model, const data::Tokenizer& tok,
                 GgufWeights weights, backend::Backend& be);

}  // namespace keel::store
