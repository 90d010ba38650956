// `keel generate --run DIR --prompt TEXT` (or --model FOLDER for a Hugging
// Face style folder): load the model into the serving engine (KV cache, the
// server's sampler, quantized weights) and stream a continuation to stdout.
// The same request and seed give the same tokens as `keel serve`.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <future>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "cli/commands/commands.h"
#include "cli/commands/engine_options.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "serve/engine.h"
#include "store/gguf_import.h"
#include "store/model_import.h"
#include "store/run_dir.h"

namespace keel::cli {

namespace {

struct GenerateArgs {
  std::string run_dir, model_dir, prompt, logits_out;
  serve::EngineOptions engine;
  serve::SamplingParams sampling;
  int64_t max_tokens = 200;
  bool no_stop = false, stats = false;
};

void write_bytes(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size())
    fail<IoError>("cannot write to stdout");
  std::fflush(stdout);
}

// The logits that chose each generated id (row k predicts ids[k]) from one
// forward pass of the *training* model over prompt + ids, as JSON: an
// independent check of the engine (and of other engines) that shares no
// inference code with it.
void write_logits(const std::string& path, const std::string& model_path,
                  const std::vector<int32_t>& prompt, const std::vector<int32_t>& ids) {
  // The backend must outlive the model built on it.
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<model::Model> model;
  if (store::is_gguf_file(model_path)) {
    const store::ModelWeights w = store::read_gguf_model(model_path);
    be = backend::make_backend("cpu");
    model = model::make_model(w.config, *be);
    store::load_gguf_weights(w, *model);
  } else if (std::filesystem::exists(std::filesystem::path(model_path) / store::kRunConfigFile)) {
    store::LoadedRun run = store::load_run(model_path, "cpu");
    be = std::move(run.backend);
    model = std::move(run.model);
  } else {
    be = backend::make_backend("cpu");
    model = store::load_model_folder(model_path, *be).model;
  }
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), ids.begin(), ids.end());
  if (ids.empty()) {
    io::write_file_atomic(
        path,
        nlohmann::json({{"prompt_ids", prompt}, {"ids", ids}, {"logits", nlohmann::json::array()}})
                .dump() +
            "\n");
    return;
  }
  const auto T = int64_t(all.size());
  const Tensor logits = model->logits(Tensor::from_i32(all, Shape{1, T}));
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
  auto& s = a.sampling;
  if (a.prompt.empty())
    fail("--prompt: the prompt is empty or missing (give some text to continue)");
  if (!std::isfinite(s.temperature) || s.temperature < 0)
    fail("--temperature: must be a finite number >= 0, got {}", s.temperature);
  if (s.top_k < 0) fail("--top-k: must be >= 0, got {}", s.top_k);
  if (!(s.top_p > 0 && s.top_p <= 1)) fail("--top-p: must be in (0, 1], got {}", s.top_p);
  if (!std::isfinite(s.repetition_penalty) || !(s.repetition_penalty > 0))
    fail("--repetition-penalty: must be a finite number > 0, got {}", s.repetition_penalty);
  // CLI11's Range lets a NaN through (both of its compares are false).
  if (!(s.presence_penalty >= -2 && s.presence_penalty <= 2))
    fail("--presence-penalty: must be in [-2, 2], got {}", s.presence_penalty);
  if (!(s.frequency_penalty >= -2 && s.frequency_penalty <= 2))
    fail("--frequency-penalty: must be in [-2, 2], got {}", s.frequency_penalty);
  if (a.max_tokens < 0) fail("--max-tokens: must be >= 0, got {}", a.max_tokens);
  if (a.run_dir.empty() == a.model_dir.empty())
    fail("generate: give exactly one of --run DIR (a keel run) or --model FOLDER (a model folder)");
  const std::string path = a.run_dir.empty() ? a.model_dir : a.run_dir;
  if (!std::filesystem::exists(path))
    fail<IoError>("{}: {} not found", path, a.run_dir.empty() ? "model folder" : "run directory");
  a.engine.max_batch = 1;

  // Loading creates the backend, which prints its environment warnings (a
  // weak GEMM kernel, say) on stderr now, before any text reaches stdout.
  const auto t_load = std::chrono::steady_clock::now();
  std::unique_ptr<serve::Engine> engine = serve::Engine::load(path, a.engine);
  const data::Tokenizer& tok = engine->tokenizer();
  serve::Request req;
  req.prompt = tok.encode(a.prompt);
  const auto n_prompt = int64_t(req.prompt.size());
  const int64_t ctx = engine->context_length();
  if (n_prompt >= ctx)
    fail("--prompt: {} tokens leave no room in the model's context of {} tokens", n_prompt, ctx);
  s.max_tokens = std::min(a.max_tokens, ctx - n_prompt);
  if (s.max_tokens < a.max_tokens)
    std::fprintf(stderr,
                 "keel generate: %lld prompt tokens + --max-tokens %lld exceed the model's context "
                 "of %lld tokens; stopping after %lld\n",
                 static_cast<long long>(n_prompt), static_cast<long long>(a.max_tokens),
                 static_cast<long long>(ctx), static_cast<long long>(s.max_tokens));
  s.stop_at_eot = !a.no_stop;
  req.sampling = s;

  write_bytes(a.prompt);
  std::vector<int32_t> ids;
  serve::FinishReason finish = serve::FinishReason::Length;
  const auto t_start = std::chrono::steady_clock::now();
  auto t_first = t_start;
  if (s.max_tokens > 0) {
    std::promise<void> done;
    std::string error;
    std::exception_ptr write_error;
    engine->submit(std::move(req), [&](const serve::Event& e) {
      if (ids.empty() && !e.tokens.empty()) t_first = std::chrono::steady_clock::now();
      ids.insert(ids.end(), e.tokens.begin(), e.tokens.end());
      // The callback runs on the engine's thread: a failed write cancels the
      // request and is rethrown here, on the caller's.
      bool ok = write_error == nullptr;
      if (ok) {
        try {
          write_bytes(e.text);
        } catch (...) {
          write_error = std::current_exception();
          ok = false;
        }
      }
      if (e.finish != serve::FinishReason::None) {
        finish = e.finish;
        error = e.error;
        done.set_value();
      }
      return ok;
    });
    done.get_future().wait();
    if (write_error) std::rethrow_exception(write_error);
    if (finish == serve::FinishReason::Error) fail("generate: the engine failed: {}", error);
  }
  write_bytes("\n");
  const auto t_end = std::chrono::steady_clock::now();
  // The worker has stopped after shutdown: its last step's counts are in.
  engine->shutdown(true);
  if (a.stats) {
    const serve::EngineStats es = engine->stats();
    const auto sec = [](auto d) { return std::chrono::duration<double>(d).count(); };
    const double decode_s = sec(t_end - t_first);
    const nlohmann::json j = {
        {"prompt_tokens", n_prompt},
        {"completion_tokens", ids.size()},
        {"finish", serve::finish_reason_name(finish)},
        {"load_s", sec(t_start - t_load)},
        {"first_token_s", sec(t_first - t_start)},
        {"decode_tok_s", ids.size() > 1 ? double(ids.size() - 1) / decode_s : 0.0},
        {"total_tok_s", ids.empty() ? 0.0 : double(ids.size()) / sec(t_end - t_start)},
        {"host_syncs", es.host_syncs},
        {"bytes_to_device", es.bytes_to_device},
        {"bytes_to_host", es.bytes_to_host}};
    std::fprintf(stderr, "keel generate: %s\n", j.dump().c_str());
  }
  if (!a.logits_out.empty()) {
    std::vector<int32_t> prompt = tok.encode(a.prompt);
    write_logits(a.logits_out, path, prompt, ids);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Sample text from a trained model");
  auto a = std::make_shared<GenerateArgs>();
  a->sampling.temperature = 0.8;
  cmd->add_option("--run", a->run_dir, "run directory written by `keel train`");
  cmd->add_option("--model", a->model_dir,
                  "model folder (`keel export --format safetensors`, or a Hugging Face GPT-2 / "
                  "Llama folder) or a llama/gpt2/deepseek2 GGUF file; instead of --run");
  cmd->add_option("--prompt", a->prompt, "text to continue (required, non-empty)");
  cmd->add_option("--max-tokens", a->max_tokens,
                  "tokens to generate (at most the model's context minus the prompt)")
      ->capture_default_str();
  cmd->add_option("--temperature", a->sampling.temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("--top-k", a->sampling.top_k, "sample among the k most likely tokens (0 = all)")
      ->capture_default_str();
  cmd->add_option("--top-p", a->sampling.top_p, "nucleus sampling mass (1 = all)")
      ->capture_default_str();
  cmd->add_option("--repetition-penalty", a->sampling.repetition_penalty,
                  "CTRL-style penalty on prompt and output ids (1 = off)")
      ->capture_default_str();
  cmd->add_option("--presence-penalty", a->sampling.presence_penalty,
                  "subtracted from the logit of every id already generated, in [-2, 2]")
      ->check(CLI::Range(-2.0, 2.0))
      ->capture_default_str();
  cmd->add_option("--frequency-penalty", a->sampling.frequency_penalty,
                  "subtracted once per time an id was generated, in [-2, 2]")
      ->check(CLI::Range(-2.0, 2.0))
      ->capture_default_str();
  cmd->add_option("--seed", a->sampling.seed, "sampling seed (as the server's `seed` field)")
      ->capture_default_str();
  cmd->add_option("--stop", a->sampling.stop, "stop string (repeatable; not printed)");
  add_engine_options(cmd, a->engine);
  cmd->add_flag("--no-stop", a->no_stop, "keep going past <|endoftext|>");
  cmd->add_flag("--stats", a->stats,
                "print token counts and speed (load, first token, decode tokens/s) as one JSON "
                "line on stderr");
  cmd->add_option("--logits-out", a->logits_out,
                  "also write the prompt ids, generated ids and, from one forward pass of the "
                  "training model, the logits that chose each id, as JSON");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace keel::cli
