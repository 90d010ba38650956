// `keel serve --model PATH`: load a model into the engine and answer the
// OpenAI HTTP API until SIGTERM/SIGINT, then drain in-flight requests (within
// --drain-timeout) and exit 0.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "cli/commands/commands.h"
#include "cli/commands/engine_options.h"
#include "core/error.h"
#include "serve/engine.h"
#include "serve/http_server.h"

namespace keel::cli {

namespace {

struct ServeArgs {
  std::string model;
  serve::EngineOptions engine;
  serve::HttpServerOptions http;
  double cache_mb = 1024, max_body_mb = 8, prefix_cache_mb = 256;
};

void run_serve(ServeArgs& a) {
  if (a.http.port < 0 || a.http.port > 65535)
    fail("--port: must be in [0, 65535], got {}", a.http.port);
  if (a.http.threads < 1) fail("--http-threads: must be >= 1, got {}", a.http.threads);
  if (a.http.max_connections < a.http.threads)
    fail("--max-connections: must be >= --http-threads ({}), got {}", a.http.threads,
         a.http.max_connections);
  if (a.engine.max_batch < 1) fail("--max-batch: must be >= 1, got {}", a.engine.max_batch);
  // Every request waits in the queue until a batch admits it: a queue of 0
  // would answer every request 429.
  if (a.engine.max_queue < 1) fail("--max-queue: must be >= 1, got {}", a.engine.max_queue);
  if (!(a.max_body_mb > 0)) fail("--max-body-mb: must be > 0, got {}", a.max_body_mb);
  if (!(a.cache_mb > 0)) fail("--cache-mb: must be > 0, got {}", a.cache_mb);
  if (!(a.http.drain_timeout_s >= 0))
    fail("--drain-timeout: must be >= 0, got {}", a.http.drain_timeout_s);
  a.http.max_body_bytes = size_t(a.max_body_mb * 1024 * 1024);
  a.engine.max_cache_bytes = size_t(a.cache_mb * 1024 * 1024);
  if (!(a.prefix_cache_mb >= 0)) fail("--prefix-cache-mb: must be >= 0, got {}", a.prefix_cache_mb);
  a.engine.prefix_cache_bytes = size_t(a.prefix_cache_mb * 1024 * 1024);

  // Termination signals are taken by sigwait below, never by a random
  // thread: block them before any thread (engine, OpenMP, HTTP) exists.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A client that hangs up must not kill the server through a write.
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<serve::Engine> engine = serve::Engine::load(a.model, a.engine);
  serve::HttpServer server(*engine, a.http);
  const int port = server.bind();
  std::printf("keel serve: model %s (context %lld tokens), backend %s, quant %s, kv cache %s\n",
              engine->model_id().c_str(), static_cast<long long>(engine->context_length()),
              a.engine.backend.c_str(), a.engine.quant.c_str(), a.engine.kv_dtype.c_str());
  std::printf("listening on http://%s:%d%s\n", a.http.host.c_str(), port,
              a.http.api_key.empty() ? "" : " (API key required)");
  std::fflush(stdout);

  std::atomic<bool> listen_ended{false};
  std::thread listener([&] {
    server.listen();
    listen_ended = true;
  });
  int sig = 0;
  while (!listen_ended) {
    const timespec tick{0, 200'000'000};
    sig = sigtimedwait(&stop_signals, nullptr, &tick);
    if (sig > 0) break;
  }
  if (sig > 0) {
    std::printf("keel serve: %s, draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    std::fflush(stdout);
  }
  const serve::ShutdownReport r = server.shutdown();
  listener.join();
  engine->shutdown(true);
  std::printf("keel serve: stopped (%lld in flight at shutdown, %s)\n",
              static_cast<long long>(r.in_flight),
              r.cancelled ? "the rest cancelled after the drain timeout" : "all finished");
  std::fflush(stdout);
  if (sig <= 0) fail("serve: the HTTP listener stopped unexpectedly");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  auto a = std::make_shared<ServeArgs>();
  cmd->add_option("--model", a->model, "run directory or exported model folder")->required();
  cmd->add_option("--host", a->http.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", a->http.port, "port (0: pick a free one and print it)")
      ->capture_default_str();
  add_engine_options(cmd, a->engine);
  cmd->add_option("--max-batch", a->engine.max_batch, "sequences decoded together")
      ->capture_default_str();
  cmd->add_option("--max-queue", a->engine.max_queue,
                  "waiting requests before 429 (at least 1: every request waits there until a "
                  "batch admits it)")
      ->capture_default_str();
  cmd->add_option("--cache-mb", a->cache_mb, "KV cache memory for all sequences (MiB)")
      ->capture_default_str();
  cmd->add_option("--prefix-cache-mb", a->prefix_cache_mb,
                  "KV rows of finished requests kept for prompts that repeat their start "
                  "(MiB, beside --cache-mb; 0: no prefix caching)")
      ->capture_default_str();
  cmd->add_option("--http-threads", a->http.threads,
                  "connection threads started (a stream holds one)")
      ->capture_default_str();
  cmd->add_option("--max-connections", a->http.max_connections,
                  "connections served at once: a thread is added for each beyond --http-threads "
                  "(slow clients then cannot make others wait), up to this many")
      ->capture_default_str();
  cmd->add_option("--max-body-mb", a->max_body_mb, "largest request body (MiB); larger: 413")
      ->capture_default_str();
  cmd->add_option("--api-key", a->http.api_key,
                  "require \"Authorization: Bearer KEY\" on every route but /health "
                  "(default: $KEEL_API_KEY; unset: no key)")
      ->envname("KEEL_API_KEY");
  cmd->add_option("--drain-timeout", a->http.drain_timeout_s,
                  "seconds in-flight requests get after SIGTERM before being cancelled")
      ->capture_default_str();
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace keel::cli
