// Tensors in a backend's own memory and the explicit moves between the host
// and a device. For host-memory backends (ref, cpu) the moves are no-ops and
// the tensors are ordinary host tensors; for a device backend the bytes stay
// on the device until to_host copies them back (a synchronisation).
#pragma once
#include <string_view>

#include "backend/backend.h"
#include "core/tensor.h"

namespace keel::backend {

// A zeroed tensor in be's memory. The backend must outlive the tensor.
Tensor empty_on(Backend& be, const Shape& shape, DType dtype, std::string_view what = {});
// A copy of host tensor t in be's memory (t itself when be's memory is the host's).
Tensor to_device(Backend& be, const Tensor& t, std::string_view what = {});
// A host copy of t, which lives in be's memory (t itself when it is on the host).
Tensor to_host(Backend& be, const Tensor& t);

}  // namespace keel::backend
