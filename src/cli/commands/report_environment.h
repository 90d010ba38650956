// environment.json in a run directory: where the run trained (CPU, backend,
// GEMM kernel, threads, world size, compiler and library versions), written
// when training starts so `keel report` can show it next to the curves.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"

namespace keel::cli::report {

// What this process runs on, for a run on backend `be` with `world_size`
// ranks (0: from the launcher's environment, OMPI_COMM_WORLD_SIZE or
// PMI_SIZE, else 1).
nlohmann::ordered_json run_environment(const backend::Backend& be, int64_t world_size);

// Writes run_environment(be, world_size) to <run_dir>/environment.json
// atomically (the directory must exist). IoError naming the file on failure.
void write_run_environment(const std::string& run_dir, const backend::Backend& be,
                           int64_t world_size);

}  // namespace keel::cli::report
