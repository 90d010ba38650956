// A CheckpointState laid out in one contiguous byte image, for memory rather
// than files (in-memory snapshots, and copies of them sent to another rank):
// an 8-byte little-endian header length, a JSON header (the manifest and a
// table of tensors: group, name, dtype, shape, byte range), then the tensor
// bytes, 64-byte aligned. The checkpoint files keep safetensors; this image
// exists because a snapshot is written into shared memory in place, with no
// file and no temporary copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "resilience/checkpoint_state.h"
#include "resilience/piece_digest.h"

namespace keel::resilience {

// The groups of a CheckpointState, as image entries name them.
inline constexpr const char* kImageParams = "params";
inline constexpr const char* kImageOptimizer = "optimizer";
inline constexpr const char* kImageModelState = "model_state";
inline constexpr const char* kImageExtra = "extra";

// The header of the image of `st`, built once per write (its size fixes the
// image's size).
struct StateImagePlan {
  std::string header;          // JSON
  uint64_t header_length = 0;  // header.size(), the image's first 8 bytes
  size_t data_offset = 0;
  size_t bytes = 0;  // the whole image
  // The tensor table (JSON) and the bytes of tensor data it lays out, with a
  // hash of the layout (groups, names, dtypes, shapes) they were made for.
  std::string tensor_table;
  size_t tensor_bytes = 0;
  uint64_t layout = 0;
};
// `previous`, when given, is the plan of an earlier write: its tensor table
// is reused when the layout is the same (it usually is, step after step).
StateImagePlan plan_state_image(const CheckpointState& st,
                                const StateImagePlan* previous = nullptr);

// Writes the image planned for st into out (out.size() >= plan.bytes).
// halfway, when set, is called once about half of the tensor bytes are in
// (fault injection: a crash in the middle of a snapshot write).
// final_through, when set, is called with n as each piece of out below n is
// complete (pieces of a few hundred KiB, so a checksum can follow the copy
// while the bytes are in cache).
void write_state_image(const CheckpointState& st, const StateImagePlan& plan,
                       std::span<std::byte> out, const std::function<void()>& halfway = {},
                       const std::function<void(size_t)>& final_through = {});

// The copies write_state_image makes, as segments of the image (its header
// length, header and tensors), for copy_and_digest; they point into st and
// plan.
std::vector<CopySegment> state_image_segments(const CheckpointState& st,
                                              const StateImagePlan& plan);

// Copies src into out at offset `at` in pieces of a few hundred KiB, calling
// final_through(end of the piece) after each (when set), so a checksum can
// read every piece while it is still in cache.
void copy_in_pieces(std::span<std::byte> out, size_t at, std::span<const std::byte> src,
                    const std::function<void(size_t)>& final_through);

struct StateImageEntry {
  std::string group, name;
  DType dtype = DType::F32;
  Shape shape;
  std::span<const std::byte> bytes;
};

// A parsed image: views into the caller's bytes, valid while they are.
struct StateImageView {
  CheckpointManifest manifest;
  std::vector<StateImageEntry> entries;
  // nullptr when the image holds no such tensor.
  const StateImageEntry* find(std::string_view group, std::string_view name) const;
};

// Parses and validates an image (header length, JSON, every entry inside the
// data); CheckpointError naming `what` on any defect.
StateImageView parse_state_image(std::span<const std::byte> image, const std::string& what);

}  // namespace keel::resilience
