// libFuzzer target for the OpenAI request parser behind `keel serve`: any
// body must parse or raise an ApiError (a 4xx answer naming the parameter);
// any other exception (a JSON type error slipping through) or fault fails.
// The first byte picks the endpoint.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "serve/openai_error.h"
#include "serve/openai_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using keel::serve::Endpoint;
  const Endpoint ep = data[0] & 1 ? Endpoint::ChatCompletions : Endpoint::Completions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const auto p = keel::serve::parse_request(ep, body, {2048, 50257});
    // What the parser accepted must respect the limits it was given.
    for (int32_t id : p.prompt_ids)
      if (id < 0 || id >= 50257) std::abort();
    if (p.max_tokens && (*p.max_tokens < 1 || *p.max_tokens > 2048)) std::abort();
  } catch (const keel::serve::ApiError&) {
  }
  return 0;
}
