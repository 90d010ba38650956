#include "cli/commands/report_serve.h"

#include <cstdio>

#include <fmt/format.h>
#include <httplib.h>

#include "cli/commands/report_html.h"
#include "cli/commands/report_run.h"
#include "core/error.h"

namespace keel::cli::report {

namespace {

constexpr const char* kLoopback = "127.0.0.1";

std::vector<RunData> read_runs(const std::vector<std::string>& dirs) {
  std::vector<RunData> runs;
  for (const auto& d : dirs) runs.push_back(read_run(d));
  return runs;
}

// Every answer is built from the files as they are now; a read error becomes
// a 500 naming the file rather than stopping the server.
template <class Body>
void answer(httplib::Response& res, const char* type, Body&& body) {
  res.set_header("Cache-Control", "no-store");
  try {
    res.set_content(body(), type);
  } catch (const Error& e) {
    res.status = 500;
    res.set_content(fmt::format("keel report: {}\n", e.what()), "text/plain; charset=utf-8");
  }
}

}  // namespace

void serve_report(const std::vector<std::string>& dirs, int port) {
  read_runs(dirs);  // a missing run directory is an error before listening
  httplib::Server server;
  const auto page = [&](const httplib::Request&, httplib::Response& res) {
    answer(res, "text/html; charset=utf-8", [&] { return render_html(read_runs(dirs), true); });
  };
  server.Get("/", page);
  server.Get("/report.html", page);
  server.Get("/data.json", [&](const httplib::Request&, httplib::Response& res) {
    answer(res, "application/json", [&] {
      return page_data(read_runs(dirs), true)
          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    });
  });
  // Anything but GET changes nothing here.
  const auto refuse = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_content("keel report: read-only\n", "text/plain");
  };
  server.Post(".*", refuse);
  server.Put(".*", refuse);
  server.Delete(".*", refuse);
  server.Patch(".*", refuse);

  int bound = port;
  if (port == 0) {
    bound = server.bind_to_any_port(kLoopback);
    if (bound < 0) fail<IoError>("{}: cannot bind any port", kLoopback);
  } else if (!server.bind_to_port(kLoopback, port)) {
    fail<IoError>("{}:{}: cannot bind (port in use?)", kLoopback, port);
  }
  fmt::print("serving http://{}:{}/ (read-only; refreshes from {}; Ctrl-C stops)\n", kLoopback,
             bound, fmt::join(dirs, ", "));
  std::fflush(stdout);
  if (!server.listen_after_bind()) fail<IoError>("{}:{}: listening failed", kLoopback, bound);
}

}  // namespace keel::cli::report
