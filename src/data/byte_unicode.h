// GPT-2's byte-to-unicode table: each byte maps to one printable code point so
// that token bytes can be written in JSON and text files (space -> "Ġ").
#pragma once
#include <string>
#include <string_view>

namespace keel::data {

// UTF-8 string of the mapped code points of `bytes`.
std::string bytes_to_gpt2_unicode(std::string_view bytes);
// Inverse; false if `s` holds a code point outside the table (or bad UTF-8).
bool gpt2_unicode_to_bytes(std::string_view s, std::string& out);

}  // namespace keel::data
