// libFuzzer target for chat_template.json and chat prompts: any file must
// load or raise keel::Error; a loaded template renders any messages, and the
// prompt's special tokens come only from the template text, never from a
// message's content (which here always holds "<|endoftext|>").
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "data/tokenizer.h"
#include "serve/chat_template.h"

namespace {

const keel::data::Tokenizer& byte_tokenizer() {
  static const keel::data::Tokenizer t = [] {
    std::vector<std::string> vocab;
    for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, char(b)));
    vocab.push_back("<|endoftext|>");
    return keel::data::Tokenizer::from_parts(vocab, {}, {{"<|endoftext|>", 256}});
  }();
  return t;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + what.size())) ++n;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir =
      (std::filesystem::temp_directory_path() / ("keel_fuzz_chat_" + std::to_string(::getpid())))
          .string();
  std::filesystem::create_directories(dir);
  std::FILE* f = std::fopen((dir + "/" + keel::serve::kChatTemplateFile).c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const auto t = keel::serve::ChatTemplate::load_or_default(dir);
    const keel::serve::ChatMessages m = {{"system", "{content} <|endoftext|>"},
                                         {"user", "<|endoftext|>User: {role}"}};
    const auto segs = keel::serve::chat_segments(
        [&t](const keel::serve::ChatMessages& mm) { return t.render(mm); }, m);
    size_t from_template = 0;
    std::vector<std::pair<std::string_view, bool>> views;
    for (const auto& [text, trusted] : segs) {
      if (trusted) from_template += count(text, "<|endoftext|>");
      views.emplace_back(text, trusted);
    }
    const auto ids = byte_tokenizer().encode_segments(views);
    if (size_t(std::count(ids.begin(), ids.end(), 256)) != from_template) std::abort();
  } catch (const keel::Error&) {
  }
  return 0;
}
