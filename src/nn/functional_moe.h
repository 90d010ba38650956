// Differentiable mixture-of-experts ops on tape Values: routing (top-k
// gating), token permutation to expert order and back, and grouped expert
// projections. Index bookkeeping (who goes where) is host code; every
// element-wise or matrix step runs through the backend's moe kernels.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "nn/parameter.h"
#include "nn/tape.h"

namespace keel::nn {

// Where the routed token slots go. Tensors live in the step's arena.
struct MoeDispatch {
  Tensor idx;      // i32 (N, K): chosen experts, best first
  Tensor scores;   // f32 (N, E): gating scores (sigmoid or softmax of the logits)
  Tensor pos;      // i32 (N, K): row in the permuted buffer, -1 when dropped
  Tensor offsets;  // E + 1 int64 row offsets per expert (stored in an i32 tensor of 2(E+1))
  // Rows of the permuted buffers: the slots kept on a host-memory backend,
  // every slot (N * K) on a device, where the kept count stays on the device.
  int64_t rows = 0;
  const int64_t* offs() const { return static_cast<const int64_t*>(offsets.raw()); }
};

// logits f32 (N, E) -> weights f32 (N, K) (differentiable), filling d.idx and
// d.scores. bias (E) f32 or undefined shifts selection only. aux_dscores,
// when defined, is f32 (N, E) added to the scores' gradient in backward (an
// auxiliary balance loss, already multiplied by its loss scale).
Value moe_route(Tape& tape, const Value& logits, const Tensor& bias, const backend::MoeRouteArgs& a,
                const Tensor& aux_dscores, MoeDispatch& d);
// The experts moe_route(tape, logits, bias, a, ...) chooses, as i32 (N, K),
// without a gradient (no tape node).
Tensor moe_route_choice(Tape& tape, const Value& logits, const Tensor& bias,
                        const backend::MoeRouteArgs& a);
// Fills d.pos, d.offsets and d.rows from d.idx with the backend's moe_plan:
// slots grouped by expert in token order; with capacity > 0 an expert keeps
// only its first `capacity` slots.
void moe_plan(Tape& tape, int64_t E, int64_t capacity, MoeDispatch& d);
// x (N, C) -> xp (rows, C): each token copied to its expert slots.
Value moe_permute(Tape& tape, const Value& x, const MoeDispatch& d);
// yp (rows, C), w f32 (N, K) -> y = sum_k w[n, k] * yp[pos[n, k]], of shape
// out_shape (N * C elements, e.g. the (B, T, C) of the block's input).
Value moe_unpermute(Tape& tape, const Value& yp, const Value& w, const MoeDispatch& d,
                    const Shape& out_shape);
// x (rows, K) -> (rows, N): rows of expert g times w[g]^T, w (G, N, K).
Value grouped_linear(Tape& tape, const Value& x, Parameter& w, const MoeDispatch& d);

}  // namespace keel::nn
