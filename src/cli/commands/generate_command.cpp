// `keel generate --run DIR --prompt TEXT` (or --model FOLDER for a Hugging
// Face style folder): load a model and sample a continuation (temperature 0 =
// greedy), streaming the text as it comes.
#include <cstdio>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "cli/commands/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "train/generation.h"
#include "train/model_import.h"
#include "train/run_dir.h"

namespace keel::cli {

namespace {

struct GenerateArgs {
  std::string run_dir, model_dir, prompt, backend, logits_out;
  train::SampleOptions opt;
  bool no_stop = false;
};

void write_bytes(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size())
    fail<IoError>("cannot write to stdout");
  std::fflush(stdout);
}

// The logits that chose each generated id (row k predicts ids[k]), from one
// forward pass over prompt + ids, as JSON: for comparing with another engine.
void write_logits(const std::string& path, model::Model& model, const std::vector<int32_t>& prompt,
                  const std::vector<int32_t>& ids) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), ids.begin(), ids.end());
  if (ids.empty()) all.pop_back();
  if (int64_t(all.size()) > model.config().max_seq_len)
    fail("--logits-out: prompt + generated = {} tokens exceeds the model's context of {}",
         all.size(), model.config().max_seq_len);
  const auto T = int64_t(all.size());
  const Tensor logits = model.logits(Tensor::from_i32(all, Shape{1, T}));
  const int64_t V = logits.dim(2);
  const float* l = logits.data<float>();
  nlohmann::json rows = nlohmann::json::array();
  for (size_t k = 0; k < ids.size(); ++k) {
    const float* row = l + (int64_t(prompt.size()) - 1 + int64_t(k)) * V;
    rows.push_back(std::vector<float>(row, row + V));
  }
  const nlohmann::json j = {{"prompt_ids", prompt}, {"ids", ids}, {"logits", rows}};
  io::write_file_atomic(path, j.dump() + "\n");
}

void run_generate(GenerateArgs& a) {
  if (a.prompt.empty())
    fail("--prompt: the prompt is empty or missing (give some text to continue)");
  if (a.opt.temperature < 0) fail("--temperature: must be >= 0, got {}", a.opt.temperature);
  if (a.opt.top_k < 0) fail("--top-k: must be >= 0, got {}", a.opt.top_k);
  if (!(a.opt.top_p > 0 && a.opt.top_p <= 1))
    fail("--top-p: must be in (0, 1], got {}", a.opt.top_p);
  if (a.opt.max_tokens < 0) fail("--max-tokens: must be >= 0, got {}", a.opt.max_tokens);
  if (a.run_dir.empty() == a.model_dir.empty())
    fail("generate: give exactly one of --run DIR (a keel run) or --model FOLDER (a model folder)");
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<model::Model> model;
  data::Tokenizer tok;
  if (!a.run_dir.empty()) {
    train::LoadedRun run = train::load_run(a.run_dir, a.backend);
    be = std::move(run.backend);
    model = std::move(run.model);
    tok = std::move(run.tokenizer);
  } else {
    be = backend::make_backend(a.backend.empty() ? "cpu" : a.backend);
    train::LoadedModel m = train::load_model_folder(a.model_dir, *be);
    model = std::move(m.model);
    tok = std::move(m.tokenizer);
  }
  const std::vector<int32_t> prompt = tok.encode(a.prompt);
  a.opt.stop_id = a.no_stop ? -1 : tok.eot_id();
  write_bytes(a.prompt);
  const std::vector<int32_t> ids = train::generate(*model, prompt, a.opt, [&](int32_t id) {
    if (id != a.opt.stop_id) write_bytes(tok.token_bytes(id));
  });
  write_bytes("\n");
  if (!a.logits_out.empty()) write_logits(a.logits_out, *model, prompt, ids);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Sample text from a trained run");
  auto a = std::make_shared<GenerateArgs>();
  cmd->add_option("--run", a->run_dir, "run directory written by `keel train`");
  cmd->add_option("--model", a->model_dir,
                  "Hugging Face style model folder (GPT-2 or Llama; instead of --run)");
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
  cmd->add_option("--logits-out", a->logits_out,
                  "also write the prompt ids, generated ids and each step's logits as JSON");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace keel::cli
