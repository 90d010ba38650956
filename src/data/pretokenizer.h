// GPT-2's pre-tokenization, written by hand over UTF-8 code points: splits text
// into the pieces the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// would match. BPE merges never cross a piece.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace keel::data {

// Character classes the regex distinguishes. Letter = \p{L} (Lu Ll Lt Lm Lo),
// Number = \p{N} (Nd Nl No), Space = Unicode White_Space; bytes that are not
// valid UTF-8 count as Other, one byte each.
enum class CharClass : uint8_t { Other, Letter, Number, Space };

CharClass char_class(uint32_t code_point);

// Appends the pieces of `text` (views into it, in order, covering every byte
// exactly once) to `out`.
void pretokenize(std::string_view text, std::vector<std::string_view>& out);

}  // namespace keel::data
