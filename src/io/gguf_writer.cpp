#include "io/gguf_writer.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf_kquants.h"

namespace keel::io {

static_assert(std::endian::native == std::endian::little,
              "GGUF is written little-endian; a big-endian host needs byte swaps here");

namespace {

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

uint64_t align_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

}  // namespace

GgmlType ggml_type_of(DType t) {
  switch (t) {
    case DType::F32:
      return GgmlType::F32;
    case DType::F16:
      return GgmlType::F16;
    case DType::BF16:
      return GgmlType::BF16;
    case DType::Q4_0:
      return GgmlType::Q4_0;
    case DType::Q8_0:
      return GgmlType::Q8_0;
    case DType::I8:
      return GgmlType::I8;
    case DType::I32:
      return GgmlType::I32;
  }
  fail<IoError>("GGUF: dtype {} has no ggml type", dtype_name(t));
}

bool dtype_of_ggml(uint32_t t, DType& out) {
  switch (GgmlType(t)) {
    case GgmlType::F32:
      out = DType::F32;
      return true;
    case GgmlType::F16:
      out = DType::F16;
      return true;
    case GgmlType::BF16:
      out = DType::BF16;
      return true;
    case GgmlType::Q4_0:
      out = DType::Q4_0;
      return true;
    case GgmlType::Q8_0:
      out = DType::Q8_0;
      return true;
    case GgmlType::I8:
      out = DType::I8;
      return true;
    case GgmlType::I32:
      out = DType::I32;
      return true;
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return false;
  }
  return false;
}

void GgufWriter::add_kv(const std::string& key, GgufType type, const std::string& payload) {
  if (key.empty()) fail<IoError>("GGUF: empty metadata key");
  if (std::find(keys_.begin(), keys_.end(), key) != keys_.end())
    fail<IoError>("GGUF: metadata key '{}' given twice", key);
  keys_.push_back(key);
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, uint32_t(type));
  kv_bytes_ += payload;
  ++kv_count_;
}

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
  std::string p;
  put(p, v);
  add_kv(key, GgufType::U32, p);
}
void GgufWriter::add_i32(const std::string& key, int32_t v) {
  std::string p;
  put(p, v);
  add_kv(key, GgufType::I32, p);
}
void GgufWriter::add_u64(const std::string& key, uint64_t v) {
  std::string p;
  put(p, v);
  add_kv(key, GgufType::U64, p);
}
void GgufWriter::add_f32(const std::string& key, float v) {
  std::string p;
  put(p, v);
  add_kv(key, GgufType::F32, p);
}
void GgufWriter::add_bool(const std::string& key, bool v) {
  std::string p;
  put<uint8_t>(p, v ? 1 : 0);
  add_kv(key, GgufType::Bool, p);
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  std::string p;
  put_string(p, v);
  add_kv(key, GgufType::String, p);
}
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::string p;
  put<uint32_t>(p, uint32_t(GgufType::String));
  put<uint64_t>(p, v.size());
  for (const auto& s : v) put_string(p, s);
  add_kv(key, GgufType::Array, p);
}
void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  std::string p;
  put<uint32_t>(p, uint32_t(GgufType::I32));
  put<uint64_t>(p, v.size());
  for (int32_t x : v) put(p, x);
  add_kv(key, GgufType::Array, p);
}
void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& v) {
  std::string p;
  put<uint32_t>(p, uint32_t(GgufType::F32));
  put<uint64_t>(p, v.size());
  for (float x : v) put(p, x);
  add_kv(key, GgufType::Array, p);
}

void GgufWriter::check_name(const std::string& name) const {
  // llama.cpp keeps tensor names in a 64-byte buffer with its terminator.
  if (name.empty() || name.size() > 63)
    fail<IoError>("GGUF: tensor name '{}' must have 1 to 63 bytes", name);
  for (const auto& e : tensors_)
    if (e.name == name) fail<IoError>("GGUF: tensor '{}' given twice", name);
}

void GgufWriter::add_tensor_bytes(const std::string& name, const Shape& shape, GgmlType type,
                                  std::string bytes) {
  check_name(name);
  if (!ggml_is_raw_block(type))
    fail<IoError>("GGUF: tensor '{}': {} is not a raw block type", name, ggml_type_name(type));
  if (shape.rank() < 1 || shape.rank() > 4)
    fail<IoError>("GGUF: tensor '{}' has rank {} (1 to 4 allowed)", name, shape.rank());
  const int64_t inner = shape[shape.rank() - 1], e = ggml_block_elems(type);
  if (inner % e != 0)
    fail<IoError>("GGUF: tensor '{}': innermost dimension {} is not a multiple of {} ({})", name,
                  inner, e, ggml_type_name(type));
  const size_t want = size_t(shape.numel() / e) * ggml_block_bytes(type);
  if (bytes.size() != want)
    fail<IoError>("GGUF: tensor '{}': {} bytes of {} data where its shape needs {}", name,
                  bytes.size(), ggml_type_name(type), want);
  std::vector<int64_t> dims;
  for (int d = 0; d < shape.rank(); ++d) dims.push_back(shape[d]);
  tensors_.push_back({name, dims, type, Tensor(), std::move(bytes)});
}

void GgufWriter::add_tensor(const std::string& name, const Tensor& t) {
  check_name(name);
  if (!t.defined() || !t.is_contiguous())
    fail<IoError>("GGUF: tensor '{}' must be a defined contiguous tensor", name);
  if (t.rank() < 1 || t.rank() > 4)
    fail<IoError>("GGUF: tensor '{}' has rank {} (1 to 4 allowed)", name, t.rank());
  ggml_type_of(t.dtype());
  if (dtype_is_blocked(t.dtype()) && t.dim(t.rank() - 1) % kQBlock != 0)
    fail<IoError>("GGUF: tensor '{}' {}: innermost dimension is not a multiple of {}", name,
                  t.desc(), kQBlock);
  std::vector<int64_t> dims;
  for (int d = 0; d < t.rank(); ++d) dims.push_back(t.dim(d));
  tensors_.push_back({name, dims, ggml_type_of(t.dtype()), t, {}});
}

void GgufWriter::write(const std::string& path) const {
  std::string head;
  put<uint32_t>(head, kGgufMagic);
  put<uint32_t>(head, kGgufVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_count_);
  head += kv_bytes_;
  std::vector<uint64_t> offsets;
  uint64_t off = 0;
  for (const auto& e : tensors_) {
    put_string(head, e.name);
    const int r = int(e.dims.size());
    put<uint32_t>(head, uint32_t(r));
    for (int d = r - 1; d >= 0; --d) put<uint64_t>(head, uint64_t(e.dims[size_t(d)]));
    put<uint32_t>(head, uint32_t(e.type));
    off = align_up(off, kGgufDefaultAlignment);
    offsets.push_back(off);
    put<uint64_t>(head, off);
    off += e.nbytes();
  }
  head.resize(align_up(head.size(), kGgufDefaultAlignment), '\0');
  write_file_atomic_with(path, [&](int fd) {
    write_all(fd, head.data(), head.size(), path);
    uint64_t pos = 0;
    static const char zeros[kGgufDefaultAlignment] = {};
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (offsets[i] > pos) write_all(fd, zeros, offsets[i] - pos, path);
      const TensorEntry& t = tensors_[i];
      write_all(fd, t.data(), t.nbytes(), path);
      pos = offsets[i] + t.nbytes();
    }
    // The data section ends on an alignment boundary, as llama.cpp's writer leaves it.
    const uint64_t end = align_up(pos, kGgufDefaultAlignment);
    if (end > pos) write_all(fd, zeros, end - pos, path);
  });
}

}  // namespace keel::io
