// KV cache bytes per token of the deepseek configs: multi-head latent
// attention (the compressed latent plus the shared rotary key, per layer)
// against standard multi-head attention of the same width (k and v of every
// head), and against the per-head k and v MLA would rebuild; plus what the
// inference engine's KV cache pool reserves per token for the model built
// from the config (f32). One JSON line per config; ratio = MHA bytes / MLA
// bytes. Usage (from the repository root): bench_mla_cache [config.toml...]
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "io/config.h"
#include "model/deepseek.h"
#include "model/model.h"
#include "serve/inference_model.h"
#include "serve/kv_cache.h"
#include "store/run_model.h"

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) paths.emplace_back(argv[i]);
  if (paths.empty())
    paths = {"configs/deepseek-tiny.toml", "configs/deepseek-small.toml"};  // from the repo root
  int rc = 0;
  for (const std::string& p : paths) {
    try {
      const keel::io::Config cfg = keel::io::load_config(p);
      const keel::model::ModelConfig m = keel::model::resolve_config(keel::store::run_model_config(
          cfg, cfg.model.vocab_size > 0 ? cfg.model.vocab_size : cfg.data.vocab_size));
      const int64_t es = int64_t(keel::dtype_size(
          m.compute_dtype == keel::DType::BF16 ? keel::DType::BF16 : keel::DType::F32));
      const int64_t mla = keel::model::mla_cache_bytes_per_token(m, es);
      const int64_t mha = keel::model::mha_cache_bytes_per_token(m, es);
      // The engine's pool for this model (random weights; only sizes matter).
      auto be = keel::backend::make_backend("ref");
      auto model = keel::model::make_model(m, *be);
      model->init(1);
      keel::store::ModelWeights w;
      w.config = model->config();
      for (keel::nn::Parameter* prm : model->parameters()) w.tensors[prm->name] = prm->value;
      for (auto& [name, t] : model->inference_buffers()) w.tensors[name] = *t;
      const keel::serve::InferenceModel im(w, *be, keel::DType::F32);
      const keel::serve::KvCachePool pool(m.n_layer, im.kv_dim(), SIZE_MAX);
      const int64_t engine = int64_t(pool.bytes_for(1));
      const int64_t heads =
          m.n_layer * m.n_head * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * es;
      std::printf("%s\n",
                  fmt::format("{{\"bench\": \"mla_cache\", \"config\": \"{}\", \"n_layer\": {}, "
                              "\"mla_bytes_per_token\": {}, \"mha_bytes_per_token\": {}, "
                              "\"engine_pool_f32_bytes_per_token\": {}, "
                              "\"mla_heads_uncompressed_bytes_per_token\": {}, \"ratio\": {:.2f}, "
                              "\"ratio_vs_uncompressed_heads\": {:.2f}}}",
                              p, m.n_layer, mla, mha, engine, heads, double(mha) / double(mla),
                              double(heads) / double(mla))
                      .c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", p.c_str(), e.what());
      rc = 1;
    }
  }
  return rc;
}
