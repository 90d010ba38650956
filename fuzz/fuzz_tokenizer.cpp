// libFuzzer target for the tokenizer file readers: keel's tokenizer.json and
// GPT-2's encoder.json + vocab.bpe (the input split at its first NUL byte).
// Any bytes must load or raise keel::Error; a loaded tokenizer must encode
// and decode text back to the same bytes, and encode_segments must never
// turn text from an untrusted segment into a special token.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "data/tokenizer.h"

namespace {

std::string temp(const char* what) {
  // Under TMPDIR: the build tree when ctest runs it, never the system's folder.
  return (std::filesystem::temp_directory_path() /
          ("keel_fuzz_tokenizer_" + std::to_string(::getpid()) + "_" + what))
      .string();
}

void write(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

void exercise(const keel::data::Tokenizer& t) {
  const std::string text = "Hello world <|endoftext|> \xff\xfe 42 \xe4\xb8\xad";
  if (t.decode(t.encode(text)) != text) std::abort();
  const auto ids = t.encode_segments({{text, false}});
  for (int32_t id : ids)
    if (t.decode(std::vector<int32_t>{id}) != t.token_bytes(id)) std::abort();
  if (ids != t.encode(text)) std::abort();  // no special token from an untrusted segment
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  try {
    if (nul == std::string_view::npos) {
      write(temp("keel.json"), in);
      exercise(keel::data::Tokenizer::load(temp("keel.json")));
    } else {
      write(temp("encoder.json"), in.substr(0, nul));
      write(temp("vocab.bpe"), in.substr(nul + 1));
      exercise(keel::data::Tokenizer::load_gpt2(temp("encoder.json"), temp("vocab.bpe")));
    }
  } catch (const keel::Error&) {
  }
  return 0;
}
