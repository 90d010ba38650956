#include "serve/http_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "core/log.h"
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

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ParsedHttp = http::request<http::string_body>;

// How a streamed reply writes: each piece goes out as one chunk at once.
struct StreamSink {
  std::function<bool(std::string_view)> write;  // false: the client is gone
  std::function<bool()> client_alive;           // no hang-up seen on the socket
  bool done = false;                            // the provider wrote its last piece
};

// What a route answers: a whole body, or a stream whose provider is called
// until it sets done or returns false; `release` runs once the reply is over,
// whatever happened to it (written, cut short, never started).
struct Reply {
  int status = 200;
  std::string body, content_type;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // the connection closes after this reply
  std::function<bool(StreamSink&)> stream;
  std::function<void()> release;

  void set_header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
  }
  void set_content(std::string b, std::string type) {
    body = std::move(b);
    content_type = std::move(type);
  }
};

void send_error(Reply& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(api_error_body(e), "application/json");
}

void send_json(Reply& res, const json& j) {
  res.status = 200;
  res.set_content(json_text(j), "application/json");
}

// A connected socket whose every read and write gives up after `timeout_ms`
// without progress (Beast's SyncReadStream and SyncWriteStream). The socket
// is non-blocking and the waits are poll()s: a receive timeout on a blocking
// Asio socket does not help, as Asio goes back to waiting without a limit.
class TimedSocket {
 public:
  TimedSocket(tcp::socket& sock, int timeout_ms) : sock_(sock), timeout_ms_(timeout_ms) {}
  int fd() { return sock_.native_handle(); }
  void shutdown_send() { ::shutdown(fd(), SHUT_WR); }

  // Waits up to `ms` for bytes (or a hang-up) to read.
  bool wait_readable(int ms) {
    pollfd p{fd(), POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  }
  // A hang-up or an error seen on the socket, without waiting or reading.
  bool peer_gone() {
    pollfd p{fd(), POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

  template <class Buffers>
  size_t read_some(const Buffers& b, beast::error_code& ec) {
    for (;;) {
      const size_t n = sock_.read_some(b, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) return n;
      if (!wait(POLLIN, ec)) return 0;
    }
  }
  template <class Buffers>
  size_t read_some(const Buffers& b) {
    beast::error_code ec;
    const size_t n = read_some(b, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class Buffers>
  size_t write_some(const Buffers& b, beast::error_code& ec) {
    for (;;) {
      const size_t n = sock_.write_some(b, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) return n;
      if (!wait(POLLOUT, ec)) return 0;
    }
  }
  template <class Buffers>
  size_t write_some(const Buffers& b) {
    beast::error_code ec;
    const size_t n = write_some(b, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  bool wait(short events, beast::error_code& ec) {
    pollfd p{fd(), events, 0};
    int r;
    do r = ::poll(&p, 1, timeout_ms_);
    while (r < 0 && errno == EINTR);
    if (r > 0) return true;
    ec = r == 0 ? beast::error_code(beast::error::timeout)
                : beast::error_code(errno, boost::system::system_category());
    return false;
  }
  tcp::socket& sock_;
  int timeout_ms_;
};

// The path of a request target: the query dropped, %XX decoded.
std::string target_path(std::string_view target) {
  target = target.substr(0, target.find('?'));
  std::string out;
  out.reserve(target.size());
  const auto hex = [](char c) {
    return std::isdigit(static_cast<unsigned char>(c))
               ? c - '0'
               : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10;
  };
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == '%' && i + 2 < target.size() &&
        std::isxdigit(static_cast<unsigned char>(target[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(target[i + 2]))) {
      out += char(hex(target[i + 1]) * 16 + hex(target[i + 2]));
      i += 2;
    } else {
      out += target[i];
    }
  }
  return out;
}

// A header's value as sent, read from the raw bytes the parser refused
// (for an error message that quotes what the client sent).
std::string raw_header_value(std::string_view raw, std::string_view name) {
  const size_t end = raw.find("\r\n\r\n");
  raw = raw.substr(0, end);
  for (size_t pos = 0; pos < raw.size();) {
    size_t eol = raw.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = raw.size();
    const std::string_view line = raw.substr(pos, eol - pos);
    pos = eol + 2;
    const size_t colon = line.find(':');
    if (colon != name.size()) continue;
    if (!std::equal(name.begin(), name.end(), line.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        }))
      continue;
    std::string_view v = line.substr(colon + 1);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return std::string(v);
  }
  return "";
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
  asio::io_context io;  // never run: sockets and the acceptor are used synchronously
  tcp::acceptor acceptor{io};
  int port = 0;
  std::unique_ptr<ConnectionPool> pool;

  // Open connections, so shutdown can close the idle ones (waiting for a
  // request) and the busy ones close after their reply.
  struct OpenConnection {
    int fd;
    bool busy = false;
  };
  std::mutex conns_mu;
  std::unordered_map<const void*, OpenConnection> conns;
  bool stopping = false;  // guarded by conns_mu
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

  // Requests refused once their header is read, so nothing waits on a body
  // that will not come: a missing API key (401), a POST without a length
  // (411). The connection closes after these, since the bytes that follow
  // cannot be trusted as a request. (A length that is not a byte count, or
  // one over the limit, the parser refuses by itself: see serve_connection.)
  bool refused_before_body(const ParsedHttp& req, const std::string& path, Reply& res) {
    const auto refuse = [&](int status, const char* code, const std::string& msg) {
      res.close = true;
      send_error(res, ApiError(status, "invalid_request_error", "", code, msg));
      return true;
    };
    if (!opt.api_key.empty() && path != "/health" &&
        !bearer_matches(std::string(req[http::field::authorization]), opt.api_key)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return refuse(401, "invalid_api_key",
                    "missing or incorrect API key (send \"Authorization: Bearer <key>\")");
    }
    if (req.method() != http::verb::post) return false;
    if (req.chunked() || req.count(http::field::content_length)) return false;
    return refuse(411, "length_required",
                  "a POST needs a Content-Length header (or Transfer-Encoding: chunked)");
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

  void route(const ParsedHttp& req, const std::string& path, Reply& res) {
    // HEAD is GET without the body (write_reply leaves it out).
    const http::verb m = req.method() == http::verb::head ? http::verb::get : req.method();
    try {
      if (m == http::verb::get && path == "/health") {
        if (draining) {
          res.status = 503;
          res.set_content(R"({"status":"draining"})", "application/json");
        } else {
          send_json(res, {{"status", "ok"}, {"model", engine.model_id()}});
        }
      } else if (m == http::verb::get && path == "/metrics") {
        res.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
      } else if (m == http::verb::get && path == "/v1/models") {
        send_json(res, {{"object", "list"}, {"data", json::array({model_json()})}});
      } else if (m == http::verb::get && path.size() > 11 && path.rfind("/v1/models/", 0) == 0) {
        const std::string id = path.substr(11);
        if (id != engine.model_id()) return send_error(res, unknown_model(id));
        send_json(res, model_json());
      } else if (m == http::verb::post && path == "/v1/completions") {
        handle_generation(Endpoint::Completions, req.body(), res);
      } else if (m == http::verb::post && path == "/v1/chat/completions") {
        handle_generation(Endpoint::ChatCompletions, req.body(), res);
      } else {
        send_error(res, ApiError(404, "invalid_request_error", "", "not_found",
                                 fmt::format("no route for {} {}", std::string(req.method_string()),
                                             path)));
      }
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, "server_error", "", "internal_error", e.what()));
    }
  }

  // ---- connections ----

  // How long an idle kept-alive connection waits for its next request: it
  // holds a thread, so release it soon (sent to clients as Keep-Alive: timeout).
  static constexpr int kKeepAliveTimeoutS = 2;
  // Request line and headers together (Beast's default).
  static constexpr uint32_t kHeaderLimitBytes = 8 * 1024;

  // Serves one connection until it closes: requests are parsed one after the
  // other from the connection's buffer, so requests pipelined in one write
  // are each answered, in order.
  void serve_connection(tcp::socket sock) {
    const void* key = &sock;
    {
      std::lock_guard lock(conns_mu);
      if (stopping) return;
      conns.emplace(key, OpenConnection{sock.native_handle()});
    }
    beast::error_code ec;
    // A reply's last segment goes out at once instead of waiting for the
    // client's delayed ACK (Nagle): ~40 ms per request on a kept-alive connection.
    sock.set_option(tcp::no_delay(true), ec);
    sock.non_blocking(true, ec);
    TimedSocket stream(sock, opt.read_timeout_s * 1000);
    // Writes give up sooner: a client that stops reading its stream is gone.
    TimedSocket writer(sock, opt.write_timeout_s * 1000);
    beast::flat_buffer buf;
    try {
      for (bool first = true;; first = false) {
        if (!first && buf.size() == 0 && !stream.wait_readable(kKeepAliveTimeoutS * 1000)) break;
        if (!serve_request(stream, writer, buf, key)) break;
        std::lock_guard lock(conns_mu);
        if (stopping) break;
        conns[key].busy = false;
      }
    } catch (const std::exception& e) {
      log().debug("keel serve: connection ended: {}", e.what());
    }
    {
      std::lock_guard lock(conns_mu);
      conns.erase(key);
    }
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }

  // Reads and answers one request; false when the connection is to close.
  bool serve_request(TimedSocket& stream, TimedSocket& writer, beast::flat_buffer& buf,
                     const void* key) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimitBytes);
    parser.body_limit(opt.max_body_bytes);
    beast::error_code ec;
    http::read_header(stream, buf, parser, ec);
    Reply res;
    std::string path;
    bool answered = false;
    if (!ec) {
      path = target_path(parser.get().target());
      answered = refused_before_body(parser.get(), path, res);
      if (!answered) {
        if (parser.get()[http::field::expect] == "100-continue") {
          static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
          asio::write(writer, asio::buffer(kContinue.data(), kContinue.size()), ec);
          if (ec) return false;
        }
        http::read(stream, buf, parser, ec);
      }
    }
    if (ec) {
      // Nothing more comes from a client that left or went silent.
      if (ec == http::error::end_of_stream || ec == asio::error::eof ||
          ec == beast::error::timeout || ec == asio::error::connection_reset ||
          ec == http::error::partial_message)
        return false;
      res = refusal(ec, buf);
      // The request line is known when the refusal came later (a body over
      // the limit), so the metrics still name the route.
      if (path.empty()) path = target_path(parser.get().target());
    } else if (!answered) {
      {
        std::lock_guard lock(conns_mu);
        conns[key].busy = true;
      }
      route(parser.get(), path, res);
    }
    const bool keep_alive = !res.close && parser.get().keep_alive();
    const bool head_only = parser.get().method() == http::verb::head;
    const bool written = write_reply(writer, res, keep_alive, head_only);
    http_requests->with({path_label(path), std::to_string(res.status)}).inc();
    if (res.close) {
      // The rest of what the client sends (an unread or oversized body) is
      // read and dropped, never parsed as requests: closing with unread
      // bytes would reset the connection, and the client could lose the answer.
      stream.shutdown_send();
      drain_before_close(stream);
      return false;
    }
    return written && keep_alive;
  }

  // The answer to a request the parser refused.
  Reply refusal(const beast::error_code& ec, const beast::flat_buffer& buf) {
    Reply res;
    res.close = true;
    std::string code = "invalid_request", msg;
    int status = 400;
    if (ec == http::error::body_limit) {
      status = 413;
      code = "request_too_large";
      msg = fmt::format("request body is larger than {} bytes", opt.max_body_bytes);
    } else if (ec == http::error::bad_content_length) {
      code = "invalid_content_length";
      const std::string_view raw(static_cast<const char*>(buf.data().data()), buf.size());
      msg = fmt::format("Content-Length: '{}' is not a byte count",
                        raw_header_value(raw, "content-length").substr(0, 32));
    } else if (ec == http::error::header_limit) {
      status = 431;
      code = "request_header_too_large";
      msg = fmt::format("the request line and headers exceed {} bytes", kHeaderLimitBytes);
    } else {
      msg = fmt::format("unreadable request: {}", ec.message());
    }
    send_error(res, ApiError(status, "invalid_request_error", "", code, msg));
    return res;
  }

  // Writes a reply; false when the client could not be written to.
  bool write_reply(TimedSocket& writer, Reply& res, bool keep_alive, bool head_only) {
    struct Release {
      Reply& r;
      ~Release() {
        if (r.release) r.release();
      }
    } release{res};
    beast::error_code ec;
    const auto common = [&](auto& msg) {
      msg.result(static_cast<unsigned>(res.status));
      msg.version(11);
      for (const auto& [name, value] : res.headers) msg.set(name, value);
      msg.keep_alive(keep_alive);
      if (keep_alive)
        msg.set(http::field::keep_alive, fmt::format("timeout={}", kKeepAliveTimeoutS));
    };
    if (!res.stream) {
      http::response<http::string_body> msg;
      common(msg);
      if (!res.content_type.empty()) msg.set(http::field::content_type, res.content_type);
      msg.body() = std::move(res.body);
      msg.prepare_payload();
      if (head_only) msg.body().clear();  // Content-Length still says what GET sends
      http::write(writer, msg, ec);
      return !ec;
    }
    http::response<http::empty_body> msg;
    common(msg);
    msg.set(http::field::content_type, res.content_type);
    msg.chunked(true);
    http::response_serializer<http::empty_body> head(msg);
    http::write_header(writer, head, ec);
    if (ec) return false;
    StreamSink sink;
    sink.write = [&](std::string_view piece) {
      asio::write(writer, http::make_chunk(asio::const_buffer(piece.data(), piece.size())), ec);
      return !ec;
    };
    sink.client_alive = [&] { return !writer.peer_gone(); };
    while (!sink.done)
      if (!res.stream(sink)) return false;
    asio::write(writer, http::make_chunk_last(), ec);
    return !ec;
  }

  // Reads and drops what the client still sends, until it closes or goes
  // quiet, so the answer already written reaches it.
  static void drain_before_close(TimedSocket& stream) {
    beast::error_code ec;
    char scratch[64 * 1024];
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < until && stream.wait_readable(1000)) {
      stream.read_some(asio::buffer(scratch), ec);
      if (ec) return;
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

  void handle_generation(Endpoint ep, const std::string& body, Reply& res) {
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
                      const ResponseMeta& meta, Reply& res) {
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
                       bool include_usage, Reply& res) {
    struct StreamState {
      bool sent_done = false;
      Usage usage;
    };
    auto st = std::make_shared<StreamState>();
    res.set_header("Cache-Control", "no-cache");
    res.content_type = "text/event-stream";
    res.stream = [this, gens, meta, include_usage, st](StreamSink& sink) {
      // The choices decode in the same engine steps, so waiting on the
      // first one still running hears the others' tokens too; a short
      // wait keeps the thread responsive to a dead client.
      for (const auto& g : gens) {
        if (g->stream_ended) continue;
        std::unique_lock lock(g->mu);
        g->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return !g->pending.empty(); });
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
          out +=
              sse_event(chunk_json(meta, "", finish_reason_name(ev.finish), false, nullptr, index));
          g.stream_ended = true;
          st->usage.prompt_tokens = ev.prompt_tokens;
          st->usage.cached_tokens = ev.cached_tokens;
          st->usage.completion_tokens += ev.completion_tokens;
        }
      }
      if (!done &&
          std::all_of(gens.begin(), gens.end(), [](const auto& g) { return g->stream_ended; })) {
        if (include_usage) out += sse_event(usage_chunk_json(meta, st->usage));
        out += sse_done();
        done = true;
      }
      if (out.empty()) return sink.client_alive();
      if (!sink.write(out)) return false;  // the release cancels
      if (done) {
        st->sent_done = true;
        sink.done = true;
      }
      return true;
    };
    // Runs once the reply is over, whatever happened to the stream.
    res.release = [this, gens, st] {
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
    };
  }
};

HttpServer::HttpServer(Engine& engine, HttpServerOptions opt)
    : impl_(std::make_unique<Impl>(engine, std::move(opt))) {}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  Impl& m = *impl_;
  beast::error_code ec;
  tcp::resolver resolver(m.io);
  const auto found = resolver.resolve(m.opt.host, std::to_string(m.opt.port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || found.empty())
    fail("serve: cannot resolve host '{}': {}", m.opt.host, ec ? ec.message() : "no address");
  const tcp::endpoint where = found.begin()->endpoint();
  m.acceptor.open(where.protocol(), ec);
  if (!ec) m.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(where, ec);
  // The kernel queues this many connections before accept, so a burst waits
  // instead of being refused.
  if (!ec) m.acceptor.listen(m.opt.listen_backlog, ec);
  if (ec) {
    beast::error_code ignored;
    m.acceptor.close(ignored);
    fail("serve: cannot bind to {}:{} ({})", m.opt.host, m.opt.port, ec.message());
  }
  m.port = m.acceptor.local_endpoint().port();
  return m.port;
}

void HttpServer::listen() {
  Impl& m = *impl_;
  m.pool = std::make_unique<ConnectionPool>(size_t(m.opt.threads), size_t(m.opt.max_connections));
  for (;;) {
    tcp::socket sock(m.io);
    beast::error_code ec;
    m.acceptor.accept(sock, ec);
    if (ec) {
      {
        std::lock_guard lock(m.conns_mu);
        if (m.stopping) break;
      }
      // Out of descriptors or memory: the connections being served close in
      // time, so wait a little rather than stop serving.
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
          ec == asio::error::no_memory) {
        log().warn("keel serve: accept: {} (retrying)", ec.message());
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      if (ec == asio::error::connection_aborted || ec == asio::error::interrupted ||
          ec == asio::error::try_again)
        continue;
      log().error("keel serve: accept on {}:{} failed: {}", m.opt.host, m.port, ec.message());
      break;
    }
    // The pool's jobs are copyable functions; the socket moves in through a pointer.
    auto conn = std::make_shared<tcp::socket>(std::move(sock));
    m.pool->enqueue([&m, conn] { m.serve_connection(std::move(*conn)); });
  }
  m.pool->shutdown();  // the connections still open finish their replies and close
  std::lock_guard lock(m.conns_mu);
  beast::error_code ignored;
  m.acceptor.close(ignored);
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
    // Stop accepting; close the connections waiting for a request (a busy one
    // closes after its reply).
    std::lock_guard lock(m.conns_mu);
    m.stopping = true;
    for (const auto& [key, conn] : m.conns)
      if (!conn.busy) ::shutdown(conn.fd, SHUT_RDWR);
    if (m.acceptor.is_open()) ::shutdown(m.acceptor.native_handle(), SHUT_RDWR);
  });
  return m.report;
}

}  // namespace keel::serve
