#include "io/config_schema.h"

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::io {

namespace {

#define KEEL_FIELD(sec, name, kind, check, ...)                         \
  ConfigField {                                                         \
#sec "." #name, FieldKind::kind, FieldCheck::check,                 \
        {__VA_ARGS__ }, [](Config & c) -> void* { return &c.sec.name; } \
  }

const std::vector<ConfigField>& schema() {
  static const std::vector<ConfigField> fields = {
      KEEL_FIELD(model, arch, String, Choices, "gpt2", "llama", "deepseek"),
      KEEL_FIELD(model, vocab_size, Int, NonNegative),
      KEEL_FIELD(model, n_layer, Int, Positive),
      KEEL_FIELD(model, n_head, Int, Positive),
      KEEL_FIELD(model, n_kv_head, Int, NonNegative),
      KEEL_FIELD(model, n_embd, Int, Positive),
      KEEL_FIELD(model, ffn_hidden, Int, NonNegative),
      KEEL_FIELD(model, max_seq_len, Int, NonNegative),
      KEEL_FIELD(model, rope_theta, Float, Positive),
      KEEL_FIELD(model, norm_eps, Float, Positive),
      KEEL_FIELD(model, init_std, Float, Positive),
      KEEL_FIELD(model, compute_dtype, DTypeName, Choices, "f32", "bf16"),
      KEEL_FIELD(model, recompute, Bool, None),
      KEEL_FIELD(model, q_lora_rank, Int, NonNegative),
      KEEL_FIELD(model, kv_lora_rank, Int, NonNegative),
      KEEL_FIELD(model, qk_nope_head_dim, Int, NonNegative),
      KEEL_FIELD(model, qk_rope_head_dim, Int, NonNegative),
      KEEL_FIELD(model, v_head_dim, Int, NonNegative),
      KEEL_FIELD(model, n_routed_experts, Int, NonNegative),
      KEEL_FIELD(model, n_shared_experts, Int, NonNegative),
      KEEL_FIELD(model, top_k, Int, NonNegative),
      KEEL_FIELD(model, moe_ffn_hidden, Int, NonNegative),
      KEEL_FIELD(model, n_dense_layers, Int, NonNegative),
      KEEL_FIELD(model, gating, String, Choices, "sigmoid", "softmax"),
      KEEL_FIELD(model, norm_topk_prob, Bool, None),
      KEEL_FIELD(model, routed_scaling, Float, Positive),
      KEEL_FIELD(model, bias_update_rate, Float, NonNegative),
      KEEL_FIELD(model, aux_loss_alpha, Float, NonNegative),
      KEEL_FIELD(model, capacity_factor, Float, NonNegative),
      KEEL_FIELD(model, router_noise, Float, NonNegative),
      KEEL_FIELD(data, corpus, String, None),
      KEEL_FIELD(data, tokenizer, String, Choices, "bpe", "gpt2"),
      KEEL_FIELD(data, vocab_size, Int, Positive),
      KEEL_FIELD(data, gpt2_dir, String, None),
      KEEL_FIELD(data, val_fraction, Float, UnitInterval),
      KEEL_FIELD(data, split_seed, UInt, NonNegative),
      KEEL_FIELD(data, cache_dir, String, None),
      KEEL_FIELD(train, seed, UInt, NonNegative),
      KEEL_FIELD(train, batch_size, Int, Positive),
      KEEL_FIELD(train, seq_len, Int, Positive),
      KEEL_FIELD(train, grad_accum, Int, Positive),
      KEEL_FIELD(train, steps, Int, Positive),
      KEEL_FIELD(train, lr, Float, Positive),
      KEEL_FIELD(train, min_lr, Float, NonNegative),
      KEEL_FIELD(train, warmup_steps, Int, NonNegative),
      KEEL_FIELD(train, weight_decay, Float, NonNegative),
      KEEL_FIELD(train, beta1, Float, UnitInterval),
      KEEL_FIELD(train, beta2, Float, UnitInterval),
      KEEL_FIELD(train, eps, Float, Positive),
      KEEL_FIELD(train, grad_clip, Float, NonNegative),
      KEEL_FIELD(train, eval_every, Int, NonNegative),
      KEEL_FIELD(train, eval_batches, Int, Positive),
      KEEL_FIELD(train, backend, String, Choices, "cpu", "ref", "vulkan"),
      KEEL_FIELD(train, threads, Int, NonNegative),
      KEEL_FIELD(train, peak_gflops, Float, NonNegative),
      KEEL_FIELD(train, log_every, Int, Positive),
      KEEL_FIELD(run, dir, String, None),
      KEEL_FIELD(resilience, faults, String, None),
      KEEL_FIELD(resilience, hang, Bool, None),
      KEEL_FIELD(resilience, hang_floor_s, Float, Positive),
      KEEL_FIELD(resilience, hang_factor, Float, Positive),
      KEEL_FIELD(resilience, hang_startup_s, Float, Positive),
      KEEL_FIELD(resilience, nan, Bool, None),
      KEEL_FIELD(resilience, nan_max, Int, Positive),
      KEEL_FIELD(resilience, nan_window, Int, Positive),
      KEEL_FIELD(resilience, loss_spike, Bool, None),
      KEEL_FIELD(resilience, spike_window, Int, Positive),
      KEEL_FIELD(resilience, spike_min_history, Int, Positive),
      KEEL_FIELD(resilience, spike_z, Float, Positive),
      KEEL_FIELD(resilience, spike_min_delta, Float, NonNegative),
      KEEL_FIELD(resilience, sdc, Bool, None),
      KEEL_FIELD(resilience, sdc_every, Int, NonNegative),
      KEEL_FIELD(resilience, snapshot_every, Int, NonNegative),
      KEEL_FIELD(resilience, skip_steps, String, None),
      KEEL_FIELD(resilience, restart_budget, Int, NonNegative),
      KEEL_FIELD(resilience, backoff_s, Float, NonNegative),
      KEEL_FIELD(resilience, backoff_max_s, Float, NonNegative),
      KEEL_FIELD(resilience, exclude_after, Int, Positive),
      KEEL_FIELD(resilience, heartbeat, Bool, None),
      KEEL_FIELD(resilience, heartbeat_dead_s, Float, Positive),
      KEEL_FIELD(resilience, heartbeat_hang_factor, Float, Positive),
      KEEL_FIELD(resilience, heartbeat_hang_floor_s, Float, Positive),
      KEEL_FIELD(resilience, warm_spare, Bool, None),
      KEEL_FIELD(checkpoint, every, Int, NonNegative),
      KEEL_FIELD(checkpoint, keep_last, Int, Positive),
      KEEL_FIELD(checkpoint, keep_every, Int, NonNegative),
      KEEL_FIELD(checkpoint, async, Bool, None),
      KEEL_FIELD(checkpoint, dir, String, None),
      KEEL_FIELD(dist, zero1, Bool, None),
      KEEL_FIELD(dist, bucket_mb, Float, Positive),
      KEEL_FIELD(dist, overlap, Bool, None),
      KEEL_FIELD(dist, timeout_s, Float, Positive),
      KEEL_FIELD(dist, sync, String, Choices, "allreduce", "diloco"),
      KEEL_FIELD(dist, compression, String, Choices, "none", "bf16", "int8", "int4", "topk"),
      KEEL_FIELD(dist, topk_fraction, Float, None),
      KEEL_FIELD(dist, topk_warmup_steps, Int, NonNegative),
      KEEL_FIELD(dist, topk_warmup_start, Float, None),
      KEEL_FIELD(dist, topk_values, String, Choices, "f32", "int8"),
      KEEL_FIELD(dist, compress_update, Bool, None),
      KEEL_FIELD(dist, local_moment_correction, Bool, None),
      KEEL_FIELD(dist, update_beta1, Float, None),
      KEEL_FIELD(dist, int8_block, Int, Positive),
      KEEL_FIELD(dist, diloco_steps, Int, Positive),
      KEEL_FIELD(dist, diloco_warmup_steps, Int, NonNegative),
      KEEL_FIELD(dist, outer_lr, Float, Positive),
      KEEL_FIELD(dist, outer_momentum, Float, UnitInterval),
  };
  return fields;
}

#undef KEEL_FIELD

std::string choices_text(const ConfigField& f) {
  std::string s;
  for (auto c : f.choices) s += fmt::format("{}\"{}\"", s.empty() ? "" : ", ", c);
  return s;
}

// TOML basic string with the escapes TOML requires.
std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

}  // namespace

std::span<const ConfigField> config_fields() {
  return schema();
}

const ConfigField* find_config_field(std::string_view key) {
  for (const auto& f : schema())
    if (f.key == key) return &f;
  return nullptr;
}

std::string_view field_kind_name(FieldKind k) {
  switch (k) {
    case FieldKind::Int:
      return "an integer";
    case FieldKind::UInt:
      return "a non-negative integer";
    case FieldKind::Float:
      return "a number";
    case FieldKind::Bool:
      return "a boolean (true or false)";
    case FieldKind::String:
      return "a string";
    case FieldKind::DTypeName:
      return "a dtype string";
  }
  return "?";
}

void store_config_field(Config& cfg, const ConfigField& f, const FieldValue& v,
                        const std::string& where) {
  void* p = f.member(cfg);
  const bool numeric =
      f.kind == FieldKind::Int || f.kind == FieldKind::UInt || f.kind == FieldKind::Float;
  if (numeric) {
    const double x = f.kind == FieldKind::Float ? v.f : double(v.i);
    if (!std::isfinite(x))
      fail<ConfigError>("{}: {}: must be a finite number, got {}", where, f.key, x);
    const std::string shown =
        f.kind == FieldKind::Float ? fmt::format("{}", v.f) : fmt::format("{}", v.i);
    if (f.check == FieldCheck::Positive && !(x > 0))
      fail<ConfigError>("{}: {}: must be > 0, got {}", where, f.key, shown);
    if ((f.check == FieldCheck::NonNegative || f.kind == FieldKind::UInt) && x < 0)
      fail<ConfigError>("{}: {}: must be >= 0, got {}", where, f.key, shown);
    if (f.check == FieldCheck::UnitInterval && !(x >= 0 && x < 1))
      fail<ConfigError>("{}: {}: must be in [0, 1), got {}", where, f.key, shown);
  }
  if (f.check == FieldCheck::Choices) {
    bool ok = false;
    for (auto c : f.choices) ok = ok || c == v.s;
    if (!ok)
      fail<ConfigError>("{}: {}: unknown value \"{}\" (expected one of {})", where, f.key, v.s,
                        choices_text(f));
  }
  switch (f.kind) {
    case FieldKind::Int:
      *static_cast<int64_t*>(p) = v.i;
      break;
    case FieldKind::UInt:
      *static_cast<uint64_t*>(p) = uint64_t(v.i);
      break;
    case FieldKind::Float:
      *static_cast<double*>(p) = v.f;
      break;
    case FieldKind::Bool:
      *static_cast<bool*>(p) = v.b;
      break;
    case FieldKind::String:
      *static_cast<std::string*>(p) = v.s;
      break;
    case FieldKind::DTypeName:
      *static_cast<DType*>(p) = dtype_from_name(v.s);
      break;
  }
}

std::string format_config_field(const Config& cfg, const ConfigField& f) {
  const void* p = f.member(const_cast<Config&>(cfg));
  switch (f.kind) {
    case FieldKind::Int:
      return fmt::format("{}", *static_cast<const int64_t*>(p));
    case FieldKind::UInt:
      return fmt::format("{}", *static_cast<const uint64_t*>(p));
    case FieldKind::Float: {
      // Shortest round-trip form, always with a '.' or an exponent so TOML reads a float.
      std::string s = fmt::format("{}", *static_cast<const double*>(p));
      if (s.find_first_of(".eE") == std::string::npos) s += ".0";
      return s;
    }
    case FieldKind::Bool:
      return *static_cast<const bool*>(p) ? "true" : "false";
    case FieldKind::String:
      return toml_quote(*static_cast<const std::string*>(p));
    case FieldKind::DTypeName:
      return toml_quote(std::string(dtype_name(*static_cast<const DType*>(p))));
  }
  return "";
}

}  // namespace keel::io
