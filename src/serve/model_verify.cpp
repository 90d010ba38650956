#include "serve/model_verify.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "data/run_corpus.h"
#include "data/token_shard.h"
#include "io/config.h"
#include "store/run_dir.h"

namespace keel::serve {

namespace fs = std::filesystem;

const std::vector<std::string>& verify_prompts() {
  static const std::vector<std::string> p = {
      "The Congress of the United States",          "Fellow citizens, the state of the union is",
      "We must remember that the price of freedom", "In the year that has passed, our nation",
      "The economy of this country depends on",     "I ask the Congress to pass a law that",
      "Our foreign policy has been guided by",      "Tonight I want to speak to you about",
  };
  return p;
}

namespace {

int32_t argmax(const float* v, int64_t n) {
  return int32_t(std::max_element(v, v + n) - v);
}

}  // namespace

std::vector<PromptAgreement> compare_greedy(InferenceModel& a, InferenceModel& b,
                                            const data::Tokenizer& tok,
                                            const std::vector<std::string>& prompts,
                                            int64_t max_new) {
  const auto& cfg = a.config();
  const int64_t V = cfg.vocab_size;
  KvCachePool pool_a(cfg.n_layer, a.kv_dim(), SIZE_MAX, &a.backend(), a.kv_dtype()),
      pool_b(cfg.n_layer, b.kv_dim(), SIZE_MAX, &b.backend(), b.kv_dtype());
  std::vector<PromptAgreement> out;
  std::vector<float> la(static_cast<size_t>(V)), lb(static_cast<size_t>(V));
  for (const auto& text : prompts) {
    std::vector<int32_t> ids = tok.encode(text);
    if (ids.empty()) continue;
    if (int64_t(ids.size()) >= cfg.max_seq_len) ids.resize(size_t(cfg.max_seq_len - 1));
    PromptAgreement r;
    r.prompt = text;
    r.prompt_tokens = int64_t(ids.size());
    const int64_t n = std::min(max_new, cfg.max_seq_len - r.prompt_tokens);
    auto sa = pool_a.try_allocate(r.prompt_tokens + n),
         sb = pool_b.try_allocate(r.prompt_tokens + n);
    a.prefill(*sa, ids, la.data());
    b.prefill(*sb, ids, lb.data());
    for (int64_t i = 0; i < n; ++i) {
      const int32_t next = argmax(la.data(), V);  // a's greedy choice, fed to both
      ++r.steps;
      r.top1_agree += argmax(lb.data(), V) == next;
      for (int64_t v = 0; v < V; ++v)
        r.max_logit_diff = std::max(r.max_logit_diff, std::fabs(la[size_t(v)] - lb[size_t(v)]));
      if (i + 1 == n) break;
      KvSequence* pa[] = {sa.get()};
      KvSequence* pb[] = {sb.get()};
      a.decode(pa, {&next, 1}, la.data());
      b.decode(pb, {&next, 1}, lb.data());
    }
    out.push_back(r);
  }
  return out;
}

Perplexity perplexity(InferenceModel& m, std::span<const int32_t> tokens, int64_t max_tokens) {
  const auto& cfg = m.config();
  const int64_t V = cfg.vocab_size, W = cfg.max_seq_len;
  KvCachePool pool(cfg.n_layer, m.kv_dim(), SIZE_MAX, &m.backend(), m.kv_dtype());
  std::vector<float> logits(size_t(W * V));
  Perplexity p;
  double sum = 0;
  for (size_t start = 0; start + 1 < tokens.size() && p.tokens < max_tokens; start += size_t(W)) {
    const int64_t T = std::min({W, int64_t(tokens.size() - start) - 1, max_tokens - p.tokens});
    auto seq = pool.try_allocate(T);
    m.prefill(*seq, tokens.subspan(start, size_t(T)), logits.data(), true);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = logits.data() + t * V;
      const float mx = *std::max_element(row, row + V);
      double s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(double(row[v] - mx));
      sum += double(mx) + std::log(s) - double(row[tokens[start + size_t(t) + 1]]);
    }
    p.tokens += T;
  }
  if (p.tokens == 0) fail<IoError>("perplexity: the held-out split has fewer than 2 tokens");
  p.nats = sum / double(p.tokens);
  p.ppl = std::exp(p.nats);
  return p;
}

std::vector<int32_t> held_out_tokens(const std::string& model_path, const std::string& shard,
                                     int64_t max_tokens) {
  std::string path = shard;
  if (path.empty()) {
    const fs::path cfg_file = fs::path(model_path) / store::kRunConfigFile;
    if (!fs::exists(cfg_file))
      fail<IoError>("{}: no run config to find the held-out split; pass --data VAL_SHARD",
                    cfg_file.string());
    path = data::prepare_run_corpus(io::load_config(cfg_file.string())).val_path;
  }
  const data::TokenShard s = data::TokenShard::open(path);
  const int64_t n = std::min<int64_t>(s.size(), max_tokens);
  std::vector<int32_t> out(static_cast<size_t>(n));
  if (n > 0) s.read(0, n, out.data());
  return out;
}

}  // namespace keel::serve
