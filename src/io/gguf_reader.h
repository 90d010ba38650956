// Reading GGUF files: every count, length, type, dimension and offset is
// checked against the bytes actually present before it is used, so a
// truncated or hostile file is an IoError naming the file, the field and the
// byte offset, never a crash or a huge allocation.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/gguf_writer.h"

namespace keel::io {

// One metadata value. Scalars fill i (integers and bool), f (floats) or s
// (string); arrays fill the vector that matches their element type.
struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType elem = GgufType::U8;  // arrays: the element type
  int64_t i = 0;                 // signed view of any integer (u64 above INT64_MAX: IoError)
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;         // arrays of integers or bools
  std::vector<double> floats;        // arrays of f32/f64
  std::vector<std::string> strings;  // arrays of strings
  std::vector<GgufValue> items;      // arrays of arrays
};

class GgufFile {
 public:
  struct TensorInfo {
    std::string name;
    std::vector<uint64_t> ne;       // GGUF order: innermost dimension first
    GgmlType ggml = GgmlType::F32;  // the stored type
    // keel's type for the stored bytes; F32 for a type keel has no DType for
    // (q5_0, q5_1, k-quants), which get_f32 decodes and get refuses.
    DType dtype = DType::F32;
    uint64_t offset = 0;  // inside the data section
    uint64_t nbytes = 0;
    // keel's shape: outermost first (ne reversed).
    Shape shape() const;
  };

  // Reads and validates the whole file.
  static GgufFile open(const std::string& path);
  // Validates `bytes` as a GGUF file; `name` is used in error messages.
  static GgufFile parse(std::string bytes, const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  // In file order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  // Typed metadata access; a missing key or another type is an IoError naming it.
  const GgufValue& value(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;   // any integer type
  double get_float(const std::string& key) const;  // f32 or f64
  bool get_bool(const std::string& key) const;
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  const std::vector<int64_t>& get_int_array(const std::string& key) const;

  bool has_tensor(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& tensor_info(const std::string& name) const;
  // A copy of the stored bytes as a keel tensor (dtype as stored, keel's
  // shape); an IoError for a type without a keel DType.
  Tensor get(const std::string& name) const;
  // The tensor converted to f32 (f32, f16, bf16, q8_0, q4_0, q5_0, q5_1,
  // q4_K, q5_K, q6_K, decoded as llama.cpp decodes them).
  Tensor get_f32(const std::string& name) const;

 private:
  std::string path_;
  std::string bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_start_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace keel::io
