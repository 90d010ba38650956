#include "serve/text_stream.h"

#include <algorithm>

namespace keel::serve {

namespace {

// Bytes in the character a lead byte starts; 0 for a byte that cannot lead.
int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return 2;
  if (c >= 0xe0 && c <= 0xef) return 3;
  if (c >= 0xf0 && c <= 0xf4) return 4;
  return 0;
}

bool is_cont(unsigned char c) {
  return (c & 0xc0) == 0x80;
}

// Whether s[i..i+n) is a valid n-byte character (overlongs, surrogates and
// values past U+10FFFF excluded); only the bytes present are checked when
// the character is cut short by the end of s.
bool valid_seq(std::string_view s, size_t i, int n) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  for (int k = 1; k < n; ++k) {
    if (i + size_t(k) >= s.size()) return true;  // incomplete so far
    if (!is_cont(b(size_t(k)))) return false;
    if (k == 1) {
      const unsigned char c0 = b(0), c1 = b(1);
      if (c0 == 0xe0 && c1 < 0xa0) return false;
      if (c0 == 0xed && c1 > 0x9f) return false;
      if (c0 == 0xf0 && c1 < 0x90) return false;
      if (c0 == 0xf4 && c1 > 0x8f) return false;
    }
  }
  return true;
}

}  // namespace

size_t utf8_complete_prefix(std::string_view s) {
  // Only the last (up to 3) bytes can start an unfinished character.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const size_t i = n - back;
    const auto c = static_cast<unsigned char>(s[i]);
    if (is_cont(c)) continue;
    const int len = utf8_len(c);
    if (len > int(back) && valid_seq(s, i, len)) return i;
    return n;
  }
  return n;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const int len = utf8_len(static_cast<unsigned char>(s[i]));
    if (len > 0 && i + size_t(len) <= s.size() && valid_seq(s, i, len)) {
      out.append(s.substr(i, size_t(len)));
      i += size_t(len);
    } else {
      out += "\xef\xbf\xbd";
      ++i;
    }
  }
  return out;
}

std::string TextStream::push(std::string_view bytes) {
  if (stopped_) return {};
  pending_.append(bytes);
  // A complete stop string: release what precedes the earliest one, end.
  size_t first = std::string::npos;
  for (const auto& s : stop_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = utf8_sanitize(std::string_view(pending_).substr(0, first));
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stop_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  size_t cut = pending_.size() - hold;
  cut = utf8_complete_prefix(std::string_view(pending_).substr(0, cut));
  std::string out = utf8_sanitize(std::string_view(pending_).substr(0, cut));
  pending_.erase(0, cut);
  return out;
}

std::string TextStream::flush() {
  if (stopped_) return {};
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace keel::serve
