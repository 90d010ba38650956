// safetensors files: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//  "__metadata__": {"k": "v"}}, then the raw little-endian tensor bytes.
// Reading validates everything (header length, JSON, dtype names, shapes
// against byte sizes, offsets in bounds, contiguous and covering the data);
// a violation is an IoError naming the file, the tensor and the offset.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/file_bytes.h"

namespace keel::io {

// "F32", "BF16", "F16", "I32", "I8" <-> DType (block-quantized types have no
// safetensors name: IoError).
std::string safetensors_dtype_name(DType t);

struct NamedTensor {
  std::string name;
  Tensor tensor;  // contiguous host tensor
};

// Writes the tensors in the given order (data laid out in that order) with
// optional string metadata: temporary name, fsync, rename. Duplicate names,
// empty names or non-contiguous tensors are an IoError naming the tensor.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

class SafetensorsFile {
 public:
  struct Entry {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets inside the data section
  };

  // Reads and validates the whole file.
  static SafetensorsFile open(const std::string& path);
  // Validates a file already read (to checksum it first); `path` names it in errors.
  static SafetensorsFile from_bytes(const std::string& path, FileBytes bytes);

  const std::string& path() const { return path_; }
  // In data order.
  const std::vector<Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  // IoError naming the file and the tensor when absent.
  const Entry& entry(const std::string& name) const;
  // A new tensor holding a copy of the stored bytes.
  Tensor get(const std::string& name) const;
  // Copies into `dst`, whose dtype and shape must match (IoError otherwise).
  void read_into(const std::string& name, Tensor& dst) const;

 private:
  std::string path_;
  FileBytes bytes_;          // the whole file
  uint64_t data_start_ = 0;  // file offset of the data section
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace keel::io
