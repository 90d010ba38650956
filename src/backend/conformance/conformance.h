// The kernel conformance suite: runs every kernel family of a candidate
// backend on seeded random inputs and compares it with an oracle backend (ref)
// under dtype-aware tolerances, with guard bytes around every output. It is
// how a new accelerator proves itself (`keel verify kernels`, docs/porting.md).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"

namespace keel::backend {

enum class ConformanceStatus : uint8_t { Pass, Fail, Skip };
enum class Direction : uint8_t { Forward, Backward };

// One kernel variant in one dtype and one direction, over all its cases.
struct ConformanceRow {
  Kernel kernel = Kernel::Matmul;
  std::string name;   // kernel name, plus a variant: "reduce.max", "dequantize"
  std::string dtype;  // "f32", "bf16", "bf16->f32" (matmul inputs->output), "q4_0"
  Direction dir = Direction::Forward;
  int cases = 0;
  double max_abs_err = 0;  // max |candidate - oracle| over every output element
  double max_rel_err = 0;  // max |candidate - oracle| / (|oracle| + rms(oracle output))
  double tolerance = 0;    // the largest per-output tolerance of the row
  ConformanceStatus status = ConformanceStatus::Pass;
  std::string detail;  // first failing case (shapes, output, element), or why skipped
  std::string worst;   // case and element where max_rel_err was reached
};

struct ConformanceOptions {
  uint64_t seed = 1;
  std::optional<Kernel> kernel;      // only this family when set
  std::vector<Kernel> skip_kernels;  // families left out entirely (no rows)
  // Adds a few large cases per family (10^5..10^6 elements), big enough for
  // a backend's thread partitioning and blocking to take effect.
  bool large = false;
  // Called as each row completes, so a caller can print progress (a kernel
  // that crashes the process then leaves the rows before it on screen).
  std::function<void(const ConformanceRow&)> on_row;
};

// Checks candidate against oracle. Kernels either backend does not support
// are SKIP rows; nothing unsupported is run on another backend instead.
std::vector<ConformanceRow> run_conformance(Backend& candidate, Backend& oracle,
                                            const ConformanceOptions& opts = {});

// Runs every kernel of `be` twice on identical inputs, the first time with
// threads_a threads and the second with threads_b, and requires bit-identical
// outputs (max errors are then exact differences, tolerance 0).
std::vector<ConformanceRow> run_repeatability(Backend& be, int threads_a, int threads_b,
                                              const ConformanceOptions& opts = {});

std::string_view status_name(ConformanceStatus s);
std::string_view direction_name(Direction d);
// "matmul" -> Kernel::Matmul; throws keel::Error listing the kernel names.
Kernel kernel_from_name(std::string_view name);
// The verify table: a header, one line per row, then the failing rows'
// details (header and row lines are also available one at a time).
std::string format_conformance_table(const std::vector<ConformanceRow>& rows);
std::string format_conformance_header();
std::string format_conformance_row(const ConformanceRow& r);
std::string format_conformance_failures(const std::vector<ConformanceRow>& rows);
// "58 rows: 50 PASS, 0 FAIL, 8 SKIP"
std::string format_conformance_summary(const std::vector<ConformanceRow>& rows);
int count_status(const std::vector<ConformanceRow>& rows, ConformanceStatus s);

}  // namespace keel::backend
