// `keel train [--config FILE] [key=value ...]`: prepare the corpus, build the
// model, train with a progress bar (plain periodic lines when stdout is not a
// terminal), log metrics.jsonl, then save weights, config and tokenizer into
// the run directory and compare the validation loss with the unigram entropy.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "train/metrics.h"
#include "train/peak_flops.h"
#include "train/run_dir.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace keel::cli {

namespace {

struct TrainArgs {
  std::string config_file;
  std::vector<std::string> overrides;
};

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// Progress on a terminal: one line rewritten with \r. Elsewhere: a plain line
// every log_every steps (and at evaluations and the last step).
class Progress {
 public:
  Progress(int64_t total, int64_t log_every)
      : total_(total), log_every_(log_every), tty_(::isatty(1) != 0) {}

  void update(const train::StepMetrics& m, double elapsed) {
    const double eta = elapsed / double(m.step) * double(total_ - m.step);
    const std::string val = m.val_loss ? fmt::format(" val {:.4f}", *m.val_loss) : "";
    if (tty_) {
      constexpr int kWidth = 24;
      const int filled = int(kWidth * m.step / total_);
      fmt::print("\r[{}{}] {}/{} loss {:.4f} | {:.0f} tok/s | ETA {}   ", std::string(filled, '#'),
                 std::string(kWidth - filled, '.'), m.step, total_, m.loss, m.tokens_per_s,
                 format_duration(eta));
      if (m.val_loss)
        fmt::print("\rstep {}/{}: train loss {:.4f}{}{}\n", m.step, total_, m.loss, val,
                   std::string(40, ' '));
      std::fflush(stdout);
    } else if (m.step % log_every_ == 0 || m.val_loss || m.step == total_ || m.step == 1) {
      fmt::print(
          "step {}/{} loss {:.4f}{} lr {:.3g} grad_norm {:.3f} tok/s {:.0f} mfu {:.1f}% eta {}\n",
          m.step, total_, m.loss, val, m.lr, m.grad_norm, m.tokens_per_s, 100 * m.mfu,
          format_duration(eta));
      std::fflush(stdout);
    }
  }
  void finish() {
    if (tty_) fmt::print("\n");
  }

 private:
  int64_t total_, log_every_;
  bool tty_;
};

void run_train(const TrainArgs& args) {
  io::Config cfg =
      args.config_file.empty() ? io::default_config() : io::load_config(args.config_file);
  io::apply_overrides(cfg, args.overrides);
  io::validate_config(cfg);

  const auto t_start = std::chrono::steady_clock::now();
  const data::PrepareResult prep = train::prepare_run_data(cfg);
  const data::Tokenizer tok = data::Tokenizer::load(prep.tokenizer_path);
  fmt::print(
      "data: {} train / {} val tokens, tokenizer {} ({} tokens), unigram entropy {:.4f} "
      "nats/token\n",
      prep.train_tokens, prep.val_tokens, prep.tokenizer_id, prep.vocab_size,
      prep.unigram_entropy_nats);

  auto be = train::make_run_backend(cfg);
  auto model = model::make_model(train::run_model_config(cfg, tok.vocab_size()), *be);
  model->init(cfg.train.seed);
  model->sync_compute_weights();
  const double peak = cfg.train.peak_gflops > 0
                          ? cfg.train.peak_gflops * 1e9
                          : train::measure_sgemm_gflops(*be, be->name() == "ref" ? 128 : 512) * 1e9;
  const auto& mc = model->config();
  fmt::print("model: {} {} layers, {} heads, n_embd {}, {} params ({} compute) on backend {}\n",
             mc.arch, mc.n_layer, mc.n_head, mc.n_embd, model->num_parameters(),
             dtype_name(mc.compute_dtype), be->describe());
  fmt::print(
      "train: {} steps x {} tokens (batch {} x seq {} x accum {}), peak {:.1f} GFLOP/s ({})\n",
      cfg.train.steps, cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum,
      cfg.train.batch_size, cfg.train.seq_len, cfg.train.grad_accum, peak / 1e9,
      cfg.train.peak_gflops > 0 ? "train.peak_gflops" : "measured SGEMM");

  train::Trainer trainer(*model, *be, train::make_train_sampler(cfg, prep),
                         train::make_val_sampler(cfg, prep), train::run_trainer_options(cfg, peak));
  io::make_dirs(cfg.run.dir);
  const std::string run = cfg.run.dir;
  // The config goes in first, so even an interrupted run says what it was.
  io::write_file_atomic((std::filesystem::path(run) / train::kRunConfigFile).string(),
                        io::config_to_toml(cfg));
  train::MetricsLog metrics((std::filesystem::path(run) / "metrics.jsonl").string(), true);

  Progress progress(cfg.train.steps, cfg.train.log_every);
  const auto t_train = std::chrono::steady_clock::now();
  double tokens_per_s_sum = 0, mfu_sum = 0;
  int64_t timed_steps = 0;
  while (!trainer.done()) {
    const train::StepMetrics m = trainer.step();
    metrics.append(m);
    // The first step pays for warm-up allocations: averaged only when it is the only one.
    if (m.step > 1 || cfg.train.steps == 1) {
      tokens_per_s_sum += m.tokens_per_s;
      mfu_sum += m.mfu;
      ++timed_steps;
    }
    progress.update(
        m, std::chrono::duration<double>(std::chrono::steady_clock::now() - t_train).count());
  }
  progress.finish();
  const double train_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_train).count();
  // NaN when the corpus is too small to hold out a validation split.
  const double val = trainer.last_val_loss()    ? *trainer.last_val_loss()
                     : trainer.has_validation() ? trainer.evaluate()
                                                : std::nan("");

  nlohmann::json summary = {
      {"steps", trainer.step_count()},
      {"val_loss", std::isfinite(val) ? nlohmann::json(val) : nlohmann::json()},
      {"unigram_entropy_nats", prep.unigram_entropy_nats},
      {"train_seconds", train_s},
      {"tokens_per_s", timed_steps ? tokens_per_s_sum / double(timed_steps) : 0.0},
      {"mfu", timed_steps ? mfu_sum / double(timed_steps) : 0.0},
      {"peak_gflops", peak / 1e9},
      {"parameters", model->num_parameters()},
      {"tokenizer", prep.tokenizer_id}};
  train::save_run(run, cfg, *model, tok, summary);
  if (!trainer.has_validation())
    fmt::print(
        "no validation split (data.val_fraction {} holds too few tokens); unigram entropy "
        "{:.4f} nats/token\n",
        cfg.data.val_fraction, prep.unigram_entropy_nats);
  else
    fmt::print("validation loss {:.4f} nats/token vs unigram entropy {:.4f} nats/token ({})\n", val,
               prep.unigram_entropy_nats,
               val < prep.unigram_entropy_nats
                   ? fmt::format("{:.3f} below", prep.unigram_entropy_nats - val)
                   : std::string("NOT below"));
  fmt::print("trained in {} ({:.0f} tokens/s); total {}; run saved to {}\n",
             format_duration(train_s), summary["tokens_per_s"].get<double>(),
             format_duration(
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()),
             run);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model (default: the embedded tiny config)");
  auto args = std::make_shared<TrainArgs>();
  cmd->add_option("--config", args->config_file,
                  "TOML config file (default: embedded configs/tiny.toml)");
  cmd->add_option("overrides", args->overrides,
                  "key=value overrides, e.g. train.steps=100 model.n_layer=2");
  cmd->callback([args] { run_train(*args); });
}

}  // namespace keel::cli
