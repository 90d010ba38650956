// Training throughput of keel against the hardware and PyTorch, in one run:
// GPT-2 124M at B=4, T=64 (the short line), then the long lines: GPT-2 124M
// at B=1, T=1024 and a ~124M Llama (grouped-query attention) at B=1, T=2048.
// keel trains with f32 and bf16 compute through the real Trainer; PyTorch
// (tests/reference/train_torch_bench.py) under each BLAS setup and with f32
// and bf16 autocast, its best kept. Every figure is also given as a ratio to
// the measured GEMM peak of its dtype (MFU) and to PyTorch's best setup and
// PyTorch's best in the same dtype; the long lines add bf16/f32 and attention's
// FLOP rate against the GEMM of its dtype and against that dtype's peak.
// keel's f32 and bf16 steps are taken in turns and each figure is the median
// step, so the bf16/f32 ratio holds up on a shared, noisy machine. Each step
// is also paired with its dtype's GEMM peak measured right after it
// (*_mfu_paired: the median over steps of step rate / that peak), so that an
// MFU does not fall or rise with a host that was slower or faster when the
// start-up peak was taken than when the steps ran. The instructions' own peak
// per dtype (instruction_peak.h) is printed beside the GEMM peaks.
// Prints one JSON line.
// Usage: bench_train [--steps N] [--long-steps N] [--source-dir DIR] [--no-torch]
//                    [--short-only | --long-only]   (run from the repo root)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attention_rate.h"
#include "backend/backend.h"
#include "core/rng.h"
#include "data/batch_sampler.h"
#include "data/token_shard.h"
#include "instruction_peak.h"
#include "model/model.h"
#include "thread_timing.h"
#include "train/peak_flops.h"
#include "train/trainer.h"

using namespace keel;

namespace {

constexpr int64_t kVocab = 50257;

model::ModelConfig gpt2_124m() {
  model::ModelConfig c;
  c.arch = "gpt2";
  c.vocab_size = kVocab;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_embd = 768;
  c.max_seq_len = 1024;
  return c;
}

// GPT-2 small's width and depth as a Llama: 4 kv heads for 12 query heads,
// SwiGLU at 8/3 width, a 32000-token vocabulary; about 124M parameters.
model::ModelConfig llama_124m() {
  model::ModelConfig c;
  c.arch = "llama";
  c.vocab_size = 32000;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_kv_head = 4;
  c.n_embd = 768;
  c.max_seq_len = 2048;
  return c;
}

struct Line {
  std::string name;
  model::ModelConfig cfg;
  int64_t B, T;
  int steps;
};

struct KeelResult {
  double tokens_per_s = 0, seconds_per_step = 0, flops_per_token = 0, first_loss = 0;
  // Median over steps of (step FLOP rate / the GEMM peak measured right after
  // it), and the median of those peaks (FLOP/s).
  double mfu_paired = 0, peak_paired = 0;
  int64_t params = 0;
};

// Random tokens below `vocab` in a temporary shard: throughput does not depend on the text.
std::string write_shard(int64_t vocab, int64_t n, std::string_view tag) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            fmt::format("keel_bench_train_{}_{}_{}.bin", ::getpid(), vocab, tag))
                               .string();
  std::vector<int32_t> toks(static_cast<size_t>(n));
  const Rng rng(7, 0);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(rng.below(i, uint64_t(vocab)));
  data::write_token_shard(path, toks, vocab);
  return path;
}

// One model, its data and its Trainer, for one compute dtype.
struct KeelRun {
  std::string shard;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<train::Trainer> trainer;
  KeelRun(backend::Backend& be, const Line& line, DType compute) {
    model::ModelConfig cfg = line.cfg;
    cfg.compute_dtype = compute;
    // A file per run: both runs are alive at once.
    shard =
        write_shard(cfg.vocab_size, line.B * line.T * (line.steps + 2) + 1000, dtype_name(compute));
    model = model::make_model(cfg, be);
    model->init(0);
    model->sync_compute_weights();
    train::TrainerOptions o;
    o.batch_size = line.B;
    o.seq_len = line.T;
    o.steps = line.steps + 1;
    o.schedule = train::LrSchedule{3e-4, 3e-5, 0, line.steps + 1};
    o.adamw = train::AdamWConfig{0.9, 0.95, 1e-8, 0.1};
    o.grad_clip = 1.0;
    trainer = std::make_unique<train::Trainer>(
        *model, be, data::BatchSampler(data::TokenShard::open(shard), line.B, line.T, 1),
        std::nullopt, o);
  }
  ~KeelRun() {
    trainer.reset();
    std::filesystem::remove(shard);
  }
};

// f32 and bf16 through the real Trainer, one warm-up step each, then `steps`
// timed optimizer steps taken in turns (f32, bf16, f32, ...), so a busy
// moment on a shared machine lands on both dtypes instead of one. Each
// dtype's figure is its median step time. After each timed step, a short
// GEMM of its dtype (best of about 0.15 s of 1024^3 products) gives the peak
// of that moment for the paired MFU.
std::pair<KeelResult, KeelResult> bench_keel_pair(backend::Backend& be, const Line& line) {
  const DType dts[2] = {DType::F32, DType::BF16};
  KeelRun runs[2] = {KeelRun(be, line, dts[0]), KeelRun(be, line, dts[1])};
  KeelResult r[2];
  std::vector<double> seconds[2], peaks[2], mfus[2];
  for (int d = 0; d < 2; ++d) {
    r[d].first_loss = runs[d].trainer->step().loss;
    r[d].flops_per_token = runs[d].model->flops_per_token(line.T);
    r[d].params = runs[d].model->num_parameters();
  }
  const double tokens = double(line.B * line.T);
  for (int s = 0; s < line.steps; ++s)
    for (int d = 0; d < 2; ++d) {
      const auto t0 = std::chrono::steady_clock::now();
      runs[d].trainer->step();
      const double dt_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double peak = train::measure_gemm_gflops(be, dts[d], 1024, 0.15) * 1e9;
      seconds[d].push_back(dt_s);
      peaks[d].push_back(peak);
      mfus[d].push_back(r[d].flops_per_token * tokens / dt_s / peak);
    }
  for (int d = 0; d < 2; ++d) {
    r[d].seconds_per_step = bench::median(seconds[d]);
    r[d].tokens_per_s = tokens / r[d].seconds_per_step;
    r[d].mfu_paired = bench::median(mfus[d]);
    r[d].peak_paired = bench::median(peaks[d]);
  }
  return {r[0], r[1]};
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

struct Peaks {
  double f32 = 0, bf16 = 0;  // FLOP/s
  double of(DType dt) const { return dt == DType::BF16 ? bf16 : f32; }
};

struct TorchSetup {
  std::string name, env, args;
  DType dtype;
};

// PyTorch's tokens/s under each setup (null when a run printed nothing), the
// best overall and the best of each dtype (f32, bf16 autocast).
struct TorchResult {
  nlohmann::ordered_json tried = nlohmann::ordered_json::object();
  // How PyTorch ran attention and which PyTorch it was, as the script reports
  // them (torch < 2.0 has no fused scaled_dot_product_attention).
  std::string attention, version;
  std::string best;
  DType best_dtype = DType::F32;
  double best_tps = 0;
  double best_f32_tps = 0, best_bf16_tps = 0;
  double best_of(DType dt) const { return dt == DType::BF16 ? best_bf16_tps : best_f32_tps; }
};

TorchResult bench_torch(const std::string& src, const Line& line,
                        const std::vector<TorchSetup>& setups) {
  const std::string script = src + "/tests/reference/train_torch_bench.py";
  const model::ModelConfig c = model::resolve_config(line.cfg);
  std::string shape = fmt::format(
      "--arch {} --vocab {} --layers {} --heads {} --embd {} --max-seq {} --batch {} --seq {} "
      "--steps {} --threads 2",
      c.arch, c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.max_seq_len, line.B, line.T,
      line.steps);
  if (c.arch == "llama")
    shape += fmt::format(" --kv-heads {} --ffn {} --rope-theta {}", c.n_kv_head, c.ffn_hidden,
                         c.rope_theta);
  TorchResult r;
  for (const TorchSetup& s : setups) {
    std::fprintf(stderr, "[bench-train] %s: torch, %s...\n", line.name.c_str(), s.name.c_str());
    const auto j =
        run_json(fmt::format("env {} /usr/bin/python3 {} {} {}", s.env, script, shape, s.args));
    if (j.is_null()) {
      r.tried[s.name] = nullptr;
      continue;
    }
    const double tps = j.value("tokens_per_s", 0.0);
    r.tried[s.name] = tps;
    r.attention = j.value("attention", r.attention);
    r.version = j.value("torch", r.version);
    if (tps > r.best_tps) r.best_tps = tps, r.best = s.name, r.best_dtype = s.dtype;
    double& of_dtype = s.dtype == DType::BF16 ? r.best_bf16_tps : r.best_f32_tps;
    of_dtype = std::max(of_dtype, tps);
  }
  return r;
}

// keel's figures for one dtype: tokens/s, MFU against that dtype's peak, and
// the ratios to PyTorch's best setup and to PyTorch's best in the same dtype
// (when measured).
void put_keel(nlohmann::ordered_json& out, const std::string& dn, const KeelResult& k, double peak,
              const TorchResult* torch) {
  out["keel_" + dn + "_tokens_per_s"] = k.tokens_per_s;
  out["keel_" + dn + "_seconds_per_step"] = k.seconds_per_step;
  out["keel_" + dn + "_mfu"] = k.flops_per_token * k.tokens_per_s / peak;
  out["keel_" + dn + "_mfu_paired"] = k.mfu_paired;
  out["keel_" + dn + "_peak_paired_gflops"] = k.peak_paired / 1e9;
  if (torch && torch->best_tps > 0)
    out["ratio_keel_" + dn + "_vs_torch_best"] = k.tokens_per_s / torch->best_tps;
  const DType dt = dn == "bf16" ? DType::BF16 : DType::F32;
  if (torch && torch->best_of(dt) > 0)
    out["ratio_keel_" + dn + "_vs_torch_" + dn] = k.tokens_per_s / torch->best_of(dt);
}

void put_torch(nlohmann::ordered_json& out, const TorchResult& t, double flops_per_token,
               const Peaks& peaks) {
  out["torch_setups_tokens_per_s"] = t.tried;
  out["torch_attention"] = t.attention;
  out["torch_version"] = t.version;
  out["torch_best_setup"] = t.best;
  out["torch_best_tokens_per_s"] = t.best_tps;
  if (t.best_tps > 0) out["torch_best_mfu"] = flops_per_token * t.best_tps / peaks.of(t.best_dtype);
  // PyTorch's best in each dtype against the peak of that dtype.
  for (DType dt : {DType::F32, DType::BF16})
    if (t.best_of(dt) > 0)
      out["torch_" + std::string(dtype_name(dt)) + "_mfu"] =
          flops_per_token * t.best_of(dt) / peaks.of(dt);
}

// One long-sequence line: keel f32 and bf16, attention's share of each step
// and its FLOP rate against the GEMM rate of the dtype, and PyTorch.
nlohmann::ordered_json long_line(backend::Backend& be, const Line& line, const Peaks& peaks,
                                 const std::string& src, bool torch) {
  const model::ModelConfig c = model::resolve_config(line.cfg);
  nlohmann::ordered_json out;
  out["model"] = line.name;
  out["B"] = line.B;
  out["T"] = line.T;
  out["timed_steps"] = line.steps;
  const bench::AttentionShape shape{line.B, line.T, c.n_head, c.n_kv_head, c.n_embd / c.n_head};
  std::fprintf(stderr, "[bench-train] %s: keel f32 and bf16 in turns...\n", line.name.c_str());
  const auto [f32, bf16] = bench_keel_pair(be, line);
  const std::vector<std::pair<DType, KeelResult>> keel{{DType::F32, f32}, {DType::BF16, bf16}};
  out["params"] = keel[0].second.params;
  out["flops_per_token"] = keel[0].second.flops_per_token;
  TorchResult tr;
  if (torch) {
    // The BLAS setup that wins the short line (OpenMP OpenBLAS), each attention and dtype.
    const std::string omp =
        "LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp OMP_NUM_THREADS=2";
    tr = bench_torch(src, line,
                     {{"f32, sdpa", omp, "--attn sdpa --dtype f32", DType::F32},
                      {"bf16 autocast, sdpa", omp, "--attn sdpa --dtype bf16", DType::BF16}});
  }
  // On a shared machine one short peak measurement can land in a busy moment:
  // each dtype's peak is the best of the start-up one and the GEMM measured
  // beside attention here.
  Peaks best = peaks;
  for (const auto& [dt, k] : keel) {
    const std::string dn(dtype_name(dt));
    // Attention alone at the step's shape: its time over the step's (n_layer
    // forward and backward calls), and its FLOP rate against the GEMM rate
    // measured just before it (on a shared machine the rate of the moment).
    const double gemm = train::measure_gemm_gflops(be, dt, 1024, 0.5);
    const bench::AttentionRate ar = bench::measure_attention(be, shape, dt, 0.5);
    double& peak = dt == DType::BF16 ? best.bf16 : best.f32;
    peak = std::max(peak, gemm * 1e9);
    out["keel_" + dn + "_peak_gflops"] = peak / 1e9;
    put_keel(out, dn, k, peak, torch ? &tr : nullptr);
    out["keel_" + dn + "_attention_share"] =
        double(c.n_layer) * (ar.fwd_seconds + ar.bwd_seconds) / k.seconds_per_step;
    out["keel_" + dn + "_gemm_gflops_beside_attention"] = gemm;
    out["keel_" + dn + "_attention_fwd_gflops"] = ar.fwd_gflops;
    out["keel_" + dn + "_attention_bwd_gflops"] = ar.bwd_gflops;
    out["keel_" + dn + "_attention_fwd_vs_gemm"] = ar.fwd_gflops / gemm;
    out["keel_" + dn + "_attention_bwd_vs_gemm"] = ar.bwd_gflops / gemm;
    out["keel_" + dn + "_attention_fwd_vs_peak"] = ar.fwd_gflops * 1e9 / peak;
    out["keel_" + dn + "_attention_bwd_vs_peak"] = ar.bwd_gflops * 1e9 / peak;
  }
  out["ratio_keel_bf16_vs_f32"] = keel[1].second.tokens_per_s / keel[0].second.tokens_per_s;
  out["ratio_bf16_vs_f32_peak"] = best.bf16 / best.f32;
  if (torch) put_torch(out, tr, keel[0].second.flops_per_token, best);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 7, long_steps = 5;
  std::string src = ".";
  bool torch = true, short_line = true, long_lines = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--long-steps") && i + 1 < argc) {
      long_steps = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--source-dir") && i + 1 < argc) {
      src = argv[++i];
    } else if (!std::strcmp(argv[i], "--no-torch")) {
      torch = false;
    } else if (!std::strcmp(argv[i], "--short-only")) {
      long_lines = false;
    } else if (!std::strcmp(argv[i], "--long-only")) {
      long_lines = true, short_line = false;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--steps N] [--long-steps N] [--source-dir DIR] [--no-torch] "
                   "[--short-only | --long-only]\n",
                   argv[0]);
      return 2;
    }
  }
  if (steps < 1 || long_steps < 1) {
    std::fprintf(stderr, "bench_train: --steps and --long-steps must be at least 1 (got %d, %d)\n",
                 steps, long_steps);
    return 2;
  }
  auto be = backend::make_backend("cpu");
  be->set_threads(2);
  Peaks peaks;
  peaks.f32 = train::measure_sgemm_gflops(*be, 1024, 1.0) * 1e9;
  peaks.bf16 = train::measure_gemm_gflops(*be, DType::BF16, 1024, 1.0) * 1e9;
  std::fprintf(stderr, "[bench-train] GEMM peak f32 %.1f, bf16 %.1f GFLOP/s\n", peaks.f32 / 1e9,
               peaks.bf16 / 1e9);

  // What the instructions allow: a GEMM's rate against this is its efficiency
  // on the hardware, and the bf16 / f32 ratio of these peaks bounds what a
  // bf16 step can gain over an f32 one when all of both steps were GEMMs.
  const bench::InstructionPeak ip = bench::instruction_peak(2);
  std::fprintf(stderr, "[bench-train] instruction peak f32 %.1f, bf16 %.1f GFLOP/s\n",
               ip.f32_flops / 1e9, ip.bf16_flops / 1e9);

  nlohmann::ordered_json out;
  out["sgemm_peak_gflops"] = peaks.f32 / 1e9;
  out["bf16_gemm_peak_gflops"] = peaks.bf16 / 1e9;
  if (ip.f32_flops > 0) {
    out["f32_instruction_peak_gflops"] = ip.f32_flops / 1e9;
    out["sgemm_peak_vs_instruction_peak"] = peaks.f32 / ip.f32_flops;
  }
  if (ip.bf16_flops > 0) {
    out["bf16_instruction_peak_gflops"] = ip.bf16_flops / 1e9;
    out["bf16_gemm_peak_vs_instruction_peak"] = peaks.bf16 / ip.bf16_flops;
  }
  if (ip.f32_flops > 0 && ip.bf16_flops > 0)
    out["ratio_bf16_vs_f32_instruction_peak"] = ip.bf16_flops / ip.f32_flops;
  if (short_line) {
    const Line line{"gpt2-124m", gpt2_124m(), 4, 64, steps};
    out["model"] = line.name;
    out["B"] = line.B;
    out["T"] = line.T;
    out["timed_steps"] = steps;
    std::fprintf(stderr, "[bench-train] keel f32 and bf16 in turns...\n");
    const auto [f32, bf16] = bench_keel_pair(*be, line);
    std::fprintf(stderr, "[bench-train] keel f32 %.1f, bf16 %.1f tokens/s\n", f32.tokens_per_s,
                 bf16.tokens_per_s);
    out["params"] = f32.params;
    out["flops_per_token"] = f32.flops_per_token;
    out["keel_first_loss"] = f32.first_loss;
    TorchResult tr;
    if (torch) {
      const std::string omp = "/usr/lib/x86_64-linux-gnu/openblas-openmp";
      const std::string omp_path = "LD_LIBRARY_PATH=" + omp + " OMP_NUM_THREADS=2";
      tr = bench_torch(
          src, line,
          {{"f32, openblas-openmp (LD_LIBRARY_PATH)", omp_path, "", DType::F32},
           {"f32, openblas-openmp (LD_PRELOAD)",
            "LD_PRELOAD=" + omp + "/libopenblas.so.0:" + omp + "/libblas.so.3 OMP_NUM_THREADS=2",
            "", DType::F32},
           {"f32, system default (openblas-pthread)", "OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2",
            "", DType::F32},
           {"bf16 autocast, openblas-openmp (LD_LIBRARY_PATH)", omp_path, "--dtype bf16",
            DType::BF16}});
    }
    put_keel(out, "f32", f32, peaks.f32, torch ? &tr : nullptr);
    put_keel(out, "bf16", bf16, peaks.bf16, torch ? &tr : nullptr);
    out["ratio_keel_bf16_vs_f32"] = bf16.tokens_per_s / f32.tokens_per_s;
    if (torch) put_torch(out, tr, f32.flops_per_token, peaks);
  }
  if (long_lines) {
    out["long"] = nlohmann::ordered_json::array();
    for (const Line& line : {Line{"gpt2-124m", gpt2_124m(), 1, 1024, long_steps},
                             Line{"llama-124m", llama_124m(), 1, 2048, long_steps}}) {
      out["long"].push_back(long_line(*be, line, peaks, src, torch));
      std::fprintf(stderr, "%s\n", out["long"].back().dump().c_str());
    }
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
