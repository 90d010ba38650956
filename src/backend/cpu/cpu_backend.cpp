#include "backend/cpu/cpu_backend.h"

#include "core/error.h"

namespace keel::backend {

std::unique_ptr<Backend> make_cpu_backend() { fail("backend cpu: not implemented yet"); }

}  // namespace keel::backend
