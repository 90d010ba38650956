#include "backend/conformance/conformance.h"

#include <exception>

#include <fmt/format.h>

#include "backend/conformance/families.h"
#include "core/error.h"

namespace keel::backend {

namespace conformance {

std::vector<DType> activation_dtypes(Harness& h, Kernel k) {
  std::vector<DType> d = {DType::F32, DType::BF16};
  if (h.anyone_supports(k, DType::F16)) d.push_back(DType::F16);
  return d;
}

std::string dims(std::initializer_list<std::pair<const char*, int64_t>> d) {
  std::string s;
  for (const auto& [name, v] : d) s += fmt::format("{}{}={}", s.empty() ? "" : " ", name, v);
  return s;
}

namespace {

using CheckFn = void (*)(Harness&);

// In Kernel order; a family added to Kernel must be added here too.
constexpr CheckFn kChecks[] = {
    check_matmul,         check_embedding,     check_layernorm, check_rmsnorm,   check_rope,
    check_attention,      check_gelu,          check_silu,      check_swiglu,    check_add,
    check_bias_add,       check_cross_entropy, check_adamw,     check_reduce,    check_sum_squares,
    check_cast,           check_quantize,      check_qmatmul,   check_moe_route, check_moe_permute,
    check_grouped_matmul, check_copy_rows,     check_mla_qkv};
static_assert(std::size(kChecks) == kKernelCount, "a Kernel family has no conformance check");

std::vector<ConformanceRow> run_all(Harness& h) {
  for (CheckFn check : kChecks) {
    try {
      check(h);
    } catch (const std::exception& e) {
      h.abort_row(e.what());
    }
  }
  return h.take_rows();
}

}  // namespace

}  // namespace conformance

std::vector<ConformanceRow> run_conformance(Backend& candidate, Backend& oracle,
                                            const ConformanceOptions& opts) {
  conformance::Harness h(candidate, oracle, opts);
  return conformance::run_all(h);
}

std::vector<ConformanceRow> run_repeatability(Backend& be, int threads_a, int threads_b,
                                              const ConformanceOptions& opts) {
  conformance::Harness h(be, threads_a, threads_b, opts);
  return conformance::run_all(h);
}

std::string_view status_name(ConformanceStatus s) {
  switch (s) {
    case ConformanceStatus::Pass:
      return "PASS";
    case ConformanceStatus::Fail:
      return "FAIL";
    case ConformanceStatus::Skip:
      return "SKIP";
  }
  return "?";
}

std::string_view direction_name(Direction d) {
  return d == Direction::Forward ? "fwd" : "bwd";
}

Kernel kernel_from_name(std::string_view name) {
  std::string all;
  for (int k = 0; k < kKernelCount; ++k) {
    if (kernel_name(Kernel(k)) == name) return Kernel(k);
    all += fmt::format("{}{}", k ? ", " : "", kernel_name(Kernel(k)));
  }
  fail("unknown kernel '{}' (kernels: {})", name, all);
}

int count_status(const std::vector<ConformanceRow>& rows, ConformanceStatus s) {
  int n = 0;
  for (const auto& r : rows) n += r.status == s;
  return n;
}

std::string format_conformance_header() {
  return fmt::format("{:<15} {:<10} {:<4} {:>6} {:>12} {:>12} {:>9}  {}\n", "kernel", "dtype",
                     "dir", "cases", "max abs err", "max rel err", "tol", "status");
}

std::string format_conformance_row(const ConformanceRow& r) {
  if (r.status == ConformanceStatus::Skip)
    return fmt::format("{:<15} {:<10} {:<4} {:>6} {:>12} {:>12} {:>9}  SKIP ({})\n", r.name,
                       r.dtype, direction_name(r.dir), "-", "-", "-", "-", r.detail);
  return fmt::format("{:<15} {:<10} {:<4} {:>6} {:>12.3e} {:>12.3e} {:>9.1e}  {}\n", r.name,
                     r.dtype, direction_name(r.dir), r.cases, r.max_abs_err, r.max_rel_err,
                     r.tolerance, status_name(r.status));
}

std::string format_conformance_failures(const std::vector<ConformanceRow>& rows) {
  std::string s;
  for (const auto& r : rows)
    if (r.status == ConformanceStatus::Fail)
      s += fmt::format("FAIL {} {} {}: {}\n", r.name, r.dtype, direction_name(r.dir), r.detail);
  return s;
}

std::string format_conformance_table(const std::vector<ConformanceRow>& rows) {
  std::string s = format_conformance_header();
  for (const auto& r : rows) s += format_conformance_row(r);
  return s + format_conformance_failures(rows);
}

std::string format_conformance_summary(const std::vector<ConformanceRow>& rows) {
  return fmt::format("{} rows: {} PASS, {} FAIL, {} SKIP", rows.size(),
                     count_status(rows, ConformanceStatus::Pass),
                     count_status(rows, ConformanceStatus::Fail),
                     count_status(rows, ConformanceStatus::Skip));
}

}  // namespace keel::backend
