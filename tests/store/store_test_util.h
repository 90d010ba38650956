// Shared pieces of the store/ tests: a per-test folder under TMPDIR (the
// build tree when run by ctest) and a small byte-level BPE tokenizer with
// <|endoftext|>, apostrophes and digits.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace keel::store::testing {

inline std::string temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / "keel_test_store" / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

inline const data::Tokenizer& tokenizer() {
  static const data::Tokenizer tok = [] {
    const std::vector<std::string> docs = {
        "the quick brown fox jumps over the lazy dog. the dog sleeps.",
        "a fox, a dog, and the quick brown cat; 12 34 56!",
        "It's the end of the text, isn't it? We'll see."};
    std::vector<std::string_view> views(docs.begin(), docs.end());
    data::BpeTrainOptions o;
    o.vocab_size = 300;
    return data::Tokenizer::train(views, o);
  }();
  return tok;
}

}  // namespace keel::store::testing
