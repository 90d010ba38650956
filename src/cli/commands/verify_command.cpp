// `keel verify kernels`: runs the kernel conformance suite. The first backend
// listed is the oracle (ref by default) and every other one is checked
// against it; any FAIL row makes the command fail (exit code 1).
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/backend.h"
#include "backend/conformance/conformance.h"
#include "cli/commands/commands.h"
#include "core/cpu_features.h"
#include "core/error.h"

namespace keel::cli {

namespace {

struct VerifyKernelsOptions {
  std::string backends;  // comma-separated; empty = ref then every other backend present
  std::string kernel;    // one family, or all
  uint64_t seed = 1;
  bool verbose = false;  // also print where each row's largest error occurred
  bool large = false;    // add large cases (where a backend splits work between threads)
};

std::vector<std::string> split_names(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

void verify_kernels(const VerifyKernelsOptions& o) {
  std::vector<std::string> names = split_names(o.backends);
  if (names.empty()) {
    names = {"ref"};
    for (const auto& n : backend::backend_names())
      if (n != "ref") names.push_back(n);
  }
  // A single name is a candidate to check against ref.
  if (names.size() == 1 && names[0] != "ref") names.insert(names.begin(), "ref");
  if (names.size() == 1) names.push_back("ref");  // ref against itself: a sanity run

  backend::ConformanceOptions opts;
  opts.seed = o.seed;
  opts.large = o.large;
  if (!o.kernel.empty()) opts.kernel = backend::kernel_from_name(o.kernel);

  // Create every backend first, so a bad name fails before any work.
  std::vector<std::unique_ptr<backend::Backend>> bes;
  for (const auto& n : names) bes.push_back(backend::make_backend(n));
  backend::Backend& oracle = *bes[0];

  fmt::print("cpu: {} (vector level {})\n", cpu_features().brand, cpu_features().level());
  fmt::print("oracle {}: {}\n", names[0], oracle.describe());
  int failed = 0;
  for (size_t i = 1; i < bes.size(); ++i) {
    backend::Backend& cand = *bes[i];
    fmt::print("\ncandidate {}: {}\n", names[i], cand.describe());
    fmt::print("seed {}{}\n\n", o.seed, o.kernel.empty() ? "" : ", kernel " + o.kernel);
    // Rows are printed as they complete, so if a kernel crashes the process
    // the rows before it are already on screen.
    opts.on_row = [&o](const backend::ConformanceRow& r) {
      fmt::print("{}", backend::format_conformance_row(r));
      if (o.verbose && !r.worst.empty()) fmt::print("    worst: {}\n", r.worst);
      std::fflush(stdout);
    };
    fmt::print("{}", backend::format_conformance_header());
    auto t0 = std::chrono::steady_clock::now();
    auto rows = backend::run_conformance(cand, oracle, opts);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("{}", backend::format_conformance_failures(rows));
    fmt::print("\n{} vs {}: {} ({:.1f} s)\n", names[i], names[0],
               backend::format_conformance_summary(rows), secs);
    failed += backend::count_status(rows, backend::ConformanceStatus::Fail);
  }
  if (failed)
    fail("verify kernels: {} row(s) FAIL against oracle '{}' (see the table above)", failed,
         names[0]);
}

}  // namespace

void add_verify_command(CLI::App& app) {
  auto* verify = app.add_subcommand("verify", "Check that backends agree with the oracle");
  verify->require_subcommand(1);

  auto opts = std::make_shared<VerifyKernelsOptions>();
  auto* kernels = verify->add_subcommand(
      "kernels", "Run every kernel on each backend against the first (the oracle)");
  kernels->add_option("--backends", opts->backends,
                      "Comma-separated backends; the first is the oracle (default: ref and every "
                      "other backend in this build)");
  kernels->add_option("--kernel", opts->kernel, "Only this kernel family (e.g. matmul, rmsnorm)");
  kernels->add_option("--seed", opts->seed, "Seed of the random inputs")->capture_default_str();
  kernels->add_flag("--large", opts->large,
                    "Add large cases (10^5..10^6 elements) where work is split between threads");
  kernels->add_flag("--verbose,-v", opts->verbose,
                    "Also print, per row, the case and element with the largest error");
  kernels->callback([opts] { verify_kernels(*opts); });
}

}  // namespace keel::cli
