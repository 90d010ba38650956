// Incremental detokenization for streamed output: token bytes are appended
// as they are sampled and only text that can no longer change is released.
// A multi-byte UTF-8 character split across tokens is held back until it is
// complete; a tail that could still grow into a stop string is held back
// until it either does (the stream ends, the stop string is not emitted) or
// cannot. Released text is always valid UTF-8 (invalid bytes become U+FFFD).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace keel::serve {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop = {}) : stop_(std::move(stop)) {}

  // Appends a token's bytes; returns the text that became final. After a
  // stop string is found, stopped() is true and further pushes return "".
  std::string push(std::string_view bytes);
  // Releases everything still held (end of output without a stop string).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_;
  std::string pending_;  // bytes not yet released
  bool stopped_ = false;
};

// Length of the longest prefix of s that does not end inside a UTF-8
// character that later bytes could still complete.
size_t utf8_complete_prefix(std::string_view s);
// s with every invalid UTF-8 sequence replaced by U+FFFD.
std::string utf8_sanitize(std::string_view s);

}  // namespace keel::serve
