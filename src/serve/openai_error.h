// OpenAI-style API errors: an HTTP status plus the {"error": {"message",
// "type", "param", "code"}} object every OpenAI client knows how to read.
// Request parsing and the HTTP server throw ApiError; the server renders it.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel::serve {

// One failed request: `status` is the HTTP status (400, 404, 413, 429, ...),
// `type` the OpenAI error type ("invalid_request_error", ...), `param` the
// offending request field ("" when none) and `code` a short machine-readable
// reason ("" when none).
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string param, std::string code,
           const std::string& msg)
      : Error(msg),
        status_(status),
        type_(std::move(type)),
        param_(std::move(param)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string type_, param_, code_;
};

// A 400 invalid_request_error about `param`.
template <class... Args>
[[noreturn]] void fail_request(const std::string& param, const std::string& code,
                               fmt::format_string<Args...> f, Args&&... args) {
  throw ApiError(400, "invalid_request_error", param, code,
                 fmt::format(f, std::forward<Args>(args)...));
}

// {"error": {"message": ..., "type": ..., "param": ... | null, "code": ... | null}}
nlohmann::json api_error_json(const ApiError& e);

// api_error_json serialised; invalid UTF-8 in the message is replaced, never thrown.
std::string api_error_body(const ApiError& e);

}  // namespace keel::serve
