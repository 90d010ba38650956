#include "cli/commands/report_serve.h"

#include <cstdio>
#include <exception>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "cli/commands/report_html.h"
#include "cli/commands/report_run.h"
#include "core/error.h"

namespace keel::cli::report {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr const char* kLoopback = "127.0.0.1";

std::vector<RunData> read_runs(const std::vector<std::string>& dirs) {
  std::vector<RunData> runs;
  for (const auto& d : dirs) runs.push_back(read_run(d));
  return runs;
}

// Every answer is built from the files as they are now; a read error becomes
// a 500 naming the file rather than stopping the server.
http::response<http::string_body> answer(const std::vector<std::string>& dirs,
                                         const http::request<http::string_body>& req) {
  http::response<http::string_body> res;
  res.version(11);
  res.set(http::field::cache_control, "no-store");
  const auto reply = [&](http::status status, const char* type, std::string body) {
    res.result(status);
    res.set(http::field::content_type, type);
    res.body() = std::move(body);
  };
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  try {
    // Anything but GET changes nothing here.
    if (req.method() != http::verb::get)
      reply(http::status::method_not_allowed, "text/plain", "keel report: read-only\n");
    else if (path == "/" || path == "/report.html")
      reply(http::status::ok, "text/html; charset=utf-8", render_html(read_runs(dirs), true));
    else if (path == "/data.json")
      reply(http::status::ok, "application/json",
            page_data(read_runs(dirs), true)
                .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    else
      reply(http::status::not_found, "text/plain", "keel report: not found\n");
  } catch (const Error& e) {
    reply(http::status::internal_server_error, "text/plain; charset=utf-8",
          fmt::format("keel report: {}\n", e.what()));
  }
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

// One browser connection, kept alive while the browser wants; a thread each,
// so a page's idle connection never holds up another.
void serve_connection(tcp::socket sock, std::vector<std::string> dirs) {
  beast::error_code ec;
  beast::flat_buffer buf;
  for (;;) {
    http::request<http::string_body> req;
    http::read(sock, buf, req, ec);
    if (ec) break;
    auto res = answer(dirs, req);
    http::write(sock, res, ec);
    if (ec || !res.keep_alive()) break;
  }
  sock.shutdown(tcp::socket::shutdown_both, ec);
}

}  // namespace

void serve_report(const std::vector<std::string>& dirs, int port) {
  read_runs(dirs);  // a missing run directory is an error before listening
  asio::io_context io;
  tcp::acceptor acceptor(io);
  const tcp::endpoint where(asio::ip::make_address(kLoopback), asio::ip::port_type(port));
  beast::error_code ec;
  acceptor.open(where.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(where, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail<IoError>("{}:{}: cannot bind ({})", kLoopback, port, ec.message());
  const int bound = acceptor.local_endpoint().port();
  fmt::print("serving http://{}:{}/ (read-only; refreshes from {}; Ctrl-C stops)\n", kLoopback,
             bound, fmt::join(dirs, ", "));
  std::fflush(stdout);
  for (;;) {
    tcp::socket sock(io);
    acceptor.accept(sock, ec);
    if (ec == asio::error::connection_aborted || ec == asio::error::interrupted) continue;
    if (ec) fail<IoError>("{}:{}: accept failed ({})", kLoopback, bound, ec.message());
    std::thread(serve_connection, std::move(sock), dirs).detach();
  }
}

}  // namespace keel::cli::report
