// `keel verify kernels`: runs the kernel conformance suite. The first backend
// listed is the oracle (ref by default) and every other one is checked
// against it; any FAIL row makes the command fail (exit code 1).
// `keel verify model`: the same model on two backends (serve/model_verify.h);
// top-1 agreement below --min-top1 makes the command fail.
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
#include "serve/model_verify.h"

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

struct VerifyModelOptions {
  std::string model, backends = "ref,cpu", quant = "none", kv_dtype = "f32", data;
  int64_t max_new = 32;
  int64_t ppl_tokens = 2048;
  double min_top1 = 1.0;
  double max_logit_diff = 0;  // > 0: fail when any |delta logit| exceeds it
  int threads = 0;
};

serve::Perplexity model_perplexity(const store::ModelWeights& w, const std::string& backend,
                                   DType format, DType kv_dtype, int threads,
                                   const std::vector<int32_t>& tokens, int64_t n) {
  auto be = backend::make_backend(backend);
  if (threads > 0) be->set_threads(threads);
  serve::InferenceModel m(w, *be, format, kv_dtype);
  return serve::perplexity(m, tokens, n);
}

void verify_model(const VerifyModelOptions& o) {
  const std::vector<std::string> names = split_names(o.backends);
  if (names.size() != 2)
    fail("--backends: give exactly two backends (e.g. ref,cpu), got '{}'", o.backends);
  const DType format = serve::weight_format_from_name(o.quant);
  const DType kv_dtype = serve::kv_dtype_from_name(o.kv_dtype);
  const store::ModelWeights w = store::load_model_weights(o.model);
  const auto& c = w.config;
  std::vector<std::unique_ptr<backend::Backend>> bes;
  std::vector<std::unique_ptr<serve::InferenceModel>> ms;
  for (const auto& n : names) {
    bes.push_back(backend::make_backend(n));
    if (o.threads > 0) bes.back()->set_threads(o.threads);
    ms.push_back(std::make_unique<serve::InferenceModel>(w, *bes.back(), format, kv_dtype));
  }
  fmt::print("model {}: {} layers {} heads {} kv heads {} embd {} vocab {} context {}\n", o.model,
             c.arch, c.n_layer, c.n_head, c.n_kv_head, c.n_embd, c.vocab_size, c.max_seq_len);
  fmt::print("weights {}, KV cache {}; {} decodes greedily, {} is fed the same tokens\n\n", o.quant,
             o.kv_dtype, names[0], names[1]);
  fmt::print("{:>3}  {:>6}  {:>5}  {:>12}  {:>9}  {}\n", "#", "prompt", "steps", "max|dlogit|",
             "top-1", "text");
  const auto rows =
      serve::compare_greedy(*ms[0], *ms[1], w.tokenizer, serve::verify_prompts(), o.max_new);
  int64_t steps = 0, agree = 0;
  float worst = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    fmt::print("{:>3}  {:>6}  {:>5}  {:>12.3e}  {:>8.1f}%  {}\n", i, r.prompt_tokens, r.steps,
               r.max_logit_diff,
               100.0 * double(r.top1_agree) / double(std::max<int64_t>(1, r.steps)), r.prompt);
    steps += r.steps;
    agree += r.top1_agree;
    worst = std::max(worst, r.max_logit_diff);
  }
  const double top1 = double(agree) / double(std::max<int64_t>(1, steps));
  fmt::print("\nall prompts: max|dlogit| {:.3e}, top-1 agreement {}/{} = {:.2f}%\n", worst, agree,
             steps, 100.0 * top1);
  try {
    const auto tokens = serve::held_out_tokens(o.model, o.data, o.ppl_tokens + 1);
    double ppl[2] = {0, 0};
    for (size_t i = 0; i < names.size(); ++i) {
      const auto p = serve::perplexity(*ms[i], tokens, o.ppl_tokens);
      ppl[i] = p.ppl;
      fmt::print(
          "perplexity on the held-out split ({} tokens), {} {}: {:.4f} ({:.4f} nats/token)\n",
          p.tokens, names[i], o.quant, p.ppl, p.nats);
      // What the weight format and the cache's dtype each cost, against f32.
      if (format != DType::F32 && i == 0) {
        const auto f =
            model_perplexity(w, names[0], DType::F32, kv_dtype, o.threads, tokens, o.ppl_tokens);
        fmt::print(
            "perplexity on the held-out split ({} tokens), {} f32: {:.4f}; {} changes it by "
            "{:+.3f}%\n",
            f.tokens, names[0], f.ppl, o.quant, 100.0 * (p.ppl / f.ppl - 1.0));
      }
      if (kv_dtype != DType::F32 && i == 0) {
        const auto f =
            model_perplexity(w, names[0], format, DType::F32, o.threads, tokens, o.ppl_tokens);
        fmt::print(
            "perplexity on the held-out split ({} tokens), {} {} with an f32 KV cache: {:.4f}; "
            "a {} KV cache changes it by {:+.3f}%\n",
            f.tokens, names[0], o.quant, f.ppl, o.kv_dtype, 100.0 * (p.ppl / f.ppl - 1.0));
      }
    }
    fmt::print("perplexity delta, {} vs {}: {:+.5f}%\n", names[1], names[0],
               100.0 * (ppl[1] / ppl[0] - 1.0));
  } catch (const IoError& e) {
    fmt::print("perplexity: skipped ({})\n", e.what());
  }
  if (top1 < o.min_top1)
    fail("verify model: top-1 agreement {:.2f}% is below --min-top1 {:.2f}%", 100.0 * top1,
         100.0 * o.min_top1);
  if (o.max_logit_diff > 0 && double(worst) > o.max_logit_diff)
    fail("verify model: max|dlogit| {:.3e} is above --max-logit-diff {:.3e}", worst,
         o.max_logit_diff);
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

  auto mo = std::make_shared<VerifyModelOptions>();
  auto* model = verify->add_subcommand(
      "model", "Run a fixed prompt set on two backends and compare logits and perplexity");
  model->add_option("--model", mo->model, "run directory or exported safetensors folder")
      ->required();
  model->add_option("--backends", mo->backends, "two backends; the first decodes greedily")
      ->capture_default_str();
  model->add_option("--quant", mo->quant, "weight format on both: none, int8, q8_0, q4")
      ->capture_default_str();
  model->add_option("--kv-dtype", mo->kv_dtype, "KV cache elements on both: f32, bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  model->add_option("--max-tokens", mo->max_new, "tokens generated per prompt")
      ->capture_default_str();
  model->add_option("--ppl-tokens", mo->ppl_tokens, "held-out tokens scored for perplexity")
      ->capture_default_str();
  model->add_option("--data", mo->data,
                    "held-out token shard (default: the run config's validation split)");
  model
      ->add_option("--max-logit-diff", mo->max_logit_diff,
                   "fail when a logit differs by more than this (0 = no bound)")
      ->capture_default_str();
  model->add_option("--min-top1", mo->min_top1, "fail below this top-1 agreement (0..1)")
      ->capture_default_str();
  model->add_option("--threads", mo->threads, "backend threads (0: all cores)");
  model->callback([mo] { verify_model(*mo); });
}

}  // namespace keel::cli
