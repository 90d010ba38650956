// `keel report --serve`: the report page over HTTP on the loopback interface,
// re-read from the run directories on every request, so an open page follows
// a live run. Read-only: it answers GET for the page and its data, nothing else.
#pragma once
#include <string>
#include <vector>

namespace keel::cli::report {

// Serves the report of `dirs` (one run, or several overlaid) on
// 127.0.0.1:port (port 0: any free port) until the process is stopped.
// Prints the URL once listening. IoError when the port cannot be bound.
void serve_report(const std::vector<std::string>& dirs, int port);

}  // namespace keel::cli::report
