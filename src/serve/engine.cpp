// The engine's worker: a queue of validated requests, a batch of running
// sequences, and one thread that alternates between admitting queued
// requests (prefill, first token) and one decode step for the whole batch.
#include "serve/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <utility>

#include "backend/backend.h"
#include "core/log.h"
#include "serve/chat_template.h"
#include "serve/inference_model.h"
#include "serve/json_grammar.h"
#include "serve/kv_cache.h"
#include "serve/prefix_cache.h"
#include "serve/request_validation.h"
#include "serve/sampler.h"
#include "serve/text_stream.h"
#include "serve/token_mask.h"
#include "store/model_weights.h"

namespace keel::serve {

namespace fs = std::filesystem;

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None:
      return "";
    case FinishReason::Length:
      return "length";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "";
}

namespace {

struct Pending {
  uint64_t id;
  Request req;
  EventFn on_event;
  int64_t max_new;  // max_tokens capped by the context
  size_t bytes;     // cache reserved at submit
};

struct Running {
  Pending p;
  std::unique_ptr<KvSequence> seq;
  std::vector<int32_t> seen;  // prompt + output ids (repetition penalty)
  TextStream text;
  int64_t produced = 0;
  int64_t cached = 0;                    // prompt tokens taken from the prefix cache
  int32_t last = 0;                      // the id to feed next
  std::optional<TokenLogprob> lp;        // the picked id's, when logprobs were asked for
  std::unique_ptr<JsonGrammar> grammar;  // response_format, with the output's state
  JsonGrammar::State grammar_state;
  bool done = false;
  bool released = false;  // cache and reservation given back
};

class EngineImpl final : public Engine {
 public:
  EngineImpl(store::ModelWeights w, const EngineOptions& opt)
      : opt_(opt),
        tokenizer_(std::move(w.tokenizer)),
        // A folder's name, or a model file's name without its extension.
        model_id_(fs::is_regular_file(w.dir)
                      ? fs::path(w.dir).stem().string()
                      : fs::path(w.dir).lexically_normal().filename().string()),
        chat_(ChatTemplate::load_or_default(w.dir)),
        backend_(backend::make_backend(opt.backend)) {
    if (model_id_.empty() || model_id_ == ".")
      model_id_ = fs::path(w.dir).lexically_normal().parent_path().filename().string();
    if (opt.max_batch < 1) fail<ConfigError>("max_batch: must be >= 1, got {}", opt.max_batch);
    // Every request waits in the queue until a batch admits it: below 1 the
    // engine would answer every request "queue full".
    if (opt.max_queue < 1) fail<ConfigError>("max_queue: must be >= 1, got {}", opt.max_queue);
    if (opt.threads > 0) backend_->set_threads(opt.threads);
    model_ = std::make_unique<InferenceModel>(w, *backend_, weight_format_from_name(opt.quant),
                                              kv_dtype_from_name(opt.kv_dtype));
    pool_ = std::make_unique<KvCachePool>(model_->config().n_layer, model_->kv_dim(),
                                          opt.max_cache_bytes, backend_.get(), model_->kv_dtype());
    prefix_cache_ = std::make_unique<PrefixCache>(
        model_->config().n_layer, model_->kv_dim(), opt.prefix_cache_bytes, backend_.get(),
        model_->kv_dtype(), [this](KvSequence& dst, KvSequence& src, int64_t n) {
          model_->copy_cache_prefix(dst, src, n);
        });
    eot_ = tokenizer_.eot_id();
    worker_ = std::thread([this] { run(); });
  }
  ~EngineImpl() override { shutdown(false); }

  uint64_t submit(Request req, EventFn on_event) override {
    std::vector<Request> reqs;
    reqs.push_back(std::move(req));
    std::vector<EventFn> fns;
    fns.push_back(std::move(on_event));
    return submit_all(std::move(reqs), std::move(fns)).front();
  }

  std::vector<uint64_t> submit_all(std::vector<Request> reqs, std::vector<EventFn> fns) override {
    const auto& cfg = model_->config();
    if (reqs.empty() || reqs.size() != fns.size())
      fail("Engine::submit_all: {} requests and {} callbacks", reqs.size(), fns.size());
    std::vector<int64_t> max_new;
    size_t bytes = 0;
    for (const Request& r : reqs) {
      max_new.push_back(validate_request(r, cfg.vocab_size, cfg.max_seq_len));
      const size_t b = pool_->bytes_for(int64_t(r.prompt.size()) + max_new.back());
      if (b > pool_->limit())
        throw RequestError("max_tokens",
                           fmt::format("max_tokens: prompt + max_tokens needs {} bytes of KV "
                                       "cache, more than the limit of {} bytes",
                                       b, pool_->limit()));
      bytes += b;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) fail<CapacityError>("the engine is shutting down");
    if (int64_t(queue_.size() + reqs.size()) > opt_.max_queue)
      fail<CapacityError>("the request queue is full ({} waiting)", queue_.size());
    if (reserved_ + bytes > pool_->limit())
      fail<CapacityError>("the KV cache is full ({} of {} bytes reserved; {} more needed)",
                          reserved_, pool_->limit(), bytes);
    reserved_ += bytes;
    // Queued together under one lock, so the worker admits them in one round.
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < reqs.size(); ++i) {
      const uint64_t id = next_id_++;
      const size_t b = pool_->bytes_for(int64_t(reqs[i].prompt.size()) + max_new[i]);
      queue_.push_back({id, std::move(reqs[i]), std::move(fns[i]), max_new[i], b});
      ids.push_back(id);
      ++stats_.requests_total;
    }
    cv_.notify_all();
    return ids;
  }

  void cancel(uint64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(id);
    cv_.notify_all();
  }

  void shutdown(bool finish) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      if (!finish) abort_all_ = true;
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> join_lock(join_mu_);
    if (worker_.joinable()) worker_.join();
  }

  const data::Tokenizer& tokenizer() const override { return tokenizer_; }
  std::string model_id() const override { return model_id_; }
  int64_t context_length() const override { return model_->config().max_seq_len; }
  std::string render_chat(
      const std::vector<std::pair<std::string, std::string>>& messages) const override {
    return chat_.render(messages);
  }
  EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s = stats_;
    s.queued = int64_t(queue_.size());
    s.cache_bytes_in_use = pool_->in_use();
    s.cache_bytes_limit = pool_->limit();
    s.prefix_cache_bytes_limit = prefix_cache_->limit();
    return s;
  }

 private:
  // Delivers an event; a false return or a throw from the callback cancels.
  bool emit(Running& r, Event ev) {
    ev.prompt_tokens = int64_t(r.p.req.prompt.size());
    ev.completion_tokens = r.produced;
    ev.cached_tokens = r.cached;
    const bool last = ev.finish != FinishReason::None;
    // The cache is free before the client hears the end, so a client that
    // submits again on its last event finds the room it just left.
    if (last) release(r, ev.finish != FinishReason::Error);
    bool keep = true;
    try {
      keep = r.p.on_event(ev);
    } catch (const std::exception& e) {
      keel::log().warn("serve: request {}: event callback threw: {}", r.p.id, e.what());
      keep = false;
    }
    if (last) r.done = true;
    return keep;
  }

  void finish(Running& r, FinishReason why, std::string text = {}, std::string error = {}) {
    Event ev;
    ev.text = std::move(text);
    ev.text += r.text.flush();  // "" after a stop string: the held text was the match
    ev.finish = why;
    ev.error = std::move(error);
    emit(r, std::move(ev));
  }

  // keep_rows: the sequence's rows are sound and may enter the prefix cache
  // (copied in reap(), after the client heard its end).
  void release(Running& r, bool keep_rows = false) {
    if (r.released) return;
    r.released = true;
    if (keep_rows && r.seq && prefix_cache_->enabled() &&
        r.seq->length() >= PrefixCache::min_tokens()) {
      r.seen.resize(size_t(r.seq->length()));  // the ids whose rows the cache holds
      to_cache_.push_back({std::move(r.seen), std::move(r.seq)});
    }
    r.seq.reset();
    std::lock_guard<std::mutex> lock(mu_);
    reserved_ -= r.p.bytes;
    stats_.completion_tokens_total += r.produced;
  }

  // Takes a sampled id: updates text, emits, decides whether the sequence ends.
  void accept(Running& r, int32_t id) {
    ++r.produced;
    r.seen.push_back(id);
    r.last = id;
    const auto& sp = r.p.req.sampling;
    if (sp.stop_at_eot && id == eot_) {
      r.lp.reset();  // the end-of-text id is not output: no logprob, as OpenAI's
      return finish(r, FinishReason::Stop);
    }
    Event ev;
    ev.tokens = {id};
    if (r.lp) ev.logprobs = {*std::exchange(r.lp, std::nullopt)};
    ev.text = r.text.push(tokenizer_.token_bytes(id));
    if (r.grammar) {
      // The mask let only continuations through, so this cannot be refused.
      if (!r.grammar->advance(r.grammar_state, tokenizer_.token_bytes(id)))
        return finish(r, FinishReason::Error, std::move(ev.text),
                      "response_format: the sampled token leaves the JSON grammar");
      if (r.grammar->finished(r.grammar_state)) {  // the value is complete
        ev.text += r.text.flush();
        ev.finish = FinishReason::Stop;
        emit(r, std::move(ev));
        return;
      }
    }
    if (r.text.stopped()) {
      ev.finish = FinishReason::Stop;
      emit(r, std::move(ev));
      return;
    }
    if (r.produced >= r.p.max_new) {
      ev.text += r.text.flush();
      ev.finish = FinishReason::Length;
      emit(r, std::move(ev));
      return;
    }
    if (!emit(r, std::move(ev))) finish(r, FinishReason::Cancelled);
  }

  int32_t pick(Running& r, float* logits) {
    const int64_t V = model_->config().vocab_size;
    const std::span<float> row{logits, size_t(V)};
    const int64_t n_top = r.p.req.sampling.logprobs;
    std::vector<float> raw;
    if (n_top >= 0) raw.assign(row.begin(), row.end());  // the sampler edits the row
    if (r.grammar) mask_to_grammar(r, row);
    const int32_t id = sample_next(row, r.seen, r.p.req.sampling, uint64_t(r.produced));
    if (n_top >= 0) r.lp = token_logprob(raw, id, n_top);
    return id;
  }

  // Sets the logit of every id that would break r's JSON grammar to -inf.
  // The end-of-text id stays only where the value may end.
  void mask_to_grammar(Running& r, std::span<float> row) {
    if (!token_mask_) {
      std::vector<std::string> bytes(row.size());
      const auto& specials = tokenizer_.special_tokens();
      for (int32_t id = 0; id < tokenizer_.vocab_size() && size_t(id) < row.size(); ++id)
        bytes[size_t(id)] = tokenizer_.token_bytes(id);
      for (const auto& sp : specials)
        if (size_t(sp.id) < bytes.size()) bytes[size_t(sp.id)].clear();
      token_mask_ = std::make_unique<JsonTokenMask>(bytes);
    }
    token_mask_->compute(*r.grammar, r.grammar_state, allowed_);
    if (eot_ >= 0 && size_t(eot_) < allowed_.size())
      allowed_[size_t(eot_)] =
          r.p.req.sampling.stop_at_eot && r.grammar->accepting(r.grammar_state) ? 1 : 0;
    bool any = false;
    for (size_t i = 0; i < row.size(); ++i) {
      if (!allowed_[i]) row[i] = -std::numeric_limits<float>::infinity();
      any = any || allowed_[i];
    }
    if (!any) fail("response_format: no token of the vocabulary continues the JSON text");
  }

  void admit(Pending p) {
    auto r = std::make_unique<Running>();
    const int64_t T = int64_t(p.req.prompt.size());
    r->text = TextStream(p.req.sampling.stop);
    r->seen = p.req.prompt;
    if (p.req.sampling.response_format) {
      r->grammar = std::make_unique<JsonGrammar>(p.req.sampling.response_format);
      r->grammar_state = r->grammar->initial();
    }
    r->p = std::move(p);
    r->seq = pool_->try_allocate(T + r->p.max_new);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prompt_tokens_total += T;
    }
    if (!r->seq) {
      // Reserved at submit, so only a host out of memory gets here.
      finish(*r, FinishReason::Error, {}, "the KV cache could not be allocated");
      release(*r);
      return;
    }
    try {
      const size_t V = size_t(model_->config().vocab_size);
      logits_.resize(V);
      const Prefilled* same = nullptr;
      for (const Prefilled& f : round_)
        if (*f.prompt == r->p.req.prompt) same = &f;
      if (same) {
        // The same prompt was prefilled in this round: copy its cache rows
        // and its last logits instead of running the prompt again.
        model_->copy_cache_prefix(*r->seq, *same->seq, T);
        std::copy(same->logits.begin(), same->logits.end(), logits_.begin());
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.prefills_shared;
        r->cached = same->cached;
      } else {
        prefill_with_cache(*r);
      }
      Prefilled mine{r->seq.get(), &r->p.req.prompt, {}, r->cached};
      if (!same) mine.logits.assign(logits_.begin(), logits_.begin() + std::ptrdiff_t(V));
      accept(*r, pick(*r, logits_.data()));
      // A request that ended at once frees its cache: nothing to copy from.
      if (!same && !r->done) round_.push_back(std::move(mine));
    } catch (const std::exception& e) {
      finish(*r, FinishReason::Error, {}, e.what());
    }
    if (r->done) {
      release(*r);
      return;
    }
    active_.push_back(std::move(r));
  }

  // Prefills r's prompt into its sequence, starting from the longest prefix
  // the prefix cache holds (at least the last token is run: its logits pick
  // the first output).
  void prefill_with_cache(Running& r) {
    const std::span<const int32_t> prompt = r.p.req.prompt;
    const int64_t T = int64_t(prompt.size());
    int64_t from = 0;
    if (prefix_cache_->enabled()) {
      const PrefixCache::Match m = prefix_cache_->find(prompt, T - 1);
      if (m.length > 0) {
        model_->copy_cache_prefix(*r.seq, *m.rows, m.length);
        from = m.length;
        r.cached = m.length;
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.prefix_cache_hits;
        stats_.prefix_cache_tokens_reused += m.length;
      }
    }
    model_->prefill(*r.seq, prompt.subspan(size_t(from)), logits_.data());
  }

  void decode_step() {
    std::vector<KvSequence*> seqs;
    std::vector<int32_t> toks;
    for (auto& r : active_) {
      seqs.push_back(r->seq.get());
      toks.push_back(r->last);
    }
    const int64_t V = model_->config().vocab_size;
    logits_.resize(size_t(V) * seqs.size());
    try {
      model_->decode(seqs, toks, logits_.data());
    } catch (const std::exception& e) {
      for (auto& r : active_) finish(*r, FinishReason::Error, {}, e.what());
      return;
    }
    for (size_t b = 0; b < active_.size(); ++b) {
      Running& r = *active_[b];
      int32_t id = 0;
      try {
        id = pick(r, logits_.data() + b * size_t(V));
      } catch (const std::exception& e) {
        finish(r, FinishReason::Error, {}, e.what());
        continue;
      }
      accept(r, id);
    }
  }

  void reap() {
    for (auto& r : active_)
      if (r->done) release(*r);
    std::erase_if(active_, [](const auto& r) { return r->done; });
    for (auto& [ids, seq] : to_cache_) {
      try {
        prefix_cache_->insert(ids, *seq);
      } catch (const std::exception& e) {
        keel::log().warn("serve: prefix cache: a sequence was not kept: {}", e.what());
      }
    }
    to_cache_.clear();
    // Read here, on the thread that drives the backend, and handed over
    // under the lock.
    const backend::Backend::TransferStats t = backend_->transfer_stats();
    std::lock_guard<std::mutex> lock(mu_);
    stats_.active = int64_t(active_.size());
    stats_.host_syncs = t.syncs;
    stats_.bytes_to_device = t.bytes_to_device;
    stats_.bytes_to_host = t.bytes_to_host;
    stats_.prefix_cache_bytes_in_use = prefix_cache_->bytes_in_use();
  }

  void run() {
    for (;;) {
      std::vector<Pending> admitted, dropped;
      std::unordered_set<uint64_t> cancelled;
      bool abort_all = false, exit = false;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return !active_.empty() || !queue_.empty() || stopping_ || !cancelled_.empty();
        });
        abort_all = abort_all_;
        cancelled.swap(cancelled_);
        // Cancelled or aborted requests still in the queue leave it now.
        for (auto it = queue_.begin(); it != queue_.end();) {
          if (abort_all || cancelled.count(it->id)) {
            dropped.push_back(std::move(*it));
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
        while (!queue_.empty() && int64_t(active_.size() + admitted.size()) < opt_.max_batch) {
          admitted.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        exit =
            stopping_ && queue_.empty() && admitted.empty() && active_.empty() && dropped.empty();
      }
      for (auto& p : dropped) {
        Running r;
        r.p = std::move(p);
        finish(r, FinishReason::Cancelled);
        release(r);
      }
      for (auto& r : active_)
        if (abort_all || cancelled.count(r->p.id)) finish(*r, FinishReason::Cancelled);
      reap();
      if (exit) break;
      if (abort_all && active_.empty() && admitted.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.empty()) break;
        continue;
      }
      // New requests join between decode steps (continuous batching).
      for (auto& p : admitted) admit(std::move(p));
      round_.clear();
      reap();
      if (!active_.empty()) decode_step();
      reap();
    }
  }

  EngineOptions opt_;
  data::Tokenizer tokenizer_;
  std::string model_id_;
  ChatTemplate chat_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<InferenceModel> model_;
  std::unique_ptr<KvCachePool> pool_;
  std::unique_ptr<PrefixCache> prefix_cache_;
  int32_t eot_ = -1;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  std::unordered_set<uint64_t> cancelled_;
  bool stopping_ = false, abort_all_ = false;
  size_t reserved_ = 0;
  uint64_t next_id_ = 1;
  EngineStats stats_;

  // Worker thread only.
  std::vector<std::unique_ptr<Running>> active_;
  // The prompts prefilled in the current admission round (requests admitted
  // together with one prompt, as n > 1 completions are, share one prefill).
  struct Prefilled {
    KvSequence* seq;
    const std::vector<int32_t>* prompt;
    std::vector<float> logits;  // the prompt's last row, before any sampling edit
    int64_t cached = 0;         // its tokens that came from the prefix cache
  };
  std::vector<Prefilled> round_;
  // Finished sequences waiting to enter the prefix cache, with their ids.
  std::vector<std::pair<std::vector<int32_t>, std::unique_ptr<KvSequence>>> to_cache_;
  std::vector<float> logits_;
  std::unique_ptr<JsonTokenMask> token_mask_;  // built at the first response_format request
  std::vector<uint8_t> allowed_;
  std::mutex join_mu_;
  std::thread worker_;
};

}  // namespace

std::unique_ptr<Engine> Engine::load(const std::string& path, const EngineOptions& opt) {
  return std::make_unique<EngineImpl>(store::load_model_weights(path), opt);
}

}  // namespace keel::serve
