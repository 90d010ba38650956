// keel::Error and its subclasses: every failure that crosses a boundary carries
// the context a user needs to act on it (file, key, kernel, shapes, step, rank).
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace keel {

// Base of every error keel throws. The message is complete and user-facing.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// A kernel was called with shapes or dtypes it does not accept.
class KernelError : public Error {
 public:
  using Error::Error;
};

// A config file, key or value is invalid. Message names the file, key and line.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A file could not be read, written or parsed. Message names the file and offset/field.
class IoError : public Error {
 public:
  using Error::Error;
};

// A distributed operation failed (timeout, peer lost). Message names the rank and op.
class DistError : public Error {
 public:
  using Error::Error;
};

// Builds an Error of type E from a fmt format string.
template <class E = Error, class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw E(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace keel

// Cheap internal invariant check for kernels that trust validated input.
#define KEEL_ASSERT(cond)                                                              \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw ::keel::Error(::fmt::format("internal assertion failed: {} at {}:{}", #cond, \
                                        __FILE__, __LINE__));                          \
  } while (0)
