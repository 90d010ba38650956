// Tensors in a backend's own memory and the explicit moves between the host
// and a device. For host-memory backends (ref, cpu) the moves are no-ops and
// the tensors are ordinary host tensors; for a device backend the bytes stay
// on the device until to_host copies them back (a synchronisation).
#pragma once
#include <functional>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "core/tensor.h"

namespace keel::backend {

// A zeroed tensor in be's memory. The backend must outlive the tensor.
Tensor empty_on(Backend& be, const Shape& shape, DType dtype, std::string_view what = {});
// A copy of host tensor t in be's memory (t itself when be's memory is the host's).
Tensor to_device(Backend& be, const Tensor& t, std::string_view what = {});
// A host copy of t, which lives in be's memory (t itself when it is on the host).
Tensor to_host(Backend& be, const Tensor& t);
// Host copies of several tensors (those already on the host as they are):
// the device ones are gathered into one device buffer and read back in a
// single synchronisation, in place of one per tensor.
std::vector<Tensor> to_host_all(Backend& be, const std::vector<const Tensor*>& ts);
// Copies host tensor src into dst (same dtype and element count, contiguous),
// wherever dst lives: an upload for a device tensor, a memcpy on the host.
void copy_from_host(Backend& be, const Tensor& src, const Tensor& dst);
// Copies t (in be's memory or on the host) into host tensor dst.
void copy_to_host(Backend& be, const Tensor& t, const Tensor& dst);
// Runs fill on a host tensor shaped like dst (dst itself when it is on the
// host) and moves the result into dst: how a file's bytes reach a device.
void fill_from_host(Backend& be, Tensor& dst, const std::function<void(Tensor&)>& fill);
// Zeroes t wherever it lives.
void zero(Backend& be, const Tensor& t);
// Chunks for an Arena in be's memory: the host heap for host-memory backends.
ArenaMemory arena_memory(Backend& be);

}  // namespace keel::backend
