// libFuzzer target for the safetensors reader: any bytes must either load or
// raise keel::IoError; a loaded file's tensors must read back without a fault.
// The reader takes a path, so each input goes through one private file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"

namespace {

const std::string& input_path() {
  static const std::string p = "/tmp/keel_fuzz_safetensors_" + std::to_string(::getpid());
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(input_path().c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const auto st = keel::io::SafetensorsFile::open(input_path());
    for (const auto& e : st.entries())
      if (e.end - e.begin <= (uint64_t(1) << 20)) (void)st.get(e.name);
  } catch (const keel::IoError&) {
  }
  return 0;
}
