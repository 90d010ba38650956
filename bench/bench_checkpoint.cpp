// Checkpoint stall on the gpt2-124m config (configs/gpt2-124m.toml): how long
// an asynchronous save holds the training loop (waiting for the previous
// write + copying parameters, AdamW moments into the host snapshot), as a
// ratio to the time of one optimizer step of that config, with a
// synchronous save (the whole write inside the loop) as the peer measured in
// the same run. Prints one JSON line.
//
// One step of the config is grad_accum micro-batches of batch_size x seq_len
// tokens; on a small CPU it takes minutes, so by default the step is
// measured piecewise: a step of one micro-batch (t1) and the optimizer
// update alone (t_opt) give step = accum * (t1 - t_opt) + t_opt.
// --full-step runs and times a whole step; --micro-batch B splits each
// micro-batch into rows of B (less activation memory, same tokens per step).
// Usage: bench_checkpoint [--source-dir DIR] [--micro-batch B] [--full-step]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/rng.h"
#include "data/batch_sampler.h"
#include "data/token_shard.h"
#include "io/config.h"
#include "model/model.h"
#include "resilience/run_loop.h"
#include "store/run_model.h"
#include "train/run_setup.h"
#include "train/trainer.h"

using namespace keel;
using clk = std::chrono::steady_clock;

namespace {

constexpr int64_t kVocab = 50257;  // GPT-2's BPE, the config's tokenizer

double since(clk::time_point t0) {
  return std::chrono::duration<double>(clk::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string src = ".";
  int64_t micro = 0;  // rows per micro-batch; 0: the config's batch_size
  bool full_step = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--source-dir") && i + 1 < argc)
      src = argv[++i];
    else if (!std::strcmp(argv[i], "--micro-batch") && i + 1 < argc)
      micro = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--full-step"))
      full_step = true;
    else {
      std::fprintf(stderr, "usage: %s [--source-dir DIR] [--micro-batch B] [--full-step]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    io::Config cfg = io::load_config(src + "/configs/gpt2-124m.toml");
    const auto tmp = std::filesystem::temp_directory_path() /
                     fmt::format("keel_bench_checkpoint_{}", ::getpid());
    std::filesystem::remove_all(tmp);
    std::filesystem::create_directories(tmp);
    cfg.run.dir = (tmp / "run").string();
    cfg.checkpoint.keep_last = 2;
    const int64_t rows = cfg.train.batch_size, accum = cfg.train.grad_accum, T = cfg.train.seq_len;
    if (micro <= 0) micro = rows;
    if (rows % micro != 0) {
      std::fprintf(stderr, "--micro-batch must divide batch_size %lld\n", (long long)rows);
      return 2;
    }
    // Same rows per optimizer step as the config, in micro-batches of `micro` rows.
    const int64_t step_accum = accum * (rows / micro);

    // Random tokens: the time of a step does not depend on the text.
    const std::string shard = (tmp / "train.bin").string();
    std::vector<int32_t> toks(size_t(4 * T * micro + 1));
    const Rng rng(7, 0);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(rng.below(i, kVocab));
    data::write_token_shard(shard, toks, kVocab);

    auto be = backend::make_backend("cpu");
    const char* th = std::getenv("KEEL_BENCH_THREADS");
    be->set_threads(th ? std::atoi(th) : 2);
    auto model = model::make_model(store::run_model_config(cfg, kVocab), *be);
    model->init(cfg.train.seed);
    model->sync_compute_weights();
    train::TrainerOptions o = train::run_trainer_options(cfg, 1e12);
    o.batch_size = micro;
    o.grad_accum = full_step ? step_accum : 1;
    o.steps = 1000;
    train::Trainer trainer(*model, *be,
                           data::BatchSampler(data::TokenShard::open(shard), micro, T, 1),
                           std::nullopt, o);
    std::fprintf(stderr, "[bench-checkpoint] gpt2-124m %s, %lld params; warm-up step...\n",
                 dtype_name(model->config().compute_dtype).data(),
                 (long long)model->num_parameters());
    trainer.step();  // warm-up: first-touch allocations
    auto t0 = clk::now();
    trainer.step();
    const double t1 = since(t0);
    double step_s = t1, t_opt = 0;
    if (!full_step) {
      t0 = clk::now();
      trainer.optimizer().step(1e-9, 1.f);
      model->sync_compute_weights();
      t_opt = since(t0);
      step_s = double(step_accum) * (t1 - t_opt) + t_opt;
    }
    std::fprintf(stderr, "[bench-checkpoint] step %.2f s (%s); saving...\n", step_s,
                 full_step ? "measured" : "from one micro-batch and the update");

    resilience::RunLoop loop(trainer, cfg, {});
    loop.start();
    // Cold: the snapshot buffer is allocated and first touched.
    const double stall_cold = loop.save_checkpoint();
    t0 = clk::now();
    loop.finish();
    const double write_after_cold = since(t0);
    // Steady state: the buffer is reused; the previous write has finished.
    const double stall = loop.save_checkpoint();
    t0 = clk::now();
    loop.finish();
    const double write_s = stall + since(t0);
    // Peer: a synchronous save writes inside the loop.
    cfg.checkpoint.async = false;
    resilience::RunLoopOptions sync_opt;
    sync_opt.resume = resilience::ResumeMode::Never;  // the async run's checkpoints moved aside
    resilience::RunLoop sync_loop(trainer, cfg, sync_opt);
    sync_loop.start();
    const double stall_sync = sync_loop.save_checkpoint();
    uint64_t bytes = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(tmp / "run" / "checkpoints"))
      if (e.is_regular_file()) bytes += e.file_size();
    std::filesystem::remove_all(tmp);

    nlohmann::ordered_json out;
    out["bench"] = "checkpoint";
    out["model"] = "gpt2-124m";
    out["compute_dtype"] = dtype_name(model->config().compute_dtype);
    out["params"] = model->num_parameters();
    out["tokens_per_step"] = rows * accum * T;
    out["step_seconds"] = step_s;
    out["step_measured"] =
        full_step ? "full step" : "grad_accum * (micro-batch step - update) + update";
    out["micro_batch_step_seconds"] = t1;
    out["update_seconds"] = t_opt;
    out["ckpt_bytes_on_disk"] = bytes;
    out["stall_cold_seconds"] = stall_cold;
    out["stall_seconds"] = stall;
    out["write_seconds"] = write_s;
    out["write_after_cold_seconds"] = write_after_cold;
    out["sync_save_seconds"] = stall_sync;
    out["ratio_stall_vs_step"] = stall / step_s;
    out["ratio_stall_cold_vs_step"] = stall_cold / step_s;
    out["ratio_sync_save_vs_step"] = stall_sync / step_s;
    out["stall_under_5pct"] = stall / step_s < 0.05;
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: %s\n", e.what());
    return 1;
  }
  return 0;
}
