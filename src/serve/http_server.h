// The OpenAI-compatible HTTP front of the engine: POST /v1/completions and
// /v1/chat/completions (whole or streamed as server-sent events), GET
// /v1/models, /health and /metrics (Prometheus). Built on Boost.Beast, one
// thread per connection, which stays hidden behind this header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "serve/engine.h"

namespace keel::serve {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0: the kernel picks a free port
  int threads = 256;                        // connection threads started; a stream holds one
  int max_connections = 4096;               // threads grow to this many connections
  size_t max_body_bytes = size_t(8) << 20;  // larger bodies: 413 before being read
  double drain_timeout_s = 30;              // shutdown: in-flight requests get this long
  int read_timeout_s = 30;                  // a client silent this long is dropped
  int write_timeout_s = 5;                  // a client not reading this long is dropped
  // Non-empty: every route but /health needs "Authorization: Bearer <key>".
  std::string api_key;
  int listen_backlog = 1024;  // connections the kernel queues before accept
};

// What graceful shutdown did.
struct ShutdownReport {
  int64_t in_flight = 0;   // generation requests running when shutdown began
  bool cancelled = false;  // the drain timeout passed and the rest were cancelled
};

class HttpServer {
 public:
  // `engine` must outlive the server.
  HttpServer(Engine& engine, HttpServerOptions opt);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port (the chosen one for port 0).
  // Throws keel::Error naming host and port when binding fails.
  int bind();
  // Serves until shutdown() completes. Call bind() first.
  void listen();
  // Graceful stop, callable from any thread: generation requests arriving
  // from now on get 503; in-flight ones may finish within drain_timeout_s,
  // after which the engine cancels the rest (their streams end with an error
  // chunk and [DONE]); then the listener stops and listen() returns.
  ShutdownReport shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::serve
