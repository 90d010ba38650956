#include "cli/commands/report_environment.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "cli/commands/report_run.h"
#include "core/cpu_features.h"
#include "io/atomic_file.h"

namespace keel::cli::report {

namespace {

// The GEMM engine from a backend description ("..., gemm: openblas (...); ..."),
// or "" when the backend does not say.
std::string gemm_of(const std::string& describe) {
  const size_t p = describe.find("gemm: ");
  if (p == std::string::npos) return "";
  const size_t end = describe.find(';', p);
  return describe.substr(p + 6, end == std::string::npos ? std::string::npos : end - p - 6);
}

int64_t launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(var)) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end != v && *end == 0 && n > 0) return n;
    }
  return 1;
}

}  // namespace

nlohmann::ordered_json run_environment(const backend::Backend& be, int64_t world_size) {
  nlohmann::ordered_json j;
  const auto& cpu = cpu_features();
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = 0;
  j["backend"] = std::string(be.name());
  j["gemm"] = gemm_of(be.describe());
  j["backend_description"] = be.describe();
  j["threads"] = be.threads();
  j["world_size"] = world_size > 0 ? world_size : launcher_world_size();
  j["cpu"] = cpu.brand;
  j["vector_level"] = cpu.level();
  j["hardware_threads"] = sysconf(_SC_NPROCESSORS_ONLN);
  j["hostname"] = std::string(host);
  j["compiler"] = fmt::format("gcc-compatible {}", __VERSION__);
  j["fmt_version"] =
      fmt::format("{}.{}.{}", FMT_VERSION / 10000, FMT_VERSION / 100 % 100, FMT_VERSION % 100);
  j["nlohmann_json_version"] =
      fmt::format("{}.{}.{}", NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
                  NLOHMANN_JSON_VERSION_PATCH);
  j["tomlplusplus_version"] =
      fmt::format("{}.{}.{}", TOML_LIB_MAJOR, TOML_LIB_MINOR, TOML_LIB_PATCH);
#ifdef __OPTIMIZE__
  j["build"] = "optimized";
#else
  j["build"] = "not optimized";
#endif
  return j;
}

void write_run_environment(const std::string& run_dir, const backend::Backend& be,
                           int64_t world_size) {
  io::write_file_atomic((std::filesystem::path(run_dir) / kEnvironmentFile).string(),
                        run_environment(be, world_size).dump(2) + "\n");
}

}  // namespace keel::cli::report
