#include "serve/openai_error.h"

namespace keel::serve {

nlohmann::json api_error_json(const ApiError& e) {
  nlohmann::json err = {{"message", e.what()}, {"type", e.type()}};
  err["param"] = e.param().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.param());
  err["code"] = e.code().empty() ? nlohmann::json(nullptr) : nlohmann::json(e.code());
  return {{"error", std::move(err)}};
}

std::string api_error_body(const ApiError& e) {
  return api_error_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace keel::serve
