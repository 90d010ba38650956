#include "io/gguf_reader.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf_kquants.h"

namespace keel::io {

namespace {

constexpr int kMaxArrayDepth = 4;
constexpr uint64_t kMaxAlignment = uint64_t(1) << 20;

// A bounds-checked cursor over the file bytes; every failure names the file,
// the field being read and its byte offset.
class Cursor {
 public:
  Cursor(const std::string& bytes, const std::string& name) : b_(bytes), name_(name) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }

  [[noreturn]] void bad(const std::string& field, const std::string& why) const {
    fail<IoError>("{}: GGUF {} at byte offset {}: {}", name_, field, pos_, why);
  }

  template <class T>
  T read(const std::string& field) {
    if (remaining() < sizeof(T))
      bad(field, fmt::format("needs {} bytes, file ends after {}", sizeof(T), remaining()));
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& field) {
    const uint64_t n = read<uint64_t>(field + " length");
    if (n > remaining())
      bad(field, fmt::format("string of {} bytes, only {} left in the file", n, remaining()));
    std::string s = b_.substr(pos_, size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  const std::string& b_;
  const std::string& name_;
  size_t pos_ = 0;
};

// Smallest encoded size of one value of type t (used to bound array lengths
// by the bytes left before anything is allocated). 0 for an unknown type.
uint64_t min_encoded_size(uint32_t t) {
  switch (GgufType(t)) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
    case GgufType::String:
      return 8;
    case GgufType::Array:
      return 12;
  }
  return 0;
}

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::Bool:
      return true;
    default:
      return false;
  }
}

// Reads one scalar integer/bool of type t as int64.
int64_t read_int(Cursor& c, GgufType t, const std::string& field) {
  switch (t) {
    case GgufType::U8:
      return c.read<uint8_t>(field);
    case GgufType::I8:
      return c.read<int8_t>(field);
    case GgufType::U16:
      return c.read<uint16_t>(field);
    case GgufType::I16:
      return c.read<int16_t>(field);
    case GgufType::U32:
      return c.read<uint32_t>(field);
    case GgufType::I32:
      return c.read<int32_t>(field);
    case GgufType::I64:
      return c.read<int64_t>(field);
    case GgufType::U64: {
      const uint64_t v = c.read<uint64_t>(field);
      if (v > uint64_t(std::numeric_limits<int64_t>::max()))
        c.bad(field, fmt::format("u64 value {} is too large", v));
      return int64_t(v);
    }
    case GgufType::Bool: {
      const uint8_t v = c.read<uint8_t>(field);
      if (v > 1) c.bad(field, fmt::format("bool must be 0 or 1, got {}", v));
      return v;
    }
    default:
      c.bad(field, "not an integer type");
  }
}

GgufValue read_value(Cursor& c, uint32_t type, const std::string& field, int depth) {
  if (min_encoded_size(type) == 0) c.bad(field, fmt::format("unknown value type {}", type));
  GgufValue v;
  v.type = GgufType(type);
  if (is_integer(v.type)) {
    v.i = read_int(c, v.type, field);
  } else if (v.type == GgufType::F32) {
    v.f = c.read<float>(field);
  } else if (v.type == GgufType::F64) {
    v.f = c.read<double>(field);
  } else if (v.type == GgufType::String) {
    v.s = c.read_string(field);
  } else {  // Array
    if (depth >= kMaxArrayDepth)
      c.bad(field, fmt::format("arrays nested deeper than {}", kMaxArrayDepth));
    const uint32_t et = c.read<uint32_t>(field + " element type");
    const uint64_t min = min_encoded_size(et);
    if (min == 0) c.bad(field, fmt::format("unknown array element type {}", et));
    v.elem = GgufType(et);
    const uint64_t n = c.read<uint64_t>(field + " array length");
    if (n > c.remaining() / min)
      c.bad(field,
            fmt::format("array of {} elements cannot fit in the {} bytes left", n, c.remaining()));
    if (is_integer(v.elem)) {
      v.ints.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k) v.ints.push_back(read_int(c, v.elem, field));
    } else if (v.elem == GgufType::F32 || v.elem == GgufType::F64) {
      v.floats.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k)
        v.floats.push_back(v.elem == GgufType::F32 ? double(c.read<float>(field))
                                                   : c.read<double>(field));
    } else if (v.elem == GgufType::String) {
      v.strings.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k) v.strings.push_back(c.read_string(field));
    } else {
      v.items.reserve(size_t(n));
      for (uint64_t k = 0; k < n; ++k)
        v.items.push_back(read_value(c, uint32_t(GgufType::Array), field, depth + 1));
    }
  }
  return v;
}

const char* type_name(GgufType t) {
  switch (t) {
    case GgufType::U8:
      return "u8";
    case GgufType::I8:
      return "i8";
    case GgufType::U16:
      return "u16";
    case GgufType::I16:
      return "i16";
    case GgufType::U32:
      return "u32";
    case GgufType::I32:
      return "i32";
    case GgufType::F32:
      return "f32";
    case GgufType::Bool:
      return "bool";
    case GgufType::String:
      return "string";
    case GgufType::Array:
      return "array";
    case GgufType::U64:
      return "u64";
    case GgufType::I64:
      return "i64";
    case GgufType::F64:
      return "f64";
  }
  return "?";
}

}  // namespace

Shape GgufFile::TensorInfo::shape() const {
  std::vector<int64_t> d(ne.rbegin(), ne.rend());
  return Shape(d);
}

GgufFile GgufFile::open(const std::string& path) {
  return parse(read_file_bytes(path), path);
}

GgufFile GgufFile::parse(std::string bytes, const std::string& name) {
  GgufFile f;
  f.path_ = name;
  f.bytes_ = std::move(bytes);
  Cursor c(f.bytes_, f.path_);
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kGgufMagic) {
    fail<IoError>("{}: not a GGUF file (the first 4 bytes are not \"GGUF\")", name);
  }
  f.version_ = c.read<uint32_t>("version");
  if (f.version_ != 2 && f.version_ != 3)
    fail<IoError>("{}: GGUF version {} is not supported (2 and 3 are)", name, f.version_);
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each pair needs at least a key length, a type and one byte of value;
  // each tensor at least a name length, a rank, a type and an offset.
  if (n_kv > c.remaining() / 13)
    c.bad("metadata count", fmt::format("{} pairs cannot fit in the file", n_kv));
  if (n_tensors > c.remaining() / 24)
    c.bad("tensor count", fmt::format("{} tensors cannot fit in the file", n_tensors));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key = c.read_string(fmt::format("metadata key #{}", k));
    if (key.empty()) c.bad(fmt::format("metadata key #{}", k), "empty key");
    const uint32_t type = c.read<uint32_t>("type of '" + key + "'");
    GgufValue v = read_value(c, type, "value of '" + key + "'", 0);
    if (!f.kv_.emplace(key, std::move(v)).second)
      c.bad("metadata key '" + key + "'", "key appears twice");
  }
  if (f.has("general.alignment")) {
    const GgufValue& a = f.kv_.at("general.alignment");
    if (a.type != GgufType::U32 || a.i == 0 || (a.i & (a.i - 1)) != 0 ||
        uint64_t(a.i) > kMaxAlignment)
      fail<IoError>("{}: general.alignment must be a u32 power of two up to {}", name,
                    kMaxAlignment);
    f.alignment_ = uint64_t(a.i);
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo t;
    t.name = c.read_string(fmt::format("tensor #{} name", k));
    const std::string field = "tensor '" + t.name + "'";
    if (t.name.empty()) c.bad(field, "empty name");
    const uint32_t rank = c.read<uint32_t>(field + " rank");
    if (rank < 1 || rank > 4) c.bad(field, fmt::format("rank {} (1 to 4 allowed)", rank));
    uint64_t numel = 1;
    for (uint32_t d = 0; d < rank; ++d) {
      const uint64_t n = c.read<uint64_t>(field + " dimension");
      if (n == 0 || n > uint64_t(std::numeric_limits<int64_t>::max()) / numel)
        c.bad(field, fmt::format("dimension {} is 0 or overflows the element count", n));
      numel *= n;
      t.ne.push_back(n);
    }
    const uint32_t gt = c.read<uint32_t>(field + " type");
    t.ggml = GgmlType(gt);
    const bool raw = ggml_is_raw_block(t.ggml);
    if (!raw && !dtype_of_ggml(gt, t.dtype))
      c.bad(field, fmt::format("ggml type {} is not one keel reads (f32, f16, bf16, q4_0, "
                               "q5_0, q5_1, q8_0, q4_K, q5_K, q6_K, i8, i32)",
                               gt));
    const uint64_t block = uint64_t(ggml_block_elems(t.ggml));
    if (t.ne[0] % block != 0)
      c.bad(field, fmt::format("innermost dimension {} is not a multiple of {} ({} blocks)",
                               t.ne[0], block, ggml_type_name(t.ggml)));
    if (numel > (uint64_t(1) << 48)) c.bad(field, fmt::format("{} elements is too many", numel));
    t.nbytes = raw ? numel / block * ggml_block_bytes(t.ggml) : dtype_bytes(t.dtype, size_t(numel));
    t.offset = c.read<uint64_t>(field + " offset");
    if (t.offset % f.alignment_ != 0)
      c.bad(field,
            fmt::format("offset {} is not a multiple of the alignment {}", t.offset, f.alignment_));
    if (!f.index_.emplace(t.name, f.tensors_.size()).second) c.bad(field, "name appears twice");
    f.tensors_.push_back(std::move(t));
  }
  f.data_start_ = (uint64_t(c.pos()) + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  const uint64_t size = f.bytes_.size();
  const uint64_t data_size = size >= f.data_start_ ? size - f.data_start_ : 0;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& t : f.tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail<IoError>(
          "{}: GGUF tensor '{}' data [{}, {}) runs past the end of the data section "
          "({} bytes from file offset {})",
          name, t.name, t.offset, t.offset + t.nbytes, data_size, f.data_start_);
    spans.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t k = 1; k < spans.size(); ++k)
    if (spans[k].first < spans[k - 1].second)
      fail<IoError>("{}: GGUF tensor data overlaps at data offset {}", name, spans[k].first);
  return f;
}

const GgufValue& GgufFile::value(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) fail<IoError>("{}: GGUF metadata key '{}' is missing", path_, key);
  return it->second;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::String)
    fail<IoError>("{}: GGUF key '{}' is a {}, expected a string", path_, key, type_name(v.type));
  return v.s;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = value(key);
  if (!is_integer(v.type) || v.type == GgufType::Bool)
    fail<IoError>("{}: GGUF key '{}' is a {}, expected an integer", path_, key, type_name(v.type));
  return v.i;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::F32 && v.type != GgufType::F64)
    fail<IoError>("{}: GGUF key '{}' is a {}, expected a float", path_, key, type_name(v.type));
  return v.f;
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::Bool)
    fail<IoError>("{}: GGUF key '{}' is a {}, expected a bool", path_, key, type_name(v.type));
  return v.i != 0;
}

const std::vector<std::string>& GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::Array || v.elem != GgufType::String)
    fail<IoError>("{}: GGUF key '{}' is not an array of strings", path_, key);
  return v.strings;
}

const std::vector<int64_t>& GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufType::Array || !is_integer(v.elem))
    fail<IoError>("{}: GGUF key '{}' is not an array of integers", path_, key);
  return v.ints;
}

const GgufFile::TensorInfo& GgufFile::tensor_info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail<IoError>("{}: GGUF has no tensor named '{}'", path_, name);
  return tensors_[it->second];
}

Tensor GgufFile::get(const std::string& name) const {
  const TensorInfo& t = tensor_info(name);
  if (ggml_is_raw_block(t.ggml))
    fail<IoError>("{}: GGUF tensor '{}' is {}, which no keel dtype holds: read it as f32", path_,
                  name, ggml_type_name(t.ggml));
  Tensor out = Tensor::zeros(t.shape(), t.dtype);
  std::memcpy(out.raw(), bytes_.data() + data_start_ + t.offset, t.nbytes);
  return out;
}

Tensor GgufFile::get_f32(const std::string& name) const {
  const TensorInfo& t = tensor_info(name);
  if (ggml_is_raw_block(t.ggml)) {
    Tensor out = Tensor::zeros(t.shape(), DType::F32);
    ggml_dequantize(t.ggml, bytes_.data() + data_start_ + t.offset, out.numel(), out.data<float>());
    return out;
  }
  Tensor raw = get(name);
  if (!dtype_is_blocked(t.dtype)) {
    if (t.dtype == DType::I8 || t.dtype == DType::I32)
      fail<IoError>("{}: GGUF tensor '{}' is {}, not a float tensor", path_, name,
                    dtype_name(t.dtype));
    return raw.to(DType::F32);
  }
  Tensor out = Tensor::zeros(t.shape(), DType::F32);
  float* w = out.data<float>();
  const int64_t nb = out.numel() / kQBlock;
  for (int64_t b = 0; b < nb; ++b) {
    float* row = w + b * kQBlock;
    if (t.dtype == DType::Q8_0) {
      const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(raw.raw())[b];
      const float d = f16_to_f32(blk.d);
      for (int j = 0; j < kQBlock; ++j) row[j] = float(blk.qs[j]) * d;
    } else {
      const BlockQ4_0& blk = static_cast<const BlockQ4_0*>(raw.raw())[b];
      const float d = f16_to_f32(blk.d);
      for (int j = 0; j < kQBlock / 2; ++j) {
        row[j] = float((blk.qs[j] & 0xf) - 8) * d;
        row[j + kQBlock / 2] = float((blk.qs[j] >> 4) - 8) * d;
      }
    }
  }
  return out;
}

}  // namespace keel::io
