// `keel train [--config FILE] [--resume | --no-resume] [key=value ...]`:
// prepare the corpus, build the model, resume from the newest verified
// checkpoint of the run directory when there is one, train with a progress
// bar (plain periodic lines when stdout is not a terminal) through
// resilience::RunLoop (metrics.jsonl, checkpoints), then save weights, config
// and tokenizer into the run directory and compare the validation loss with
// the unigram entropy.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands/commands.h"
#include "cli/commands/report_environment.h"
#include "core/error.h"
#include "data/run_corpus.h"
#include "dist/run_world.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "resilience/heartbeat.h"
#include "resilience/resilience_guard.h"
#include "resilience/run_loop.h"
#include "resilience/snapshot_store.h"
#include "resilience/supervisor.h"
#include "store/model_import.h"
#include "store/run_dir.h"
#include "train/balance_summary.h"
#include "train/metrics.h"
#include "train/peak_flops.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace keel::cli {

namespace {

struct TrainArgs {
  std::string config_file;
  std::vector<std::string> overrides;
  bool resume = false;     // require a checkpoint to resume from
  bool no_resume = false;  // start from scratch even when checkpoints exist
  std::string init_from;   // weights to start from instead of init(seed)
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
  // first_step: steps already done when this process started (a resume).
  Progress(int64_t total, int64_t log_every, int64_t first_step = 0)
      : total_(total), first_(first_step), log_every_(log_every), tty_(::isatty(1) != 0) {}

  void update(const train::StepMetrics& m, double elapsed) {
    const double eta =
        elapsed / double(std::max<int64_t>(m.step - first_, 1)) * double(total_ - m.step);
    const std::string val = m.val_loss ? fmt::format(" val {:.4f}", *m.val_loss) : "";
    const std::string moe = moe_stats(m);
    if (tty_) {
      // A redraw costs a write through the terminal (a pty under mpirun) on
      // the step loop's thread: ten a second are enough for a person.
      const auto now = std::chrono::steady_clock::now();
      if (!m.val_loss && m.step != total_ && m.step != first_ + 1 &&
          now - last_draw_ < std::chrono::milliseconds(100))
        return;
      last_draw_ = now;
      constexpr int kWidth = 24;
      const int filled = int(kWidth * m.step / total_);
      fmt::print("\r[{}{}] {}/{} loss {:.4f} | {:.0f} tok/s | ETA {}   ", std::string(filled, '#'),
                 std::string(kWidth - filled, '.'), m.step, total_, m.loss, m.tokens_per_s,
                 format_duration(eta));
      if (m.val_loss)
        fmt::print("\rstep {}/{}: train loss {:.4f}{}{}{}\n", m.step, total_, m.loss, val, moe,
                   std::string(40, ' '));
      std::fflush(stdout);
    } else if (m.step % log_every_ == 0 || m.val_loss || m.step == total_ || m.step == first_ + 1) {
      fmt::print(
          "step {}/{} loss {:.4f}{} lr {:.3g} grad_norm {:.3f} tok/s {:.0f} mfu {:.1f}% eta {}{}\n",
          m.step, total_, m.loss, val, m.lr, m.grad_norm, m.tokens_per_s, 100 * m.mfu,
          format_duration(eta), moe);
      std::fflush(stdout);
    }
  }
  void finish() {
    if (tty_) fmt::print("\n");
  }
  // Mixture-of-experts balance: " expert load max/mean 1.12 [1.10 1.15]
  // entropy 2.07" (mean over layers, then each layer), empty for dense models.
  static std::string moe_stats(const train::StepMetrics& m) {
    std::string all, layers, ent;
    for (const auto& [k, v] : m.model_stats) {
      if (k == "expert_load_max_mean") all = fmt::format(" expert load max/mean {:.2f}", v);
      if (k.starts_with("expert_load_max_mean.layer"))
        layers += fmt::format("{}{:.2f}", layers.empty() ? " [" : " ", v);
      if (k == "routing_entropy") ent = fmt::format(" entropy {:.3f}", v);
    }
    return all.empty() ? "" : all + (layers.empty() ? "" : layers + "]") + ent;
  }

 private:
  int64_t total_, first_, log_every_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool tty_;
};

void run_train(const TrainArgs& args) {
  io::Config cfg =
      args.config_file.empty() ? io::default_config() : io::load_config(args.config_file);
  io::apply_overrides(cfg, args.overrides);
  io::validate_config(cfg);
  // Under mpirun this process is one rank of a data-parallel world
  // (docs/distributed.md); only rank 0 prints and writes the run directory.
  dist::RunWorld world(cfg.dist);
  if (world.rank() != 0 && !std::freopen("/dev/null", "w", stdout))
    fail("rank {}: cannot redirect stdout", world.rank());
  // Beats to `keel launch` when it watches this world (heartbeat.h).
  resilience::HeartbeatSender* heartbeat = resilience::rank_heartbeat(world.rank());

  const auto t_start = std::chrono::steady_clock::now();
  // Rank 0 fills the shared data cache first; the others then find it.
  if (world.rank() != 0) world.barrier(24 * 3600.0);
  const data::PrepareResult prep = data::prepare_run_corpus(cfg);
  if (world.rank() == 0) world.barrier(24 * 3600.0);
  const data::Tokenizer tok = data::Tokenizer::load(prep.tokenizer_path);
  fmt::print(
      "data: {} train / {} val tokens, tokenizer {} ({} tokens), unigram entropy {:.4f} "
      "nats/token\n",
      prep.train_tokens, prep.val_tokens, prep.tokenizer_id, prep.vocab_size,
      prep.unigram_entropy_nats);

  auto be = store::make_run_backend(cfg);
  auto model = model::make_model(store::run_model_config(cfg, tok.vocab_size()), *be);
  model->init(cfg.train.seed);
  model->sync_compute_weights();
  // --init replaces the random start; a checkpoint resumed below still wins.
  if (!args.init_from.empty()) {
    store::init_weights_from(args.init_from, *model, &tok);
    fmt::print("init: weights from {}\n", args.init_from);
  }
  const auto& mc = model->config();
  // MFU against the peak of the dtype the matmuls run in.
  const double peak =
      cfg.train.peak_gflops > 0
          ? cfg.train.peak_gflops * 1e9
          : train::measure_gemm_gflops(*be, mc.compute_dtype, be->name() == "ref" ? 128 : 512) *
                1e9;
  fmt::print("model: {} {} layers, {} heads, n_embd {}, {} params ({} compute) on backend {}\n",
             mc.arch, mc.n_layer, mc.n_head, mc.n_embd, model->num_parameters(),
             dtype_name(mc.compute_dtype), be->describe());
  fmt::print(
      "train: {} steps x {} tokens (batch {} x seq {} x accum {}), peak {:.1f} GFLOP/s ({})\n",
      cfg.train.steps, cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum,
      cfg.train.batch_size, cfg.train.seq_len, cfg.train.grad_accum, peak / 1e9,
      cfg.train.peak_gflops > 0 ? "train.peak_gflops"
                                : fmt::format("measured {} GEMM", dtype_name(mc.compute_dtype)));

  train::Trainer trainer(*model, *be, train::make_train_sampler(cfg, prep),
                         train::make_val_sampler(cfg, prep), [&] {
                           train::TrainerOptions o = train::run_trainer_options(cfg, peak);
                           o.data_world = world.size();
                           o.data_rank = world.rank();
                           return o;
                         }());
  // A warm spare world has paid for start-up (processes, MPI, data, model
  // memory, the GEMM peak) and waits here until the supervisor releases it
  // in place of a failed world; everything below reads the run as it is then.
  if (heartbeat) heartbeat->wait_until_released();
  io::make_dirs(cfg.run.dir);
  const std::string run = cfg.run.dir;
  // The config goes in first, so even an interrupted run says what it was.
  if (world.rank() == 0)
    io::write_file_atomic((std::filesystem::path(run) / store::kRunConfigFile).string(),
                          io::config_to_toml(cfg));
  // Backend, GEMM, threads, versions for `keel report`.
  if (world.rank() == 0) report::write_run_environment(run, *be, world.size());

  resilience::RunLoopOptions loop_opt;
  loop_opt.resume = args.resume      ? resilience::ResumeMode::Require
                    : args.no_resume ? resilience::ResumeMode::Never
                                     : resilience::ResumeMode::Auto;
  loop_opt.tokenizer_id = prep.tokenizer_id;
  loop_opt.rank = world.rank();
  loop_opt.world_size = world.size();
  // The failure detectors and the fault injector (docs/faults.md); a fault
  // plan reaches every rank as the resilience.faults key.
  resilience::AllGatherU64 allgather = world.allgather_u64();
  if (!allgather) allgather = [](uint64_t h) { return std::vector<uint64_t>{h}; };
  resilience::GuardOptions guard_opt = resilience::guard_options(cfg);
  guard_opt.backend = be.get();
  resilience::ResilienceGuard guard(guard_opt, run, world.rank(), world.size(), model->parameters(),
                                    std::move(allgather),
                                    [&world](int code) { world.abort(code); });
  loop_opt.sync = guard.wrap_sync(world.attach(*model, trainer));
  trainer.set_before_evaluate([&guard] { guard.pause_step_clock(); });
  // The world outlives the backend and the model (MPI spans the whole run);
  // the sync it attached must not: it holds device memory and the model's
  // listener. Declared after them, so it goes first, on errors too.
  struct DetachSync {
    dist::RunWorld& w;
    ~DetachSync() { w.detach(); }
  } detach_sync{world};
  // In-memory snapshots (docs/faults.md): each rank keeps the moments of its
  // ZeRO-1 shard, or all of them. Gradient compression and DiLoCo keep
  // per-rank state (residuals, outer momentum) the snapshots do not carry yet,
  // so those runs rely on disk checkpoints alone.
  if (cfg.resilience.snapshot_every > 0) {
    const bool per_rank_state =
        cfg.dist.compression != "none" || cfg.dist.sync == "diloco" || cfg.dist.compress_update;
    if (per_rank_state && world.size() > 1) {
      fmt::print(
          "snapshots: off (dist.compression / dist.sync = diloco keep per-rank state that "
          "only disk checkpoints hold)\n");
    } else {
      const size_t n = trainer.optimizer().params().size();
      for (int r = 0; r < world.size(); ++r)
        loop_opt.snapshot_shards.push_back(world.data_parallel() ? world.data_parallel()->shard(r)
                                                                 : std::pair<size_t, size_t>{0, n});
      loop_opt.comm = world.comm();
      loop_opt.before_snapshot = [&guard](int64_t step) { guard.injector().before_snapshot(step); };
      loop_opt.snapshot_halfway = [&guard](int64_t step) { guard.injector().in_snapshot(step); };
      guard.injector().set_drop_memory([run, r = world.rank(), n = world.size()](int machines) {
        for (int k = 0; k < std::min(machines, n); ++k)
          resilience::unlink_rank_snapshots(run, (r + k) % n);
      });
    }
  }
  loop_opt.save_health = [&guard] { return guard.state(); };
  loop_opt.load_health = [&guard](const nlohmann::json& j) { guard.load_state(j); };
  loop_opt.after_train_step = [&guard](const train::StepMetrics& m) { guard.end_step(m); };
  loop_opt.skip_step = [&guard](int64_t s) { return guard.skip_step(s); };
  loop_opt.before_checkpoint = [&guard](int64_t step) { guard.before_checkpoint(step); };
  loop_opt.entering_exchange = [&guard] { guard.entering_exchange(); };
  loop_opt.on_checkpoint_written = [&guard](int64_t step, const std::string& path) {
    guard.after_checkpoint(step, path);
  };
  std::unique_ptr<Progress> progress;
  auto t_train = std::chrono::steady_clock::now();
  double tokens_per_s_sum = 0, mfu_sum = 0;
  int64_t timed_steps = 0, first_step = 0;
  train::BalanceSummary balance(cfg.train.warmup_steps);
  loop_opt.on_step = [&](const train::StepMetrics& m) {
    balance.add(m);
    // The first step pays for warm-up allocations: averaged only when it is the only one.
    if (m.step > first_step + 1 || m.step == cfg.train.steps) {
      tokens_per_s_sum += m.tokens_per_s;
      mfu_sum += m.mfu;
      ++timed_steps;
    }
    progress->update(
        m, std::chrono::duration<double>(std::chrono::steady_clock::now() - t_train).count());
  };
  resilience::RunLoop loop(trainer, cfg, loop_opt);
  guard.set_checkpoint_hooks(
      [&loop] { loop.finish(); },
      [&loop] { return resilience::newest_intact_checkpoint_step(loop.checkpoint_dir()); });
  if (const auto resumed = loop.start()) {
    // Each skipped checkpoint was already reported (with its reason) by the loop.
    fmt::print("resumed from {} (step {} of {})\n",
               resumed->source == "snapshot" ? "the in-memory snapshot" : resumed->path,
               resumed->step, cfg.train.steps);
    first_step = resumed->step;
  }
  guard.started_at(first_step);
  if (cfg.checkpoint.every > 0)
    fmt::print("checkpoints: every {} steps into {} (keep last {}{}, {})\n", cfg.checkpoint.every,
               loop.checkpoint_dir(), cfg.checkpoint.keep_last,
               cfg.checkpoint.keep_every > 0
                   ? fmt::format(" and every {}th step", cfg.checkpoint.keep_every)
                   : "",
               cfg.checkpoint.async ? "written in the background" : "written synchronously");
  std::fflush(stdout);
  progress = std::make_unique<Progress>(cfg.train.steps, cfg.train.log_every, first_step);
  t_train = std::chrono::steady_clock::now();
  loop.run();
  progress->finish();
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
  if (!balance.empty()) summary["expert_load_after_warmup"] = balance.json();
  if (world.rank() == 0) store::save_run(run, cfg, *model, tok, summary);
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
  if (!balance.empty()) fmt::print("{}\n", balance.line());
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
  auto* resume = cmd->add_flag(
      "--resume", args->resume,
      "resume from the newest verified checkpoint of the run (an error when there is none); "
      "without this flag a run resumes automatically when it has checkpoints");
  cmd->add_flag("--no-resume", args->no_resume,
                "start from scratch; existing checkpoints are moved aside, not deleted")
      ->excludes(resume);
  cmd->add_option("--init", args->init_from,
                  "start from these weights: a model folder (config.json), a run directory or a "
                  ".safetensors file");
  cmd->add_option("overrides", args->overrides,
                  "key=value overrides, e.g. train.steps=100 model.n_layer=2");
  cmd->callback([args] { run_train(*args); });
}

}  // namespace keel::cli
