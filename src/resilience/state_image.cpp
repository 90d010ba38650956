#include "resilience/state_image.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
// XXH3_state_t lives behind XXH_STATIC_LINKING_ONLY.
#define XXH_STATIC_LINKING_ONLY
#include <xxh_x86dispatch.h>

#include "core/error.h"
#include "io/safetensors.h"

namespace keel::resilience {

namespace {

constexpr size_t kAlign = 64;

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

struct Group {
  const char* name;
  const std::vector<io::NamedTensor>* tensors;
};

std::vector<Group> groups_of(const CheckpointState& st) {
  return {{kImageParams, &st.params},
          {kImageOptimizer, &st.optimizer},
          {kImageModelState, &st.model_state},
          {kImageExtra, &st.extra}};
}

DType image_dtype(const std::string& s, const std::string& what) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I8})
    if (io::safetensors_dtype_name(t) == s) return t;
  fail<CheckpointError>("{}: unknown dtype '{}' in the image header", what, s);
}

// A hash of the groups, names, dtypes and shapes: what the tensor table says.
uint64_t state_image_layout(const CheckpointState& st) {
  XXH3_state_t hs;
  XXH3_64bits_reset(&hs);
  for (const Group& g : groups_of(st)) {
    const uint64_t count = g.tensors->size();
    XXH3_64bits_update(&hs, &count, sizeof count);
    for (const io::NamedTensor& t : *g.tensors) {
      const uint64_t name_len = t.name.size(), dtype = uint64_t(t.tensor.dtype()),
                     rank = t.tensor.shape().dims().size();
      XXH3_64bits_update(&hs, &name_len, sizeof name_len);
      XXH3_64bits_update(&hs, t.name.data(), t.name.size());
      XXH3_64bits_update(&hs, &dtype, sizeof dtype);
      XXH3_64bits_update(&hs, &rank, sizeof rank);
      XXH3_64bits_update(&hs, t.tensor.shape().dims().data(), rank * sizeof(int64_t));
    }
  }
  return XXH3_64bits_digest(&hs);
}

}  // namespace

StateImagePlan plan_state_image(const CheckpointState& st, const StateImagePlan* previous) {
  StateImagePlan p;
  p.layout = state_image_layout(st);
  if (previous && previous->layout == p.layout && !previous->tensor_table.empty()) {
    // Snapshots every step keep the same tensors: only the manifest changes.
    p.tensor_table = previous->tensor_table;
    p.tensor_bytes = previous->tensor_bytes;
  } else {
    nlohmann::json table = nlohmann::json::array();
    size_t off = 0;
    for (const Group& g : groups_of(st))
      for (const io::NamedTensor& t : *g.tensors) {
        const size_t n = t.tensor.nbytes();
        table.push_back({{"group", g.name},
                         {"name", t.name},
                         {"dtype", io::safetensors_dtype_name(t.tensor.dtype())},
                         {"shape", t.tensor.shape().dims()},
                         {"offset", off},
                         {"bytes", n}});
        off = align_up(off + n);
      }
    p.tensor_table = table.dump();
    p.tensor_bytes = off;
  }
  // Spliced as text: the manifest is JSON already, and parsing it back only
  // to print it again cost more than the rest of the plan.
  p.header =
      R"({"manifest":)" + manifest_to_json(st.manifest) + R"(,"tensors":)" + p.tensor_table + "}";
  p.header_length = p.header.size();
  p.data_offset = align_up(8 + p.header.size());
  p.bytes = p.data_offset + p.tensor_bytes;
  return p;
}

void copy_in_pieces(std::span<std::byte> out, size_t at, std::span<const std::byte> src,
                    const std::function<void(size_t)>& final_through) {
  // Small enough to stay in L2 between the copy and the checksum.
  constexpr size_t kPiece = size_t(256) << 10;
  KEEL_ASSERT(at + src.size() <= out.size());
  for (size_t p = 0; p < src.size(); p += kPiece) {
    const size_t k = std::min(kPiece, src.size() - p);
    std::memcpy(out.data() + at + p, src.data() + p, k);
    if (final_through) final_through(at + p + k);
  }
}

std::vector<CopySegment> state_image_segments(const CheckpointState& st,
                                              const StateImagePlan& plan) {
  std::vector<CopySegment> segs;
  segs.push_back({0, {reinterpret_cast<const std::byte*>(&plan.header_length), 8}});
  segs.push_back({8, {reinterpret_cast<const std::byte*>(plan.header.data()), plan.header.size()}});
  size_t off = 0;
  for (const Group& g : groups_of(st))
    for (const io::NamedTensor& t : *g.tensors) {
      const size_t n = t.tensor.nbytes();
      segs.push_back({plan.data_offset + off, {static_cast<const std::byte*>(t.tensor.raw()), n}});
      off = align_up(off + n);
    }
  return segs;
}

void write_state_image(const CheckpointState& st, const StateImagePlan& plan,
                       std::span<std::byte> out, const std::function<void()>& halfway,
                       const std::function<void(size_t)>& final_through) {
  KEEL_ASSERT(out.size() >= plan.bytes);
  const uint64_t hlen = plan.header.size();
  std::memcpy(out.data(), &hlen, 8);
  std::memcpy(out.data() + 8, plan.header.data(), plan.header.size());
  size_t off = 0, done = 0;
  const size_t total = plan.bytes - plan.data_offset;
  bool called = !halfway;
  for (const Group& g : groups_of(st))
    for (const io::NamedTensor& t : *g.tensors) {
      const size_t n = t.tensor.nbytes();
      copy_in_pieces(out, plan.data_offset + off,
                     {static_cast<const std::byte*>(t.tensor.raw()), n}, final_through);
      off = align_up(off + n);
      done += n;
      if (!called && 2 * done >= total) {
        called = true;
        halfway();
      }
    }
  if (!called) halfway();
}

const StateImageEntry* StateImageView::find(std::string_view group, std::string_view name) const {
  for (const auto& e : entries)
    if (e.group == group && e.name == name) return &e;
  return nullptr;
}

StateImageView parse_state_image(std::span<const std::byte> image, const std::string& what) {
  if (image.size() < 8)
    fail<CheckpointError>("{}: image of {} bytes is too short", what, image.size());
  uint64_t hlen = 0;
  std::memcpy(&hlen, image.data(), 8);
  if (hlen > image.size() - 8)
    fail<CheckpointError>("{}: header length {} exceeds the image ({} bytes)", what, hlen,
                          image.size());
  const size_t data_offset = align_up(8 + size_t(hlen));
  StateImageView v;
  try {
    const nlohmann::json h = nlohmann::json::parse(
        std::string_view(reinterpret_cast<const char*>(image.data()) + 8, size_t(hlen)));
    v.manifest = parse_manifest(h.at("manifest").dump(), what);
    for (const auto& e : h.at("tensors")) {
      StateImageEntry x;
      x.group = e.at("group").get<std::string>();
      x.name = e.at("name").get<std::string>();
      x.dtype = image_dtype(e.at("dtype").get<std::string>(), what);
      x.shape = Shape(e.at("shape").get<std::vector<int64_t>>());
      const size_t off = e.at("offset").get<size_t>(), n = e.at("bytes").get<size_t>();
      if (n != size_t(x.shape.numel()) * dtype_size(x.dtype))
        fail<CheckpointError>("{}: tensor '{}' has {} bytes for shape {}", what, x.name, n,
                              x.shape.str());
      if (data_offset + off + n > image.size() || off + n < off)
        fail<CheckpointError>("{}: tensor '{}' at offset {} runs past the image ({} bytes)", what,
                              x.name, off, image.size());
      x.bytes = image.subspan(data_offset + off, n);
      v.entries.push_back(std::move(x));
    }
  } catch (const nlohmann::json::exception& ex) {
    fail<CheckpointError>("{}: bad image header: {}", what, ex.what());
  }
  return v;
}

}  // namespace keel::resilience
