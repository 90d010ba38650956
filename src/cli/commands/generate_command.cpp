// `keel generate --run DIR --prompt TEXT`: load a finished run and sample a
// continuation (temperature 0 = greedy), streaming the text as it comes.
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "cli/commands/commands.h"
#include "core/error.h"
#include "train/generation.h"
#include "train/run_dir.h"

namespace keel::cli {

namespace {

struct GenerateArgs {
  std::string run_dir, prompt, backend;
  train::SampleOptions opt;
  bool no_stop = false;
};

void write_bytes(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size())
    fail<IoError>("cannot write to stdout");
  std::fflush(stdout);
}

void run_generate(GenerateArgs& a) {
  if (a.prompt.empty())
    fail("--prompt: the prompt is empty or missing (give some text to continue)");
  if (a.opt.temperature < 0) fail("--temperature: must be >= 0, got {}", a.opt.temperature);
  if (a.opt.top_k < 0) fail("--top-k: must be >= 0, got {}", a.opt.top_k);
  if (!(a.opt.top_p > 0 && a.opt.top_p <= 1))
    fail("--top-p: must be in (0, 1], got {}", a.opt.top_p);
  if (a.opt.max_tokens < 0) fail("--max-tokens: must be >= 0, got {}", a.opt.max_tokens);
  train::LoadedRun run = train::load_run(a.run_dir, a.backend);
  const std::vector<int32_t> prompt = run.tokenizer.encode(a.prompt);
  a.opt.stop_id = a.no_stop ? -1 : run.tokenizer.eot_id();
  write_bytes(a.prompt);
  train::generate(*run.model, prompt, a.opt, [&](int32_t id) {
    if (id != a.opt.stop_id) write_bytes(run.tokenizer.token_bytes(id));
  });
  write_bytes("\n");
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Sample text from a trained run");
  auto a = std::make_shared<GenerateArgs>();
  cmd->add_option("--run", a->run_dir, "run directory written by `keel train`")->required();
  cmd->add_option("--prompt", a->prompt, "text to continue (required, non-empty)");
  cmd->add_option("--max-tokens", a->opt.max_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->opt.temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("--top-k", a->opt.top_k, "sample among the k most likely tokens (0 = all)")
      ->capture_default_str();
  cmd->add_option("--top-p", a->opt.top_p, "nucleus sampling mass (1 = all)")
      ->capture_default_str();
  cmd->add_option("--seed", a->opt.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--backend", a->backend, "backend to run on (default: the run's train.backend)");
  cmd->add_flag("--no-stop", a->no_stop, "keep going past <|endoftext|>");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace keel::cli
