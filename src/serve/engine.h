// Engine: the inference side of keel. Loads a model (a run directory or an
// exported safetensors folder), keeps a preallocated KV cache per sequence,
// and runs prefill and batched decode for many requests at once; new requests
// join the batch between decode steps (continuous batching). The HTTP server
// and `keel generate` talk to it only through this header.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"

namespace keel::serve {

// A request the engine cannot take (prompt longer than the context, cache
// full, bad sampling value). `field` names the offending request field
// ("prompt", "max_tokens", "temperature", ...) so the server can answer 400.
class RequestError : public Error {
 public:
  RequestError(std::string field, const std::string& msg) : Error(msg), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// The cache memory limit is reached: the server answers 429/503, not 400.
class CapacityError : public Error {
 public:
  using Error::Error;
};

struct JsonSchemaGraph;  // serve/json_schema.h

struct SamplingParams {
  int64_t max_tokens = 16;          // >= 1; prompt + max_tokens is capped at the context
  double temperature = 1.0;         // 0: greedy
  int64_t top_k = 0;                // 0: no limit
  double top_p = 1.0;               // (0, 1]
  double repetition_penalty = 1.0;  // > 0; 1: off (CTRL-style, on prompt and output ids)
  // OpenAI's, in [-2, 2], on the output so far: logit -= frequency * count +
  // presence * (count > 0), count = times the id was generated. 0: off.
  double presence_penalty = 0.0, frequency_penalty = 0.0;
  uint64_t seed = 0;  // per request: same seed and prompt, same text
  // >= 0: report each generated token's log-probability under the model
  // (log-softmax of the raw logits, before temperature and penalties) and
  // this many most likely alternatives (at most 20). < 0: off.
  int64_t logprobs = -1;
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool stop_at_eot = true;        // stop at the tokenizer's end-of-text id
  // Set: only tokens that keep the output a prefix of a JSON text matching
  // this schema are sampled, and the request stops when the value is
  // complete (serve/json_grammar.h).
  std::shared_ptr<const JsonSchemaGraph> response_format;
};

struct Request {
  std::vector<int32_t> prompt;  // token ids, non-empty
  SamplingParams sampling;
};

enum class FinishReason { None, Length, Stop, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "length", "stop", ...

// One step of a request's output. `text` is the newly completed UTF-8 text
// (bytes of a multi-byte character split across tokens are held back until
// complete; stop-string candidates are held back until resolved). The last
// event has finish != None.
// A generated token's log-probability and the most likely alternatives
// (descending; ties to the smaller id).
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

struct Event {
  std::vector<int32_t> tokens;  // ids produced since the previous event
  // One per id in `tokens` when the request asked for logprobs.
  std::vector<TokenLogprob> logprobs;
  std::string text;
  FinishReason finish = FinishReason::None;
  std::string error;  // when finish == Error
  int64_t prompt_tokens = 0, completion_tokens = 0;
  // Prompt tokens whose KV rows came from the prefix cache (not prefilled).
  int64_t cached_tokens = 0;
};

// Called on the engine's thread; must be quick. Returning false cancels the
// request (a client that went away); its slot is freed before the next step.
using EventFn = std::function<bool(const Event&)>;

struct EngineOptions {
  std::string backend = "cpu";               // "cpu" | "ref"
  std::string quant = "none";                // "none" | "int8" | "q8_0" | "q4"
  std::string kv_dtype = "f32";              // "f32" | "bf16": the KV cache's elements
  int64_t max_batch = 8;                     // sequences decoded together
  int64_t max_queue = 256;                   // waiting requests beyond this: CapacityError
  size_t max_cache_bytes = size_t(1) << 30;  // KV cache for all sequences together
  int threads = 0;                           // 0: every core
  // Automatic prefix caching: finished sequences' KV rows kept within this
  // many bytes, beside max_cache_bytes (serve/prefix_cache.h). 0: off.
  size_t prefix_cache_bytes = 0;
};

struct EngineStats {
  int64_t queued = 0, active = 0;
  int64_t requests_total = 0, prompt_tokens_total = 0, completion_tokens_total = 0;
  // Requests that copied the KV cache of an identical prompt admitted with
  // them instead of prefilling it again (n > 1 completions).
  int64_t prefills_shared = 0;
  // Requests whose prompt began with a cached sequence's tokens, and the
  // prompt tokens they did not prefill because of it.
  int64_t prefix_cache_hits = 0, prefix_cache_tokens_reused = 0;
  size_t prefix_cache_bytes_in_use = 0, prefix_cache_bytes_limit = 0;
  size_t cache_bytes_in_use = 0, cache_bytes_limit = 0;
  // The backend's host waits and bytes moved across the host/device boundary
  // since it was made, as of the last finished step (zero on host memory).
  uint64_t host_syncs = 0, bytes_to_device = 0, bytes_to_host = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Loads `path`: a run directory written by `keel train` or a safetensors
  // folder written by `keel export` (config.json, model.safetensors,
  // tokenizer.json). IoError/ConfigError naming the file on bad input.
  static std::unique_ptr<Engine> load(const std::string& path, const EngineOptions& opt);

  // Queues a request; `on_event` receives its output. Validates first and
  // throws RequestError/CapacityError without queueing. Returns an id.
  virtual uint64_t submit(Request req, EventFn on_event) = 0;
  // Queues several requests at once (all or none): they are admitted in one
  // round when the batch has room, and those with one prompt prefill it once.
  virtual std::vector<uint64_t> submit_all(std::vector<Request> reqs,
                                           std::vector<EventFn> on_events) = 0;
  // Cancels a queued or running request (its last event says Cancelled).
  virtual void cancel(uint64_t id) = 0;
  // Stops taking requests. With finish = true running and queued requests
  // complete; otherwise they end with Cancelled. Blocks until the worker
  // thread has stopped. Idempotent; the destructor calls shutdown(false).
  virtual void shutdown(bool finish) = 0;

  virtual const data::Tokenizer& tokenizer() const = 0;
  virtual std::string model_id() const = 0;    // folder name, e.g. "tiny"
  virtual int64_t context_length() const = 0;  // max prompt + output tokens
  // The chat template as text, documented in the model folder; render_chat
  // turns (role, content) messages into the prompt text the model continues.
  virtual std::string render_chat(
      const std::vector<std::pair<std::string, std::string>>& messages) const = 0;
  virtual EngineStats stats() const = 0;
};

}  // namespace keel::serve
