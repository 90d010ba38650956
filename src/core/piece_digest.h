// The piecewise checksum of large buffers (snapshots, SDC seals): XXH3 of
// each fixed 256 KiB piece, then XXH3 of those digests in order. Fixed pieces
// let several threads compute it, or a kernel that streams the bytes anyway
// (the AdamW update). resilience/piece_digest.h has the parallel and copying
// forms.
#pragma once
#include <cstddef>
#include <cstdint>

namespace keel {

// Small enough to stay in L2 between a piece's copy and its checksum.
inline constexpr size_t kDigestPiece = size_t(256) << 10;

// The digest of a buffer from its pieces' XXH3s, in order (count 0: the
// empty buffer).
uint64_t combine_piece_digests(const uint64_t* digests, size_t count);

}  // namespace keel
