#include "backend/ref/ref_backend.h"

#include "core/error.h"

namespace keel::backend {

std::unique_ptr<Backend> make_ref_backend() { fail("backend ref: not implemented yet"); }

}  // namespace keel::backend
