// Per-rank vectors in a checkpoint that rank 0 writes: every rank's copy is
// gathered into the save as "<prefix>.rank<r>", and each rank takes its own
// back on load (error-feedback residuals, DiLoCo's inner optimizer moments).
#pragma once
#include <span>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "io/safetensors.h"

namespace keel::dist {

// Every rank's `mine` (all of one size), in rank order. A collective.
std::vector<std::vector<float>> gather_rank_vectors(Communicator& comm,
                                                    std::span<const float> mine);

// Appends "<prefix>.rank<r>" for each r in [first_rank, all.size()).
void add_rank_tensors(const std::string& prefix, const std::vector<std::vector<float>>& all,
                      std::vector<io::NamedTensor>& out, size_t first_rank = 0);

// Copies "<prefix>.rank<rank>" into dst. False when the checkpoint has none
// (f null, or written by a smaller world); IoError naming the file and the
// tensor when it has another size.
bool load_rank_tensor(const io::SafetensorsFile* f, const std::string& prefix, int rank,
                      std::span<float> dst);

}  // namespace keel::dist
