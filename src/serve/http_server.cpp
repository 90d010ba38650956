#include "serve/http_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <string_view>

#include <httplib.h>

#include "serve/chat_template.h"
#include "serve/connection_pool.h"
#include "serve/openai_request.h"
#include "serve/openai_response.h"
#include "serve/prometheus_metrics.h"

namespace keel::serve {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Resident set size of this process in bytes (Linux /proc/self/statm).
double resident_bytes() {
  long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return double(pages_resident) * double(sysconf(_SC_PAGESIZE));
}

// Route label for metrics: known paths only, so clients cannot grow the label set.
std::string path_label(const std::string& path) {
  for (const char* p :
       {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(api_error_body(e), "application/json");
}

void send_json(httplib::Response& res, const json& j) {
  res.status = 200;
  res.set_content(json_text(j), "application/json");
}

// One generation request as seen from both sides: the engine thread pushes
// events, the connection thread waits for them and writes them out.
struct Generation {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> pending;
  bool finished = false;                 // the engine sent the final event
  std::atomic<bool> client_gone{false};  // the client went away: cancel
  uint64_t id = 0;
  Clock::time_point start = Clock::now(), last_token;
  bool got_first_token = false;
  // Streaming writer state (touched only by the connection thread).
  bool sent_role = false;
  bool stream_ended = false;  // its finish chunk was written
  int64_t token_bytes = 0;    // bytes of the tokens streamed so far (logprobs' text_offset)
};

}  // namespace

struct HttpServer::Impl {
  Engine& engine;
  HttpServerOptions opt;
  httplib::Server svr;
  int port = 0;
  int listen_fd = -1;  // the listening socket (set while binding)
  const int64_t created = int64_t(std::time(nullptr));

  std::mutex inflight_mu;
  std::condition_variable inflight_cv;
  int64_t inflight = 0;
  std::atomic<bool> draining{false};
  std::once_flag shutdown_once;
  ShutdownReport report;

  MetricsRegistry metrics;
  LabeledCounter* http_requests;
  Counter *gen_requests, *prompt_tokens, *completion_tokens, *disconnects, *cancelled;
  Histogram *ttft, *itl, *duration;

  Impl(Engine& e, HttpServerOptions o) : engine(e), opt(std::move(o)) { register_metrics(); }

  void register_metrics() {
    http_requests = &metrics.labeled_counter("keel_http_requests_total",
                                             "HTTP requests answered, by path and status code.",
                                             {"path", "code"});
    gen_requests = &metrics.counter("keel_generation_requests_total",
                                    "Generation requests accepted by the engine.");
    prompt_tokens = &metrics.counter("keel_prompt_tokens_total",
                                     "Prompt tokens of finished generation requests.");
    completion_tokens = &metrics.counter("keel_completion_tokens_total",
                                         "Tokens generated for finished generation requests.");
    disconnects = &metrics.counter("keel_client_disconnects_total",
                                   "Streams whose client went away before the end (cancelled).");
    cancelled = &metrics.counter("keel_generation_cancelled_total",
                                 "Generation requests that ended cancelled.");
    ttft = &metrics.histogram("keel_time_to_first_token_seconds",
                              "Time from accepting a request to its first generated token.",
                              {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
    itl = &metrics.histogram("keel_inter_token_latency_seconds",
                             "Time between consecutive generated tokens of one request.",
                             {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5});
    duration = &metrics.histogram("keel_request_duration_seconds",
                                  "Time from accepting a generation request to its last token.",
                                  {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120});
    metrics.gauge("keel_queue_length", "Requests waiting for a decode slot.",
                  [this] { return double(engine.stats().queued); });
    metrics.gauge("keel_active_sequences", "Sequences being decoded.",
                  [this] { return double(engine.stats().active); });
    metrics.gauge("keel_http_inflight_requests", "Generation requests the HTTP side is serving.",
                  [this] {
                    std::lock_guard lock(inflight_mu);
                    return double(inflight);
                  });
    metrics.gauge("keel_prefills_shared_total",
                  "Requests that copied an identical prompt's KV cache instead of prefilling.",
                  [this] { return double(engine.stats().prefills_shared); });
    metrics.gauge("keel_prefix_cache_hits_total",
                  "Requests whose prompt began with tokens held by the prefix cache.",
                  [this] { return double(engine.stats().prefix_cache_hits); });
    metrics.gauge("keel_prefix_cache_tokens_reused_total",
                  "Prompt tokens copied from the prefix cache instead of prefilled.",
                  [this] { return double(engine.stats().prefix_cache_tokens_reused); });
    metrics.gauge("keel_prefix_cache_bytes_in_use", "Bytes of KV rows the prefix cache holds.",
                  [this] { return double(engine.stats().prefix_cache_bytes_in_use); });
    metrics.gauge("keel_prefix_cache_bytes_limit", "The prefix cache's byte budget (0: off).",
                  [this] { return double(engine.stats().prefix_cache_bytes_limit); });
    metrics.gauge("keel_kv_cache_bytes_in_use", "KV cache bytes held by sequences.",
                  [this] { return double(engine.stats().cache_bytes_in_use); });
    metrics.gauge("keel_kv_cache_bytes_limit", "KV cache byte limit.",
                  [this] { return double(engine.stats().cache_bytes_limit); });
    metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                  [] { return resident_bytes(); });
  }

  void inflight_add(int64_t d) {
    std::lock_guard lock(inflight_mu);
    inflight += d;
    inflight_cv.notify_all();
  }

  bool wait_inflight_zero(double timeout_s) {
    std::unique_lock lock(inflight_mu);
    return inflight_cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                                [this] { return inflight == 0; });
  }

  // ---- routes ----

  // Requests refused before routing, so nothing waits on a body that will not
  // come: a missing API key (401), a POST without a length (411), a length
  // that is not a number (400). The connection closes
  // after these, since the bytes that follow cannot be trusted as a request.
  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) {
    const auto refuse = [&](int status, const char* code, const std::string& msg) {
      res.set_header("Connection", "close");
      send_error(res, ApiError(status, "invalid_request_error", "", code, msg));
      return httplib::Server::HandlerResponse::Handled;
    };
    if (!opt.api_key.empty() && req.path != "/health" &&
        !bearer_matches(req.get_header_value("Authorization"), opt.api_key)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return refuse(401, "invalid_api_key",
                    "missing or incorrect API key (send \"Authorization: Bearer <key>\")");
    }
    if (req.method != "POST") return httplib::Server::HandlerResponse::Unhandled;
    std::string te = req.get_header_value("Transfer-Encoding");
    std::transform(te.begin(), te.end(), te.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (te.find("chunked") != std::string::npos) return httplib::Server::HandlerResponse::Unhandled;
    if (!req.has_header("Content-Length"))
      return refuse(411, "length_required",
                    "a POST needs a Content-Length header (or Transfer-Encoding: chunked)");
    const std::string len = req.get_header_value("Content-Length");
    if (len.empty() || len.size() > 19 ||
        !std::all_of(len.begin(), len.end(), [](unsigned char c) { return std::isdigit(c); }))
      return refuse(400, "invalid_content_length",
                    fmt::format("Content-Length: '{}' is not a byte count", len.substr(0, 32)));
    // A parseable length over the limit goes on to read_body, which reads the
    // body to its end before the 413: closing on a client still sending would
    // reset the connection and could lose the answer.
    return httplib::Server::HandlerResponse::Unhandled;
  }

  // "Bearer <key>" against the key, in time that does not depend on where they differ.
  static bool bearer_matches(const std::string& header, const std::string& key) {
    static constexpr std::string_view kScheme = "Bearer ";
    const std::string_view got =
        header.size() >= kScheme.size() &&
                std::string_view(header).substr(0, kScheme.size()) == kScheme
            ? std::string_view(header).substr(kScheme.size())
            : std::string_view();
    unsigned char diff = got.size() == key.size() ? 0 : 1;
    for (size_t i = 0; i < key.size(); ++i)
      diff |= static_cast<unsigned char>(key[i] ^ (i < got.size() ? got[i] : 0));
    return diff == 0;
  }

  void setup_routes() {
    svr.new_task_queue = [n = opt.threads, cap = opt.max_connections] {
      return new ConnectionPool(size_t(n), size_t(cap));
    };
    // A reply's last segment goes out at once instead of waiting for the
    // client's delayed ACK (Nagle): ~40 ms per request on a kept-alive connection.
    svr.set_tcp_nodelay(true);
    // httplib listens with a backlog of 5; the listening socket is taken here
    // so bind() can raise it.
    svr.set_socket_options([this](socket_t sock) {
      listen_fd = sock;
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return pre_route(req, res);
    });
    svr.set_payload_max_length(opt.max_body_bytes);
    svr.set_read_timeout(opt.read_timeout_s, 0);
    // An idle keep-alive connection holds a thread: release it soon, but let a
    // busy client reuse its connection for many requests.
    svr.set_keep_alive_timeout(2);
    svr.set_keep_alive_max_count(1000);
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      http_requests->with({path_label(req.path), std::to_string(res.status)}).inc();
    });
    // Statuses set by httplib itself (404 no route, 413 body too large, 400
    // unreadable request) still get an OpenAI error object.
    svr.set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string type = "invalid_request_error", code, msg;
          if (res.status == 404) {
            code = "not_found";
            msg = fmt::format("no route for {} {}", req.method, req.path);
          } else if (res.status == 413) {
            code = "request_too_large";
            msg = "request body is larger than the server's limit";
          } else {
            msg = fmt::format("HTTP {}", res.status);
            if (res.status >= 500) type = "server_error";
          }
          res.set_content(api_error_body(ApiError(res.status, type, "", code, msg)),
                          "application/json");
          return httplib::Server::HandlerResponse::Handled;
        }));
    svr.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string msg = "internal error";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            msg = e.what();
          } catch (...) {
          }
          send_error(res, ApiError(500, "server_error", "", "internal_error", msg));
        });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (draining) {
        res.status = 503;
        res.set_content(R"({"status":"draining"})", "application/json");
      } else {
        send_json(res, {{"status", "ok"}, {"model", engine.model_id()}});
      }
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, {{"object", "list"}, {"data", json::array({model_json()})}});
    });
    svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      if (id != engine.model_id()) return send_error(res, unknown_model(id));
      send_json(res, model_json());
    });
    for (auto [path, ep] : {std::pair{"/v1/completions", Endpoint::Completions},
                            std::pair{"/v1/chat/completions", Endpoint::ChatCompletions}}) {
      svr.Post(path, [this, ep](const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
        try {
          handle_generation(ep, read_body(req, res, reader), res);
        } catch (const ApiError& e) {
          send_error(res, e);
        }
      });
    }
  }

  json model_json() const {
    return {{"id", engine.model_id()},
            {"object", "model"},
            {"created", created},
            {"owned_by", "keel"},
            {"context_length", engine.context_length()}};
  }

  static ApiError unknown_model(const std::string& id) {
    return ApiError(404, "invalid_request_error", "model", "model_not_found",
                    fmt::format("The model '{}' does not exist", id));
  }

  // Reads the body through the content reader so the size limit holds for
  // chunked uploads too (httplib checks only Content-Length by itself). An
  // oversized body is read to its end and dropped, as httplib does for an
  // oversized Content-Length: stopping early would leave the rest of the body
  // on the keep-alive connection, where it would be parsed as new requests.
  std::string read_body(const httplib::Request& req, httplib::Response& res,
                        const httplib::ContentReader& reader) {
    std::string body;
    bool too_large = false;
    const bool ok = reader([&](const char* data, size_t n) {
      if (too_large || body.size() + n > opt.max_body_bytes) {
        too_large = true;
        std::string().swap(body);
        return true;
      }
      body.append(data, n);
      return true;
    });
    if (too_large || res.status == 413) {
      res.set_header("Connection", "close");
      throw ApiError(413, "invalid_request_error", "", "request_too_large",
                     fmt::format("request body is larger than {} bytes", opt.max_body_bytes));
    }
    if (!ok)
      throw ApiError(400, "invalid_request_error", "", "invalid_body",
                     "could not read the request body");
    (void)req;
    return body;
  }

  // Prompt token ids for a parsed request (chat: rendered through the
  // model's template, whose special tokens count as such; the messages'
  // own text is never read as special tokens).
  std::vector<int32_t> prompt_tokens_of(const ParsedRequest& p, const std::string& prompt_param) {
    const data::Tokenizer& tok = engine.tokenizer();
    const int64_t ctx = engine.context_length();
    // A text of more than ctx x (longest token) bytes cannot fit in ctx
    // tokens, whatever it tokenizes to: refuse it before paying for the
    // encode (a body can hold megabytes of prompt).
    auto check_bytes = [&](size_t bytes) {
      if (int64_t(bytes) > ctx * max_token_bytes())
        fail_request(prompt_param, "context_length_exceeded",
                     "{}: {} bytes of text need more than the model's context of {} tokens",
                     prompt_param, bytes, ctx);
    };
    std::vector<int32_t> ids;
    if (p.endpoint == Endpoint::ChatCompletions) {
      // Template text may hold special tokens; message content never does.
      const auto segs = chat_segments(
          [this](const ChatMessages& m) { return engine.render_chat(m); }, p.messages);
      size_t bytes = 0;
      for (const auto& sg : segs) bytes += sg.first.size();
      check_bytes(bytes);
      std::vector<std::pair<std::string_view, bool>> views(segs.begin(), segs.end());
      ids = tok.encode_segments(views);
    } else if (p.prompt_is_ids) {
      ids = p.prompt_ids;
    } else {
      check_bytes(p.prompt_text.size());
      ids = tok.encode(p.prompt_text);
    }
    // An empty prompt continues from the start of a document, as OpenAI's does.
    if (ids.empty() && tok.eot_id() >= 0) ids.push_back(tok.eot_id());
    if (ids.empty()) fail_request("prompt", "invalid_value", "prompt: empty");
    return ids;
  }

  // The longest token's byte length, computed once from the vocabulary.
  int64_t max_token_bytes() {
    std::call_once(max_token_once, [this] {
      const data::Tokenizer& tok = engine.tokenizer();
      for (int32_t id = 0; id < tok.vocab_size(); ++id)
        max_token_len = std::max<int64_t>(max_token_len, int64_t(tok.token_bytes(id).size()));
    });
    return max_token_len;
  }
  std::once_flag max_token_once;
  int64_t max_token_len = 1;

  // A fresh seed: the OS's entropy mixed with a counter, kept below 2^53 so a
  // client that reads JSON numbers as doubles (JavaScript) sends it back intact.
  uint64_t fresh_seed() {
    static std::atomic<uint64_t> counter{0};
    thread_local std::random_device rd;
    const uint64_t r = (uint64_t(rd()) << 32) ^ uint64_t(rd());
    return (r ^ (0x9e3779b97f4a7c15ull * ++counter)) & ((uint64_t(1) << 53) - 1);
  }

  void handle_generation(Endpoint ep, const std::string& body, httplib::Response& res) {
    if (draining)
      throw ApiError(503, "server_error", "", "shutting_down",
                     "the server is shutting down and takes no new requests");
    const int64_t ctx = engine.context_length();
    ParsedRequest p = parse_request(ep, body, {ctx, engine.tokenizer().vocab_size()});
    if (p.model != engine.model_id()) throw unknown_model(p.model);
    const std::string prompt_param = ep == Endpoint::ChatCompletions ? "messages" : "prompt";
    Request r;
    r.prompt = prompt_tokens_of(p, prompt_param);
    const int64_t n_prompt = int64_t(r.prompt.size());
    if (n_prompt >= ctx)
      fail_request(prompt_param, "context_length_exceeded",
                   "{}: {} tokens leave no room in the model's context of {} tokens", prompt_param,
                   n_prompt, ctx);
    r.sampling = p.sampling;
    // Without a seed every request samples afresh, as OpenAI's API does; the
    // seed used is in the response, so any answer can be replayed.
    if (!p.seed_given) r.sampling.seed = fresh_seed();
    if (p.max_tokens) {
      if (n_prompt + *p.max_tokens > ctx)
        fail_request("max_tokens", "context_length_exceeded",
                     "max_tokens: {} prompt tokens + {} completion tokens exceed the model's "
                     "context of {} tokens",
                     n_prompt, *p.max_tokens, ctx);
    } else {
      // OpenAI's defaults: 16 for completions, the rest of the context for chat.
      const int64_t room = ctx - n_prompt;
      r.sampling.max_tokens = ep == Endpoint::ChatCompletions ? room : std::min<int64_t>(16, room);
    }

    // n choices are n engine requests with seeds seed, seed + 1, ..., queued
    // together so the engine admits them in one round and prefills the prompt
    // once (the others copy its KV cache). Streamed, their chunks interleave.
    std::vector<Request> reqs;
    std::vector<EventFn> fns;
    std::vector<std::shared_ptr<Generation>> gens;
    for (int64_t i = 0; i < p.n; ++i) {
      reqs.push_back(r);
      reqs.back().sampling.seed = r.sampling.seed + uint64_t(i);
      auto g = std::make_shared<Generation>();
      fns.push_back([this, g](const Event& ev) { return on_engine_event(*g, ev); });
      gens.push_back(std::move(g));
    }
    inflight_add(1);
    try {
      const std::vector<uint64_t> ids = engine.submit_all(std::move(reqs), std::move(fns));
      for (size_t i = 0; i < ids.size(); ++i) gens[i]->id = ids[i];
    } catch (const RequestError& e) {
      inflight_add(-1);
      fail_request(e.field(), "invalid_value", "{}", e.what());
    } catch (const CapacityError& e) {
      inflight_add(-1);
      res.set_header("Retry-After", "1");
      throw ApiError(429, "rate_limit_error", "", "server_busy", e.what());
    } catch (...) {
      inflight_add(-1);
      throw;
    }
    gen_requests->inc(double(p.n));
    ResponseMeta meta{ep,
                      new_response_id(ep),
                      int64_t(std::time(nullptr)),
                      engine.model_id(),
                      r.sampling.seed,
                      r.sampling.logprobs >= 0};
    if (p.stream) {
      stream_response(std::move(gens), meta, p.include_usage, res);
    } else {
      whole_response(gens, meta, res);
      inflight_add(-1);
    }
  }

  // Engine thread: record timings, hand the event over, report whether the
  // client is still there.
  bool on_engine_event(Generation& g, const Event& ev) {
    const auto now = Clock::now();
    if (!ev.tokens.empty()) {
      if (!g.got_first_token) {
        ttft->observe(std::chrono::duration<double>(now - g.start).count());
        g.got_first_token = true;
      } else {
        const double dt = std::chrono::duration<double>(now - g.last_token).count();
        for (size_t i = 0; i < ev.tokens.size(); ++i) itl->observe(dt / double(ev.tokens.size()));
      }
      g.last_token = now;
    }
    if (ev.finish != FinishReason::None) {
      prompt_tokens->inc(double(ev.prompt_tokens));
      completion_tokens->inc(double(ev.completion_tokens));
      duration->observe(std::chrono::duration<double>(now - g.start).count());
      if (ev.finish == FinishReason::Cancelled) cancelled->inc();
    }
    {
      std::lock_guard lock(g.mu);
      g.pending.push_back(ev);
      if (ev.finish != FinishReason::None) g.finished = true;
    }
    g.cv.notify_all();
    return !g.client_gone.load();
  }

  static ApiError ended_error(const Event& ev) {
    if (ev.finish == FinishReason::Cancelled)
      return ApiError(503, "server_error", "", "cancelled",
                      "the request was cancelled (server shutting down)");
    return ApiError(500, "server_error", "", "generation_failed",
                    ev.error.empty() ? "generation failed" : ev.error);
  }

  // Waits for every choice and answers with all of them (usage adds their
  // tokens); a choice that failed cancels the rest and answers its error.
  void whole_response(const std::vector<std::shared_ptr<Generation>>& gens,
                      const ResponseMeta& meta, httplib::Response& res) {
    struct Choice {
      std::string text;
      std::vector<TokenLogprob> lps;
      Event last;
    };
    std::vector<Choice> choices;
    Usage usage;
    for (const auto& gp : gens) {
      Generation& g = *gp;
      std::unique_lock lock(g.mu);
      g.cv.wait(lock, [&] { return g.finished; });
      Choice c;
      for (const Event& ev : g.pending) {
        c.text += ev.text;
        c.lps.insert(c.lps.end(), ev.logprobs.begin(), ev.logprobs.end());
      }
      c.last = g.pending.back();
      lock.unlock();
      if (c.last.finish == FinishReason::Cancelled || c.last.finish == FinishReason::Error) {
        for (const auto& other : gens) {
          engine.cancel(other->id);
          std::unique_lock wait(other->mu);
          other->cv.wait_for(wait, std::chrono::seconds(10), [&] { return other->finished; });
        }
        return send_error(res, ended_error(c.last));
      }
      usage.prompt_tokens = c.last.prompt_tokens;
      usage.cached_tokens = c.last.cached_tokens;
      usage.completion_tokens += c.last.completion_tokens;
      choices.push_back(std::move(c));
    }
    json out;
    for (size_t i = 0; i < choices.size(); ++i) {
      const Choice& c = choices[i];
      json one =
          completion_json(meta, c.text, finish_reason_name(c.last.finish), usage,
                          meta.logprobs ? logprobs_json(meta, engine.tokenizer(), c.lps) : json());
      if (i == 0) {
        out = std::move(one);
      } else {
        one["choices"][0]["index"] = i;
        out["choices"].push_back(std::move(one["choices"][0]));
      }
    }
    send_json(res, out);
  }

  // Streams every choice as its tokens come: each chunk carries its choice's
  // index (OpenAI's shape for n > 1); the finish chunks come per choice, then
  // the usage chunk (their tokens added) and [DONE] once all have finished.
  // A choice that fails ends the stream with an error event and cancels the rest.
  void stream_response(std::vector<std::shared_ptr<Generation>> gens, ResponseMeta meta,
                       bool include_usage, httplib::Response& res) {
    struct StreamState {
      bool sent_done = false;
      Usage usage;
    };
    auto st = std::make_shared<StreamState>();
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, gens, meta, include_usage, st](size_t, httplib::DataSink& sink) {
          // The choices decode in the same engine steps, so waiting on the
          // first one still running hears the others' tokens too; a short
          // wait keeps the thread responsive to a dead client.
          for (const auto& g : gens) {
            if (g->stream_ended) continue;
            std::unique_lock lock(g->mu);
            g->cv.wait_for(lock, std::chrono::milliseconds(200),
                           [&] { return !g->pending.empty(); });
            break;
          }
          std::string out;
          bool done = false;
          for (size_t i = 0; i < gens.size() && !done; ++i) {
            Generation& g = *gens[i];
            std::deque<Event> batch;
            {
              std::lock_guard lock(g.mu);
              batch.swap(g.pending);
            }
            const int64_t index = int64_t(i);
            if (meta.endpoint == Endpoint::ChatCompletions && !g.sent_role) {
              out += sse_event(chunk_json(meta, "", "", true, nullptr, index));
              g.sent_role = true;
            }
            for (const Event& ev : batch) {
              if (!ev.text.empty() || (meta.logprobs && !ev.logprobs.empty())) {
                json lp;
                if (meta.logprobs) {
                  lp = logprobs_json(meta, engine.tokenizer(), ev.logprobs, g.token_bytes);
                  for (const TokenLogprob& t : ev.logprobs)
                    g.token_bytes += int64_t(engine.tokenizer().token_bytes(t.id).size());
                }
                out += sse_event(chunk_json(meta, ev.text, "", false, lp, index));
              }
              if (ev.finish == FinishReason::None) continue;
              if (ev.finish == FinishReason::Cancelled || ev.finish == FinishReason::Error) {
                out += sse_event(api_error_json(ended_error(ev)));
                out += sse_done();
                done = true;
                break;
              }
              out += sse_event(
                  chunk_json(meta, "", finish_reason_name(ev.finish), false, nullptr, index));
              g.stream_ended = true;
              st->usage.prompt_tokens = ev.prompt_tokens;
              st->usage.cached_tokens = ev.cached_tokens;
              st->usage.completion_tokens += ev.completion_tokens;
            }
          }
          if (!done && std::all_of(gens.begin(), gens.end(),
                                   [](const auto& g) { return g->stream_ended; })) {
            if (include_usage) out += sse_event(usage_chunk_json(meta, st->usage));
            out += sse_done();
            done = true;
          }
          if (out.empty()) return sink.is_writable();
          if (!sink.write(out.data(), out.size())) return false;  // the releaser cancels
          if (done) {
            st->sent_done = true;
            sink.done();
          }
          return true;
        },
        // Runs when the response is destroyed, whatever happened to the stream.
        [this, gens, st](bool) {
          if (!st->sent_done) disconnects->inc();
          for (const auto& g : gens) {
            std::unique_lock lock(g->mu);
            if (g->finished) continue;
            lock.unlock();
            g->client_gone = true;
            engine.cancel(g->id);
            // The engine's final event is still to come; wait for it so the
            // slot is free before this request stops counting as in flight.
            lock.lock();
            g->cv.wait_for(lock, std::chrono::seconds(10), [&] { return g->finished; });
          }
          inflight_add(-1);
        });
  }
};

HttpServer::HttpServer(Engine& engine, HttpServerOptions opt)
    : impl_(std::make_unique<Impl>(engine, std::move(opt))) {
  impl_->setup_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  Impl& m = *impl_;
  if (m.opt.port == 0) {
    m.port = m.svr.bind_to_any_port(m.opt.host);
    if (m.port <= 0) fail("serve: cannot bind to {} on any port", m.opt.host);
  } else {
    if (!m.svr.bind_to_port(m.opt.host, m.opt.port))
      fail("serve: cannot bind to {}:{} (in use, or not a local address?)", m.opt.host, m.opt.port);
    m.port = m.opt.port;
  }
  // listen() again on a listening socket only changes its backlog (Linux).
  if (m.listen_fd >= 0) ::listen(m.listen_fd, m.opt.listen_backlog);
  return m.port;
}

void HttpServer::listen() {
  impl_->svr.listen_after_bind();
}

ShutdownReport HttpServer::shutdown() {
  Impl& m = *impl_;
  std::call_once(m.shutdown_once, [&m] {
    m.draining = true;
    {
      std::lock_guard lock(m.inflight_mu);
      m.report.in_flight = m.inflight;
    }
    if (!m.wait_inflight_zero(m.opt.drain_timeout_s)) {
      m.report.cancelled = true;
      m.engine.shutdown(false);  // the rest end with Cancelled
      m.wait_inflight_zero(10);
    }
    m.svr.stop();
  });
  return m.report;
}

}  // namespace keel::serve
