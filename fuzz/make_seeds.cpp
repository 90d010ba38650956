// Writes small valid GGUF and safetensors files as the fuzzers' starting corpus.
// Usage: make_seeds GGUF_DIR SAFETENSORS_DIR
#include <cstdio>
#include <string>

#include "core/tensor.h"
#include "io/gguf_kquants.h"
#include "io/gguf_writer.h"
#include "io/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_seeds GGUF_DIR SAFETENSORS_DIR\n");
    return 2;
  }
  using namespace keel;
  const std::string g = argv[1], s = argv[2];
  io::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 1);
  w.add_f32("llama.rope.freq_base", 10000.f);
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_string_array("tokenizer.ggml.tokens", {"a", "b", "<|endoftext|>"});
  w.add_i32_array("tokenizer.ggml.token_type", {1, 1, 3});
  w.add_tensor("token_embd.weight", Tensor::from_f32({1, 2, 3, 4, 5, 6}, Shape{3, 2}));
  w.add_tensor("f16", Tensor::from_f32(std::vector<float>(32, 0.5f), Shape{1, 32}).to(DType::F16));
  w.add_tensor("q8", Tensor::zeros(Shape{1, 32}, DType::Q8_0));
  w.add_tensor("q4", Tensor::zeros(Shape{1, 32}, DType::Q4_0));
  // k-quant and q5 blocks, so mutations reach their decoders.
  const std::vector<float> ramp = [] {
    std::vector<float> v(256);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) / 64 - 2;
    return v;
  }();
  for (const auto t : {io::GgmlType::Q4_K, io::GgmlType::Q5_K, io::GgmlType::Q6_K,
                       io::GgmlType::Q5_0, io::GgmlType::Q5_1})
    w.add_tensor_bytes(io::ggml_type_name(t), Shape{1, 256}, t,
                       io::ggml_quantize(t, ramp.data(), 256));
  w.write(g + "/seed1.gguf");
  io::GgufWriter w2;
  w2.add_tensor("x", Tensor::from_f32({1}, Shape{1}));
  w2.write(g + "/seed2.gguf");
  io::write_safetensors(s + "/seed1.safetensors",
                        {{"a", Tensor::from_f32({1, 2, 3, 4}, Shape{2, 2})},
                         {"b", Tensor::from_f32({1, 2}, Shape{2}).to(DType::BF16)},
                         {"c", Tensor::from_i32({7}, Shape{1})}},
                        {{"format", "pt"}});
  return 0;
}
