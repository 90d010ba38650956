// Silent-data-corruption check: data-parallel replicas must hold bit-identical
// parameters after every step, so every K steps each rank hashes its
// parameters (xxh3) and the ranks compare hashes. With three or more ranks the
// odd one out is found by majority and treated as faulty; with two a mismatch
// cannot say which is wrong, and both roll back to the last checkpoint.
//
// Under ZeRO-1 the parameters are gathered from their owners after every
// update, which overwrites (or spreads to every rank) a flip between two
// checks, so the ranks also fold the hash taken at the start of every step
// into a digest they compare at the check; and the optimizer moments, held by
// one rank only, are checksummed after each update and verified before the
// next (resilience_guard.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "nn/parameter.h"
#include "train/adamw.h"

namespace keel::resilience {

// xxh3-64 over every parameter's name, shape and the piece_digest of its f32
// master bytes, in order (on the backend's threads).
uint64_t parameters_hash(const std::vector<nn::Parameter*>& params, backend::Backend* be = nullptr);
// xxh3-64 over the piece_digests of the AdamW moments this rank holds (its
// ZeRO-1 shard, or all).
uint64_t moments_hash(const train::AdamW& opt);
// Folds b into the running digest a (order matters).
uint64_t mix_hash(uint64_t a, uint64_t b);

struct SdcVerdict {
  bool ok = true;              // every hash equal
  uint64_t majority = 0;       // the hash held by a strict majority (valid if has_majority)
  bool has_majority = false;   // a strict majority agrees
  std::vector<int> odd_ranks;  // ranks whose hash differs from the majority
};

// Votes over the hashes of all ranks (index = rank).
SdcVerdict sdc_vote(const std::vector<uint64_t>& hashes);

// Gathers one value from every rank (index = rank); the dist layer provides it.
using AllGatherU64 = std::function<std::vector<uint64_t>(uint64_t)>;

// Hashes the parameters, gathers the hashes of all ranks and votes.
SdcVerdict sdc_check(const std::vector<nn::Parameter*>& params, const AllGatherU64& allgather);

}  // namespace keel::resilience
