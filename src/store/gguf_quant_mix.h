// Which ggml type each tensor of a k-quant GGUF export gets: llama.cpp's
// presets Q4_K_M, Q5_K_M and Q6_K as its quantizer (llama-quantize, no
// importance matrix, not --pure) chooses them, so a keel export has the same
// type mix as llama.cpp would write from the same f32 file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/shape.h"
#include "io/gguf_writer.h"

namespace keel::store {

enum class KQuantPreset { Q4_K_M, Q5_K_M, Q6_K };

// llama.cpp's general.file_type: LLAMA_FTYPE_MOSTLY_Q4_K_M 15, Q5_K_M 17, Q6_K 18.
uint32_t kquant_file_type(KQuantPreset p);

struct MixTensor {
  std::string name;  // GGUF name ("blk.3.attn_v.weight")
  Shape shape;       // keel order, outermost first; rows are the innermost dimension
};

// The type of every tensor, in the order given (which must be the file's
// order: llama.cpp counts attn_v and ffn_down tensors as it meets them).
// Tensors llama.cpp does not quantize (1-D, norms, the MoE router, position
// embeddings) come back F32, keel's source type. n_expert is the routed
// expert count (0 or 1 for a dense model).
std::vector<io::GgmlType> kquant_mix(KQuantPreset p, const std::vector<MixTensor>& tensors,
                                     int n_layer, int n_expert);

}  // namespace keel::store
