// The thread team of the decode-shaped kernels (GEMV, quantized matmul): the
// calling thread and persistent helpers share a list of work items, and the
// caller never waits for a helper that has not started one.
#pragma once
#include <cstdint>

namespace keel::backend::cpu {

// Runs body(i) once for every i in [0, n), on the calling thread and up to
// threads - 1 persistent helper threads, and returns when all have run.
// Each thread takes one contiguous share of the items in order, then items
// from the ends of the others' shares, one at a time, so the caller waits at
// the end only for items a helper has already claimed: a helper the OS has
// not scheduled (a busy machine) costs nothing, where an OpenMP region's
// join would wait a whole time slice for it. body must not throw. Callers
// are serialized; a call made while the team is busy (another thread, or
// from inside a body) runs its items on the calling thread alone.
void team_for(int threads, int64_t n, void (*body)(const void* ctx, int64_t i), const void* ctx);

template <class F>
void team_for(int threads, int64_t n, const F& body) {
  team_for(
      threads, n, [](const void* ctx, int64_t i) { (*static_cast<const F*>(ctx))(i); }, &body);
}

}  // namespace keel::backend::cpu
