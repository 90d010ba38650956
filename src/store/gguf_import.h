// Models from GGUF files: llama, gpt2 and deepseek2 files as keel exports them or as
// llama.cpp's converter writes them, read back into keel's names, shapes and
// f32 weights (f16, bf16, q8_0 and q4_0 tensors are dequantized), with the
// configuration from the metadata and the byte-level BPE tokenizer embedded in
// the file. Anything keel's models cannot express is an IoError naming the key
// or the tensor, never a silent approximation.
#pragma once
#include <string>

#include "store/model_weights.h"

namespace keel::store {

// True when `path` is a regular file that starts with the GGUF magic.
bool is_gguf_file(const std::string& path);

// Reads `path` into keel's names (f32, config resolved); IoError naming the
// file and the key or tensor on anything unsupported (another architecture
// or tokenizer, rope scaling, k-quants, a gpt2 head that is not tied to its
// embedding, a missing tensor).
ModelWeights read_gguf_model(const std::string& path);

// Copies the file's weights into `model` (`keel train --init file.gguf`):
// the architectures and every shape must match, each parameter must be in the
// file and every tensor of the file must be a parameter (IoError naming it);
// then the compute copies are refreshed.
void load_gguf_weights(const ModelWeights& file, model::Model& model);

}  // namespace keel::store
