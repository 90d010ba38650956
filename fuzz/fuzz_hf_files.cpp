// libFuzzer target for the description files of a Hugging Face folder that
// `keel serve --model`, `keel generate` and `keel train --init` read:
// config.json (first byte even) and a byte-level BPE tokenizer.json (odd).
// Any bytes must load or raise keel::Error naming the file; what loads must
// be usable (positive sizes; a tokenizer that round-trips text).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "store/hf_config.h"

namespace {

// Under TMPDIR: the build tree when ctest runs it, never the system's folder.
const std::string& input_path() {
  static const std::string p =
      (std::filesystem::temp_directory_path() / ("keel_fuzz_hf_" + std::to_string(::getpid())))
          .string();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::FILE* f = std::fopen(input_path().c_str(), "wb");
  if (!f) std::abort();
  if (size > 1) std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  try {
    if (data[0] & 1) {
      const auto t = keel::store::tokenizer_from_hf_json(input_path());
      const std::string text = "Hello world 42 \xe4\xb8\xad \xff";
      if (t.decode(t.encode(text)) != text) std::abort();
    } else {
      const auto c =
          keel::store::model_config_from_hf(keel::store::read_json(input_path()), input_path());
      if (c.vocab_size <= 0 || c.n_embd <= 0 || c.n_layer <= 0 || c.n_head <= 0 ||
          c.n_kv_head <= 0 || c.ffn_hidden <= 0 || c.max_seq_len <= 0 || !(c.norm_eps > 0))
        std::abort();
    }
  } catch (const keel::Error&) {
  }
  return 0;
}
