// Hand-written matcher for GPT-2's pre-tokenization regex (see pretokenizer.h).
// The regex's alternatives are tried in order at each match start; because
// each alternative is decided by the first one or two code points, the
// matcher needs no backtracking except for \s+(?!\S), handled explicitly.
#include "data/pretokenizer.h"

#include <algorithm>
#include <array>

#include "data/unicode_tables.h"

namespace keel::data {
namespace {

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes one strictly valid UTF-8 sequence at s[i]; an invalid byte decodes as
// kInvalid with length 1 so every byte still lands in exactly one piece.
inline uint32_t decode_utf8(std::string_view s, size_t i, size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    len = 1;
    return b0;
  }
  size_t n;
  uint32_t cp, min;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    len = 1;
    return kInvalid;
  }
  if (i + n > s.size()) {
    len = 1;
    return kInvalid;
  }
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      len = 1;
      return kInvalid;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    len = 1;
    return kInvalid;
  }
  len = n;
  return cp;
}

std::array<CharClass, 128> make_ascii_table() {
  std::array<CharClass, 128> t{};
  for (uint32_t c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = CharClass::Letter;
    else if (c >= '0' && c <= '9')
      t[c] = CharClass::Number;
    else if (c == ' ' || (c >= 0x09 && c <= 0x0D))
      t[c] = CharClass::Space;
    else
      t[c] = CharClass::Other;
  }
  return t;
}
const std::array<CharClass, 128> kAscii = make_ascii_table();

// Class of the code point at s[i]; sets len to its byte length.
inline CharClass class_at(std::string_view s, size_t i, size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    len = 1;
    return kAscii[b0];
  }
  return char_class(decode_utf8(s, i, len));
}

// End of the run of code points of class c starting at i.
inline size_t run_end(std::string_view s, size_t i, CharClass c) {
  size_t len = 0;
  while (i < s.size() && class_at(s, i, len) == c) i += len;
  return i;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) at s[i] == '\'', or 0.
inline size_t contraction(std::string_view s, size_t i) {
  if (i + 1 >= s.size()) return 0;
  const char a = s[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= s.size()) return 0;
  const char b = s[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 128) return kAscii[cp];
  if (cp == kInvalid) return CharClass::Other;
  const auto* begin = std::begin(kUnicodeRanges);
  const auto* end = std::end(kUnicodeRanges);
  // First range whose hi >= cp.
  const auto* it =
      std::lower_bound(begin, end, cp, [](const UnicodeRange& r, uint32_t v) { return r.hi < v; });
  if (it != end && it->lo <= cp) return static_cast<CharClass>(it->cls);
  return CharClass::Other;
}

void pretokenize(std::string_view s, std::vector<std::string_view>& out) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    if (s[i] == '\'') {
      if (size_t c = contraction(s, i)) {
        out.push_back(s.substr(start, c));
        i += c;
        continue;
      }
    }
    size_t len = 0;
    const CharClass c0 = class_at(s, i, len);
    // " ?X+" alternatives: an optional ASCII space, then a run of one class.
    CharClass run = c0;
    size_t run_start = i;
    if (s[i] == ' ' && i + 1 < n) {
      size_t len1 = 0;
      const CharClass c1 = class_at(s, i + 1, len1);
      if (c1 != CharClass::Space) {
        run = c1;
        run_start = i + 1;
      }
    }
    if (run != CharClass::Space) {
      i = run_end(s, run_start, run);
      out.push_back(s.substr(start, i - start));
      continue;
    }
    // Whitespace: \s+(?!\S) takes the whole run at the end of text, else the
    // run minus its last code point if that leaves one; otherwise \s+ takes
    // the single code point.
    size_t last = i;  // start of the last whitespace code point seen
    size_t count = 0;
    while (i < n) {
      size_t l = 0;
      if (class_at(s, i, l) != CharClass::Space) break;
      last = i;
      i += l;
      ++count;
    }
    if (i < n && count >= 2) i = last;
    out.push_back(s.substr(start, i - start));
  }
}

}  // namespace keel::data
