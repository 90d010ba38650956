// libFuzzer target for the GGUF reader: any bytes must either parse or raise
// keel::IoError; a parsed file's tensors must read back without a fault.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/gguf_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = keel::io::GgufFile::parse(std::string(reinterpret_cast<const char*>(data), size),
                                             "fuzz.gguf");
    for (const auto& t : f.tensors()) {
      if (t.nbytes > (size_t(1) << 20)) continue;  // keep each run small
      if (t.dtype == keel::DType::I8 || t.dtype == keel::DType::I32)
        (void)f.get(t.name);
      else
        (void)f.get_f32(t.name);
    }
    for (const auto& [key, v] : f.metadata()) (void)f.has(key + "x");
  } catch (const keel::IoError&) {
  }
  return 0;
}
