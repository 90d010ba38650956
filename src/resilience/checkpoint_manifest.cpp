#include "resilience/checkpoint_manifest.h"

#include <fmt/format.h>

#include "io/config_schema.h"

namespace keel::resilience {

namespace {

using json = nlohmann::json;

bool is_hex16(const std::string& s) {
  if (s.size() != 16) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// A plain file name inside the checkpoint directory: no path separators, no
// "." or "..", so a manifest cannot point the loader outside its directory.
bool is_plain_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

}  // namespace

std::string manifest_to_json(const CheckpointManifest& m) {
  nlohmann::ordered_json j;
  j["format"] = kCheckpointFormatName;
  j["format_version"] = m.format_version;
  j["step"] = m.step;
  j["optimizer_t"] = m.optimizer_t;
  j["world_size"] = m.world_size;
  j["tokenizer_id"] = m.tokenizer_id;
  j["created_unix"] = m.created_unix;
  j["config"] = m.config;
  j["rng"] = m.rng;
  j["lr_schedule"] = m.lr_schedule;
  j["health"] = m.health;
  j["extra"] = m.extra;
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const auto& f : m.files)
    files.push_back({{"name", f.name}, {"bytes", f.bytes}, {"xxh3", f.xxh3}});
  j["files"] = files;
  return j.dump(1) + "\n";
}

CheckpointManifest parse_manifest(std::string_view text, const std::string& path) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail<CheckpointError>("{}: manifest JSON is malformed near offset {}", path, e.byte);
  } catch (const json::out_of_range& e) {  // a number too large for any type
    fail<CheckpointError>("{}: manifest JSON is malformed: {}", path, e.what());
  }
  if (!j.is_object()) fail<CheckpointError>("{}: manifest is not a JSON object", path);
  auto field = [&](const char* key, json::value_t a, json::value_t b = json::value_t::null) {
    if (!j.contains(key)) fail<CheckpointError>("{}: field '{}' is missing", path, key);
    const json& v = j[key];
    if (v.type() != a && (b == json::value_t::null || v.type() != b))
      fail<CheckpointError>("{}: field '{}' has the wrong type ({})", path, key, v.type_name());
    return v;
  };
  using vt = json::value_t;
  if (field("format", vt::string).get<std::string>() != kCheckpointFormatName)
    fail<CheckpointError>("{}: field 'format' is '{}', not '{}'", path,
                          j["format"].get<std::string>(), kCheckpointFormatName);
  CheckpointManifest m;
  const json ver = field("format_version", vt::number_unsigned, vt::number_integer);
  m.format_version = ver.get<int>();
  // Checked before anything else: a newer format may have changed every other field.
  if (m.format_version > kCheckpointFormatVersion)
    fail<CheckpointError>(
        "{}: format version {} is newer than this keel reads (version {}); use a newer keel", path,
        m.format_version, kCheckpointFormatVersion);
  if (m.format_version < 1)
    fail<CheckpointError>("{}: field 'format_version' is {} (must be >= 1)", path,
                          m.format_version);
  m.step = field("step", vt::number_unsigned, vt::number_integer).get<int64_t>();
  m.optimizer_t = field("optimizer_t", vt::number_unsigned, vt::number_integer).get<int64_t>();
  m.world_size = field("world_size", vt::number_unsigned, vt::number_integer).get<int64_t>();
  if (m.step < 0 || m.optimizer_t < 0 || m.optimizer_t > m.step || m.world_size < 1)
    fail<CheckpointError>(
        "{}: inconsistent counters: step {}, optimizer_t {}, world_size {} (need 0 <= "
        "optimizer_t <= step, world_size >= 1)",
        path, m.step, m.optimizer_t, m.world_size);
  m.tokenizer_id = field("tokenizer_id", vt::string).get<std::string>();
  m.created_unix = field("created_unix", vt::number_float, vt::number_unsigned).get<double>();
  m.config = field("config", vt::object);
  m.rng = field("rng", vt::object);
  m.lr_schedule = field("lr_schedule", vt::object);
  m.health = field("health", vt::object);
  m.extra = field("extra", vt::object);
  for (auto it = m.config.begin(); it != m.config.end(); ++it)
    if (!it.value().is_string())
      fail<CheckpointError>("{}: config key '{}' is not a string", path, it.key());
  const json files = field("files", vt::array);
  for (size_t i = 0; i < files.size(); ++i) {
    const json& f = files[i];
    const bool ok = f.is_object() && f.contains("name") && f["name"].is_string() &&
                    f.contains("bytes") && f["bytes"].is_number_unsigned() && f.contains("xxh3") &&
                    f["xxh3"].is_string();
    if (!ok)
      fail<CheckpointError>("{}: files[{}] needs a string 'name', unsigned 'bytes', string 'xxh3'",
                            path, i);
    CheckpointFileEntry e{f["name"].get<std::string>(), f["bytes"].get<uint64_t>(),
                          f["xxh3"].get<std::string>()};
    if (!is_plain_name(e.name) || e.name == kCheckpointManifestFile)
      fail<CheckpointError>("{}: files[{}]: '{}' is not a plain file name of the checkpoint", path,
                            i, e.name);
    if (!is_hex16(e.xxh3))
      fail<CheckpointError>("{}: files[{}] ({}): checksum '{}' is not 16 lowercase hex digits",
                            path, i, e.name, e.xxh3);
    for (const auto& prev : m.files)
      if (prev.name == e.name) fail<CheckpointError>("{}: file '{}' is listed twice", path, e.name);
    m.files.push_back(std::move(e));
  }
  return m;
}

nlohmann::json config_manifest_map(const io::Config& cfg) {
  json out = json::object();
  for (const auto& f : io::config_fields())
    out[std::string(f.key)] = io::format_config_field(cfg, f);
  return out;
}

bool config_key_may_differ(std::string_view key) {
  // train.backend among them: a run may go on on another device (train on A,
  // resume on B); the trajectory then moves by rounding, not by design.
  static constexpr std::string_view kFree[] = {
      "train.eval_every", "train.eval_batches", "train.threads", "train.peak_gflops",
      "train.log_every",  "data.cache_dir",     "data.gpt2_dir", "train.backend",
  };
  for (auto k : kFree)
    if (key == k) return true;
  // An elastic restart on fewer ranks raises the accumulation to keep the
  // global batch: what must match is world size x grad_accum, which the run
  // loop records as train.micro_batches_per_step (compared like any key).
  if (key == "train.grad_accum") return true;
  // Only the sections that shape the trajectory are compared.
  return !(key.starts_with("model.") || key.starts_with("data.") || key.starts_with("train."));
}

namespace {

bool deepseek_only_key(std::string_view key) {
  static constexpr std::string_view kKeys[] = {"model.q_lora_rank",      "model.kv_lora_rank",
                                               "model.qk_nope_head_dim", "model.qk_rope_head_dim",
                                               "model.v_head_dim",       "model.n_routed_experts",
                                               "model.n_shared_experts", "model.top_k",
                                               "model.moe_ffn_hidden",   "model.n_dense_layers",
                                               "model.gating",           "model.norm_topk_prob",
                                               "model.routed_scaling",   "model.bias_update_rate",
                                               "model.aux_loss_alpha",   "model.capacity_factor"};
  for (auto k : kKeys)
    if (key == k) return true;
  return false;
}

}  // namespace

std::string config_difference(const nlohmann::json& checkpoint, const nlohmann::json& run) {
  const auto arch = run.find("model.arch");
  const bool deepseek = arch == run.end() || *arch == "deepseek";
  for (auto it = run.begin(); it != run.end(); ++it) {
    if (config_key_may_differ(it.key()) || !checkpoint.contains(it.key())) continue;
    if (!deepseek && deepseek_only_key(it.key())) continue;
    const json& theirs = checkpoint[it.key()];
    if (theirs != it.value())
      return fmt::format(
          "{} is {} in the checkpoint but {} in this run", it.key(),
          theirs.is_string() ? theirs.get<std::string>() : theirs.dump(),
          it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  }
  return "";
}

}  // namespace keel::resilience
