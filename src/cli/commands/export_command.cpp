// `keel export --run DIR --format safetensors|gguf --out PATH`: carry a
// finished run (or a Hugging Face style model folder) out of keel, as a
// Hugging Face style folder or as one GGUF file for llama.cpp.
#include <cstdio>
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "backend/backend.h"
#include "cli/commands/commands.h"
#include "core/error.h"
#include "store/model_export.h"
#include "store/model_import.h"
#include "store/run_dir.h"

namespace keel::cli {

namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string run_dir, model_dir, format = "gguf", out, dtype = "f32";
};

void run_export(const ExportArgs& a) {
  if (a.run_dir.empty() == a.model_dir.empty())
    fail("export: give exactly one of --run DIR (a keel run) or --model FOLDER (a model folder)");
  if (a.format != "gguf" && a.format != "safetensors")
    fail("--format: '{}' is not one of gguf, safetensors", a.format);
  const store::GgufWeights weights = store::gguf_weights_from_name(a.dtype);
  if (a.format == "safetensors" && a.dtype != "f32")
    fail("--dtype: a safetensors export is always f32 (got '{}')", a.dtype);

  // The weights come from a keel run or from a model folder; the backend only
  // serves q8_0 quantization here.
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<model::Model> model;
  data::Tokenizer tok;
  std::string src;
  if (!a.run_dir.empty()) {
    store::LoadedRun run = store::load_run(a.run_dir, "cpu");
    be = std::move(run.backend);
    model = std::move(run.model);
    tok = std::move(run.tokenizer);
    src = a.run_dir;
  } else {
    be = backend::make_backend("cpu");
    store::LoadedModel m = store::load_model_folder(a.model_dir, *be);
    model = std::move(m.model);
    tok = std::move(m.tokenizer);
    src = a.model_dir;
  }

  std::string out = a.out;
  if (out.empty()) {
    const fs::path base = fs::path(src).lexically_normal();
    const std::string stem = (base.has_filename() ? base : base.parent_path()).string();
    out = a.format == "gguf" ? fmt::format("{}/model-{}.gguf", stem, a.dtype)
                             : fmt::format("{}/hf", stem);
  }
  if (a.format == "gguf") {
    store::export_gguf(out, *model, tok, weights, *be);
  } else {
    store::export_hf_folder(out, *model, tok);
  }
  std::printf("exported %s model (%lld parameters) to %s\n", model->config().arch.c_str(),
              static_cast<long long>(model->num_parameters()), out.c_str());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "export", "Write a trained model as a Hugging Face style folder or a GGUF file");
  auto a = std::make_shared<ExportArgs>();
  cmd->add_option("--run", a->run_dir, "run directory written by `keel train`");
  cmd->add_option("--model", a->model_dir, "Hugging Face style model folder (instead of --run)");
  cmd->add_option("--format", a->format, "gguf (one file for llama.cpp) or safetensors (a folder)")
      ->capture_default_str();
  cmd->add_option(
         "--dtype", a->dtype,
         "GGUF weight type: f32, f16, q8_0, q4_0, or llama.cpp's presets q4_k_m, q5_k_m, q6_k")
      ->capture_default_str();
  cmd->add_option("--out", a->out,
                  "output path (default: <run>/model-<dtype>.gguf or <run>/hf for safetensors)");
  cmd->callback([a] { run_export(*a); });
}

}  // namespace keel::cli
