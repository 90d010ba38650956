// The reference backend: plain scalar C++ written for obviousness, not speed.
// It is the oracle every other backend is checked against.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace keel::backend {

std::unique_ptr<Backend> make_ref_backend();

}  // namespace keel::backend
