// libFuzzer target for the safetensors reader: any bytes must either load or
// raise keel::IoError; a loaded file's tensors must read back without a fault,
// and each entry's byte range must equal what its dtype and shape need (a
// wrapped size once passed the reader's check with a too-small buffer).
// The reader takes a path, so each input goes through one private file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"

namespace {

// Under TMPDIR: the build tree when ctest runs it, never the system's folder.
const std::string& input_path() {
  static const std::string p = [] {
    std::string s = (std::filesystem::temp_directory_path() /
                     ("keel_fuzz_safetensors_" + std::to_string(::getpid())))
                        .string();
    return s;
  }();
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
    for (const auto& e : st.entries()) {
      // The oracle, in 128-bit arithmetic so that it cannot wrap itself.
      unsigned __int128 need = keel::dtype_bytes(e.dtype, 1);
      for (int64_t d : e.shape.dims()) need *= uint64_t(d);
      if (need != (unsigned __int128)(e.end - e.begin)) std::abort();
      if (e.end - e.begin <= (uint64_t(1) << 20)) {
        const keel::Tensor t = st.get(e.name);
        if (t.nbytes() != e.end - e.begin || t.shape() != e.shape) std::abort();
      }
    }
  } catch (const keel::IoError&) {
  }
  return 0;
}
