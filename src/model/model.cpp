// make_model: config defaults and validation, then the architecture by name;
// and the Model members shared by every architecture.
#include "model/model.h"

#include "core/error.h"
#include "model/model_factories.h"

namespace keel::model {

int64_t Model::num_parameters() {
  int64_t n = 0;
  for (const nn::Parameter* p : parameters()) n += p->numel();
  return n;
}

void Model::zero_grad() {
  for (nn::Parameter* p : parameters()) {
    p->grad.fill_zero();
    p->grad_stale = false;
  }
}

ModelConfig resolve_config(const ModelConfig& in) {
  ModelConfig c = in;
  if (c.arch != "gpt2" && c.arch != "llama" && c.arch != "deepseek")
    fail<ConfigError>("model.arch: unknown architecture '{}' (known: gpt2, llama, deepseek)",
                      c.arch);
  auto positive = [&](const char* field, int64_t v) {
    if (v <= 0) fail<ConfigError>("model.{} must be > 0 for {}, got {}", field, c.arch, v);
  };
  positive("vocab_size", c.vocab_size);
  positive("n_layer", c.n_layer);
  positive("n_head", c.n_head);
  positive("n_embd", c.n_embd);
  positive("max_seq_len", c.max_seq_len);
  if (c.n_embd % c.n_head != 0)
    fail<ConfigError>("model.n_embd ({}) must be a multiple of model.n_head ({})", c.n_embd,
                      c.n_head);
  if (c.n_kv_head == 0) c.n_kv_head = c.n_head;
  if (c.n_kv_head < 0 || c.n_head % c.n_kv_head != 0)
    fail<ConfigError>("model.n_head ({}) must be a multiple of model.n_kv_head ({})", c.n_head,
                      c.n_kv_head);
  if (c.arch == "gpt2" && c.n_kv_head != c.n_head)
    fail<ConfigError>("model.n_kv_head ({}) must equal model.n_head ({}) for gpt2", c.n_kv_head,
                      c.n_head);
  if (c.arch != "gpt2" && (c.n_embd / c.n_head) % 2 != 0)
    fail<ConfigError>(
        "model.n_embd / model.n_head (head size {}) must be even for rotary "
        "positions (llama)",
        c.n_embd / c.n_head);
  if (c.ffn_hidden == 0)
    c.ffn_hidden = c.arch == "gpt2" ? 4 * c.n_embd : (8 * c.n_embd / 3 + 63) / 64 * 64;
  positive("ffn_hidden", c.ffn_hidden);
  if (c.arch == "deepseek") resolve_deepseek(c);
  if (!(c.rope_theta > 0.f))
    fail<ConfigError>("model.rope_theta must be > 0, got {}", c.rope_theta);
  if (!(c.norm_eps > 0.f)) fail<ConfigError>("model.norm_eps must be > 0, got {}", c.norm_eps);
  if (!(c.init_std >= 0.f)) fail<ConfigError>("model.init_std must be >= 0, got {}", c.init_std);
  if (c.compute_dtype != DType::F32 && c.compute_dtype != DType::BF16)
    fail<ConfigError>("model.compute_dtype must be f32 or bf16, got {}",
                      dtype_name(c.compute_dtype));
  return c;
}

std::unique_ptr<Model> make_model(const ModelConfig& cfg, backend::Backend& be) {
  const ModelConfig c = resolve_config(cfg);
  if (c.arch == "gpt2") return make_gpt2(c, be);
  if (c.arch == "deepseek") return make_deepseek(c, be);
  return make_llama(c, be);
}

}  // namespace keel::model
