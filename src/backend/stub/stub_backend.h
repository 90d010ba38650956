// The stub backend: every kernel throws "[kernel] has no implementation on
// backend 'stub'" and supports() is false everywhere. It is the template for
// a new accelerator (docs/porting.md): copy it, then fill kernels in one by
// one while `keel verify kernels` turns their rows from SKIP to PASS.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace keel::backend {

std::unique_ptr<Backend> make_stub_backend();

}  // namespace keel::backend
