#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"

namespace keel::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swaps here");

namespace {

// Larger headers are refused before parsing (the format's own limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;

bool dtype_from_safetensors(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::F32},
                                                        {"BF16", DType::BF16},
                                                        {"F16", DType::F16},
                                                        {"I32", DType::I32},
                                                        {"I8", DType::I8}};
  for (const auto& [n, t] : table)
    if (s == n) {
      out = t;
      return true;
    }
  return false;
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

std::string safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::I32:
      return "I32";
    case DType::I8:
      return "I8";
    default:
      break;
  }
  fail<IoError>("dtype {} cannot be stored in safetensors", dtype_name(t));
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    header["__metadata__"] = md;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& nt : tensors) {
    if (nt.name.empty() || nt.name == "__metadata__")
      fail<IoError>("{}: invalid tensor name '{}'", path, nt.name);
    if (!seen.insert(nt.name).second) fail<IoError>("{}: tensor '{}' given twice", path, nt.name);
    if (!nt.tensor.defined() || !nt.tensor.is_contiguous())
      fail<IoError>("{}: tensor '{}' is undefined or not contiguous", path, nt.name);
    const uint64_t n = nt.tensor.nbytes();
    header[nt.name] = {{"dtype", safetensors_dtype_name(nt.tensor.dtype())},
                       {"shape", nt.tensor.shape().dims()},
                       {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  write_file_atomic_with(path, [&](int fd) {
    const uint64_t len = text.size();
    write_all(fd, &len, 8, path);
    write_all(fd, text.data(), text.size(), path);
    for (const auto& nt : tensors) write_all(fd, nt.tensor.raw(), nt.tensor.nbytes(), path);
  });
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return from_bytes(path, FileBytes::read(path));
}

SafetensorsFile SafetensorsFile::from_bytes(const std::string& path, FileBytes bytes) {
  SafetensorsFile f;
  f.path_ = path;
  f.bytes_ = std::move(bytes);
  const uint64_t size = f.bytes_.size();
  if (size < 8)
    fail<IoError>("{}: file of {} bytes is too short for the 8-byte header length", path, size);
  const uint64_t hlen = read_u64_le(f.bytes_.data());
  if (hlen > kMaxHeaderBytes || hlen > size - 8)
    fail<IoError>("{}: header length {} (offset 0) exceeds the file size {} or the 100 MB limit",
                  path, hlen, size);
  f.data_start_ = 8 + hlen;
  const uint64_t data_bytes = size - f.data_start_;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        std::string_view(reinterpret_cast<const char*>(f.bytes_.data()) + 8, size_t(hlen)));
  } catch (const nlohmann::json::parse_error& e) {
    fail<IoError>("{}: header JSON is malformed near offset {}: {}", path, 8 + e.byte, e.what());
  } catch (const nlohmann::json::out_of_range& e) {  // a number too large for any type
    fail<IoError>("{}: header JSON is malformed: {}", path, e.what());
  }
  if (!header.is_object()) fail<IoError>("{}: header (offset 8) is not a JSON object", path);

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail<IoError>("{}: __metadata__ is not an object", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail<IoError>("{}: __metadata__ field '{}' is not a string", path, m.key());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) {
      fail<IoError>("{}: tensor '{}': {}", path, name, what);
    };
    if (!v.is_object()) bad("header entry is not an object");
    for (auto k = v.begin(); k != v.end(); ++k)
      if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
        bad(fmt::format("unknown field '{}'", k.key()));
    Entry e;
    e.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) bad("missing or non-string 'dtype'");
    const std::string dt = v["dtype"].get<std::string>();
    if (!dtype_from_safetensors(dt, e.dtype))
      bad(fmt::format("unsupported dtype '{}' (expected F32, BF16, F16, I32 or I8)", dt));
    if (!v.contains("shape") || !v["shape"].is_array()) bad("missing or non-array 'shape'");
    std::vector<int64_t> dims;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        bad(fmt::format("shape entry {} is not a non-negative integer", d.dump()));
      dims.push_back(d.get<int64_t>());
    }
    if (dims.size() > 8) bad(fmt::format("shape has {} dims (at most 8)", dims.size()));
    e.shape = Shape(dims);
    const auto& off = v.contains("data_offsets") ? v["data_offsets"] : nlohmann::json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      bad("'data_offsets' must be [begin, end] with non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.end < e.begin) bad(fmt::format("data_offsets [{}, {}] end before begin", e.begin, e.end));
    if (e.end > data_bytes)
      bad(fmt::format(
          "data_offsets [{}, {}] run past the end of the data ({} bytes from offset {})", e.begin,
          e.end, data_bytes, f.data_start_));
    // The element count is capped like the GGUF reader's (2^48) so that
    // numel * dtype size cannot wrap: a wrapped size would pass the length
    // check below with a tiny buffer that later writes run past.
    constexpr uint64_t kMaxElements = uint64_t(1) << 48;
    uint64_t numel = 1;
    for (int64_t d : dims) {
      if (d != 0 && numel > kMaxElements / uint64_t(d))
        bad(fmt::format("shape {} has more than 2^48 elements", e.shape.str()));
      numel *= uint64_t(d);
    }
    const uint64_t want = numel * dtype_size(e.dtype);
    if (e.end - e.begin != want)
      bad(fmt::format("data_offsets [{}, {}] hold {} bytes but {} {} needs {} (file offset {})",
                      e.begin, e.end, e.end - e.begin, dt, e.shape.str(), want,
                      f.data_start_ + e.begin));
    f.entries_.push_back(std::move(e));
  }
  std::sort(f.entries_.begin(), f.entries_.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const auto& e : f.entries_) {
    if (e.begin != pos)
      fail<IoError>(
          "{}: tensor '{}': data begins at {} but the previous tensor ends at {} (file offset {}): "
          "{}",
          path, e.name, e.begin, pos, f.data_start_ + pos,
          e.begin < pos ? "overlapping data" : "gap in the data");
    pos = e.end;
  }
  if (pos != data_bytes)
    fail<IoError>("{}: the tensors cover {} bytes but the data section holds {} (file offset {})",
                  path, pos, data_bytes, f.data_start_ + pos);
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  return f;
}

bool SafetensorsFile::contains(const std::string& name) const {
  return index_.count(name) != 0;
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail<IoError>("{}: no tensor named '{}'", path_, name);
  return entries_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const Entry& e = entry(name);
  Tensor t = Tensor::zeros(e.shape, e.dtype);
  // open() proved this; a tensor smaller than its byte range would overflow.
  KEEL_ASSERT(t.nbytes() == e.end - e.begin);
  if (e.end > e.begin) std::memcpy(t.raw(), bytes_.data() + data_start_ + e.begin, e.end - e.begin);
  return t;
}

void SafetensorsFile::read_into(const std::string& name, Tensor& dst) const {
  const Entry& e = entry(name);
  if (dst.dtype() != e.dtype || dst.shape() != e.shape || !dst.is_contiguous())
    fail<IoError>("{}: tensor '{}' is {}{} but the destination is {}", path_, name,
                  dtype_name(e.dtype), e.shape.str(), dst.desc());
  KEEL_ASSERT(dst.nbytes() == e.end - e.begin);
  if (e.end > e.begin)
    std::memcpy(dst.raw(), bytes_.data() + data_start_ + e.begin, e.end - e.begin);
}

}  // namespace keel::io
