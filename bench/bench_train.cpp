// Training throughput of the GPT-2 124M shape at B=4, T=64: keel with f32 and
// bf16 compute, and PyTorch (tests/reference/train_torch_bench.py, under each
// BLAS setup tried, best one kept) in the same run. Prints one JSON line with
// tokens/s, ratios, and MFU against the measured GEMM peak of each dtype.
// Usage: bench_train [--steps N] [--source-dir DIR] [--no-torch]   (run from the repo root)
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
#include "model/model.h"
#include "train/peak_flops.h"
#include "train/trainer.h"

using namespace keel;

namespace {

constexpr int64_t kB = 4, kT = 64, kVocab = 50257;

model::ModelConfig gpt2_124m(DType compute) {
  model::ModelConfig c;
  c.arch = "gpt2";
  c.vocab_size = kVocab;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  c.max_seq_len = 1024;
  c.compute_dtype = compute;
  return c;
}

struct KeelResult {
  double tokens_per_s = 0, flops_per_token = 0, first_loss = 0;
  int64_t params = 0;
};

// Warm-up step, then `steps` timed optimizer steps through the real Trainer.
KeelResult bench_keel(backend::Backend& be, DType compute, const std::string& shard, int steps) {
  auto m = model::make_model(gpt2_124m(compute), be);
  m->init(0);
  m->sync_compute_weights();
  train::TrainerOptions o;
  o.batch_size = kB;
  o.seq_len = kT;
  o.steps = steps + 1;
  o.schedule = train::LrSchedule{3e-4, 3e-5, 0, steps + 1};
  o.adamw = train::AdamWConfig{0.9, 0.95, 1e-8, 0.1};
  o.grad_clip = 1.0;
  train::Trainer t(*m, be, data::BatchSampler(data::TokenShard::open(shard), kB, kT, 1),
                   std::nullopt, o);
  KeelResult r;
  r.first_loss = t.step().loss;
  const auto t0 = std::chrono::steady_clock::now();
  while (!t.done()) t.step();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_s = double(kB * kT * steps) / dt;
  r.flops_per_token = m->flops_per_token(kT);
  r.params = m->num_parameters();
  return r;
}

// Runs a command and returns its last stdout line that parses as JSON (null if none).
nlohmann::json run_json(const std::string& cmd) {
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return nullptr;
  char buf[65536];
  nlohmann::json last = nullptr;
  while (std::fgets(buf, sizeof buf, p)) {
    auto j = nlohmann::json::parse(buf, nullptr, false);
    if (!j.is_discarded() && j.is_object()) last = j;
  }
  ::pclose(p);
  return last;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 3;
  std::string src = ".";
  bool torch = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--source-dir") && i + 1 < argc)
      src = argv[++i];
    else if (!std::strcmp(argv[i], "--no-torch"))
      torch = false;
    else {
      std::fprintf(stderr, "usage: %s [--steps N] [--source-dir DIR] [--no-torch]\n", argv[0]);
      return 2;
    }
  }
  // Random tokens: throughput does not depend on the text.
  const std::string shard =
      (std::filesystem::temp_directory_path() / fmt::format("keel_bench_train_{}.bin", ::getpid()))
          .string();
  std::vector<int32_t> toks(20000);
  const Rng rng(7, 0);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(rng.below(i, kVocab));
  data::write_token_shard(shard, toks, kVocab);

  auto be = backend::make_backend("cpu");
  be->set_threads(2);
  const double peak = train::measure_sgemm_gflops(*be, 1024, 1.0) * 1e9;
  const double bf16_peak = train::measure_gemm_gflops(*be, DType::BF16, 1024, 1.0) * 1e9;
  std::fprintf(stderr, "[bench-train] GEMM peak f32 %.1f, bf16 %.1f GFLOP/s; keel f32...\n",
               peak / 1e9, bf16_peak / 1e9);
  const KeelResult f32 = bench_keel(*be, DType::F32, shard, steps);
  std::fprintf(stderr, "[bench-train] keel f32 %.1f tokens/s; keel bf16...\n", f32.tokens_per_s);
  const KeelResult bf16 = bench_keel(*be, DType::BF16, shard, steps);
  std::fprintf(stderr, "[bench-train] keel bf16 %.1f tokens/s\n", bf16.tokens_per_s);
  std::filesystem::remove(shard);

  nlohmann::ordered_json out;
  out["model"] = "gpt2-124m";
  out["B"] = kB;
  out["T"] = kT;
  out["timed_steps"] = steps;
  out["params"] = f32.params;
  out["flops_per_token"] = f32.flops_per_token;
  out["sgemm_peak_gflops"] = peak / 1e9;
  out["bf16_gemm_peak_gflops"] = bf16_peak / 1e9;
  out["keel_f32_tokens_per_s"] = f32.tokens_per_s;
  out["keel_bf16_tokens_per_s"] = bf16.tokens_per_s;
  out["keel_f32_mfu"] = f32.flops_per_token * f32.tokens_per_s / peak;
  // Each dtype against its own GEMM peak (bf16 against f32's read above 100%).
  out["keel_bf16_mfu"] = bf16.flops_per_token * bf16.tokens_per_s / bf16_peak;
  out["keel_first_loss"] = f32.first_loss;
  if (torch) {
    const std::string script = src + "/tests/reference/train_torch_bench.py";
    const std::string omp = "/usr/lib/x86_64-linux-gnu/openblas-openmp";
    const std::vector<std::pair<std::string, std::string>> setups = {
        {"openblas-openmp (LD_LIBRARY_PATH)", "LD_LIBRARY_PATH=" + omp + " OMP_NUM_THREADS=2"},
        {"openblas-openmp (LD_PRELOAD)",
         "LD_PRELOAD=" + omp + "/libopenblas.so.0:" + omp + "/libblas.so.3 OMP_NUM_THREADS=2"},
        {"system default (openblas-pthread)", "OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2"},
    };
    nlohmann::ordered_json tried = nlohmann::ordered_json::object();
    std::string best;
    double best_tps = 0;
    for (const auto& [name, env] : setups) {
      std::fprintf(stderr, "[bench-train] torch, %s...\n", name.c_str());
      const auto j = run_json(
          fmt::format("env {} /usr/bin/python3 {} --batch {} --seq {} --steps {} --threads 2", env,
                      script, kB, kT, steps));
      if (j.is_null()) {
        tried[name] = nullptr;
        continue;
      }
      const double tps = j.value("tokens_per_s", 0.0);
      tried[name] = tps;
      if (tps > best_tps) best_tps = tps, best = name;
    }
    out["torch_tokens_per_s"] = best_tps;
    out["torch_best_setup"] = best;
    out["torch_setups_tokens_per_s"] = tried;
    if (best_tps > 0) {
      out["torch_mfu"] = f32.flops_per_token * best_tps / peak;
      out["ratio_keel_f32_vs_torch"] = f32.tokens_per_s / best_tps;
      out["ratio_keel_bf16_vs_torch"] = bf16.tokens_per_s / best_tps;
    }
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
