// Checks a request against the model before it is queued, so a bad request
// is refused with RequestError naming the field instead of failing later.
#pragma once
#include <cstdint>

#include "serve/engine.h"

namespace keel::serve {

// Returns the number of tokens the request may generate: max_tokens capped
// so that prompt + output fits in the context of ctx positions.
int64_t validate_request(const Request& req, int64_t vocab_size, int64_t ctx);

}  // namespace keel::serve
