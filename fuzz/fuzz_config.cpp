// libFuzzer target for the TOML run configuration and the checkpoint
// manifest (JSON). The first byte picks the parser. Any text must parse or
// raise keel::Error naming the key; what parses must survive a round trip
// through its own writer unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "io/config.h"
#include "resilience/checkpoint_manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (data[0] & 1) {
      keel::io::Config c = keel::io::parse_config(text, "fuzz.toml");
      keel::io::validate_config(c);
      const std::string again = keel::io::config_to_toml(c);
      if (keel::io::config_to_toml(keel::io::parse_config(again, "again.toml")) != again)
        std::abort();
    } else {
      const auto m = keel::resilience::parse_manifest(text, "manifest.json");
      const std::string again = keel::resilience::manifest_to_json(m);
      if (keel::resilience::manifest_to_json(
              keel::resilience::parse_manifest(again, "again.json")) != again)
        std::abort();
    }
  } catch (const keel::Error&) {
  }
  return 0;
}
