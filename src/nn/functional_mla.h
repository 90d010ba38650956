// Differentiable ops that assemble multi-head latent attention (DeepSeek-V2
// MLA) from its projections: column slices of a projection, and the packed
// q|k|v buffer the causal attention kernel reads, with the decoupled rotary
// part of each key shared by every head.
#pragma once
#include <cstdint>

#include "nn/tape.h"

namespace keel::nn {

struct MlaShape {
  int64_t B = 0, T = 0, NH = 0;
  int64_t nope = 0;  // per-head key/query part without rotary positions
  int64_t rope = 0;  // rotary part (even); one key rotary vector shared by all heads
  int64_t v = 0;     // per-head value width (<= nope + rope)
  float rope_theta = 10000.f;
  int64_t D() const { return nope + rope; }  // q/k head width, the attention's HS
};

// y = x[..., c0:c1] (contiguous copy); backward adds dy into those columns.
Value slice_cols(Tape& tape, const Value& x, int64_t c0, int64_t c1);
// q (B, T, NH * D) = per head [nope | rope]; kv (B, T, NH * (nope + v)) = per
// head [k_nope | v]; kpe (B, T, rope). Returns (B, T, 3 * NH * D) = [q heads |
// k heads | v heads] with the rope parts of q and the shared kpe rotated
// (adjacent pairs, position t), k head h = [k_nope_h | rot(kpe)] and v heads
// zero-padded to D: the layout causal_attention reads with NKV = NH, HS = D.
Value mla_qkv(Tape& tape, const Value& q, const Value& kv, const Value& kpe, const MlaShape& s);
// o (B, T, NH * D) from attention -> (B, T, NH * v): each head's first v columns.
Value mla_heads_out(Tape& tape, const Value& o, const MlaShape& s);

}  // namespace keel::nn
