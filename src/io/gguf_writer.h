// GGUF files (the format llama.cpp loads): a header, typed metadata key/value
// pairs, tensor descriptions, then the aligned tensor data. This file builds
// one in memory (metadata and tensors in insertion order) and writes it
// atomically; gguf_reader.h reads one back.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace keel::io {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint64_t kGgufDefaultAlignment = 32;

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// ggml tensor types keel reads and writes (the ggml_type numbers). Q5_0,
// Q5_1 and the k-quants have no keel DType: they are written from and read
// into f32 through gguf_kquants.h.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  I8 = 24,
  I32 = 26,
  BF16 = 30
};

// keel DType <-> ggml type; IoError for a dtype GGUF cannot hold.
GgmlType ggml_type_of(DType t);
// False when `t` is not one of the types above.
bool dtype_of_ggml(uint32_t t, DType& out);

class GgufWriter {
 public:
  // Scalar metadata. A key given twice is an IoError naming it.
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  // Array metadata.
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);

  // A tensor in keel's (row-major, outermost first) shape; GGUF stores the
  // dimensions innermost first, which the writer does. The tensor must be a
  // contiguous host tensor of a type ggml_type_of accepts; blocked types need
  // an innermost dimension that is a multiple of 32. A name longer than 63
  // bytes or given twice is an IoError.
  void add_tensor(const std::string& name, const Tensor& t);
  // A tensor of keel shape `shape` already encoded as `type`'s blocks (a type
  // without a keel DType: q5_0, q5_1, k-quants). The innermost dimension must
  // be a multiple of the type's block and `bytes` exactly the encoded size;
  // otherwise an IoError naming the tensor.
  void add_tensor_bytes(const std::string& name, const Shape& shape, GgmlType type,
                        std::string bytes);

  size_t num_tensors() const { return tensors_.size(); }
  // Writes the file (temporary name, fsync, rename). Tensor data offsets are
  // aligned to kGgufDefaultAlignment.
  void write(const std::string& path) const;

 private:
  void add_kv(const std::string& key, GgufType type, const std::string& payload);

  void check_name(const std::string& name) const;

  struct TensorEntry {
    std::string name;
    std::vector<int64_t> dims;  // keel order, outermost first
    GgmlType type;
    Tensor tensor;      // the data, unless in `bytes`
    std::string bytes;  // the data of a type without a keel DType
    const void* data() const { return tensor.defined() ? tensor.raw() : bytes.data(); }
    size_t nbytes() const { return tensor.defined() ? tensor.nbytes() : bytes.size(); }
  };
  std::string kv_bytes_;  // encoded key/value pairs
  uint64_t kv_count_ = 0;
  std::vector<std::string> keys_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace keel::io
