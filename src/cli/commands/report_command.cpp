// `keel report`: a run directory as one self-contained HTML page (curves,
// fault timeline, goodput, environment), several runs overlaid (--compare),
// the page served live from loopback (--serve), and `keel report goodput`,
// the goodput summary as text.
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "cli/commands/commands.h"
#include "cli/commands/report_html.h"
#include "cli/commands/report_run.h"
#include "cli/commands/report_serve.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "resilience/goodput.h"

namespace keel::cli {

namespace {

struct ReportArgs {
  std::string run;
  std::vector<std::string> compare;
  std::string out;
  bool serve = false;
  int port = 8088;
};

struct GoodputArgs {
  std::string run;
  bool json = false;
};

void run_report(const ReportArgs& a) {
  if (a.run.empty() && a.compare.empty())
    fail<Error>("report: give --run DIR or --compare DIR1 DIR2 ...");
  if (!a.run.empty() && !a.compare.empty())
    fail<Error>("report: --run and --compare exclude each other");
  std::vector<std::string> dirs = a.compare.empty() ? std::vector<std::string>{a.run} : a.compare;
  if (a.serve) {
    report::serve_report(dirs, a.port);
    return;
  }
  std::vector<report::RunData> runs;
  for (const auto& d : dirs) runs.push_back(report::read_run(d));
  const std::string out = !a.out.empty() ? a.out
                          : a.compare.empty()
                              ? (std::filesystem::path(a.run) / "report.html").string()
                              : std::string("report_compare.html");
  const std::string html = report::render_html(runs, false);
  io::write_file_atomic(out, html);
  for (const auto& r : runs)
    for (const auto& n : r.notices) fmt::print(stderr, "note: {}: {}\n", r.dir, n);
  fmt::print("wrote {} ({} bytes, {} run{})\n", out, html.size(), runs.size(),
             runs.size() == 1 ? "" : "s");
}

void run_goodput(const GoodputArgs& a) {
  const report::RunData run = report::read_run(a.run);
  const resilience::Goodput g = run.goodput();
  if (a.json) {
    fmt::print("{}\n", g.to_json().dump());
    return;
  }
  for (const auto& n : run.notices) fmt::print("note: {}\n", n);
  fmt::print("run {}\n{}", run.dir, resilience::format_goodput(g));
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "report", "Render a run directory as one self-contained HTML page (or compare, or serve it)");
  auto args = std::make_shared<ReportArgs>();
  cmd->add_option("--run", args->run, "run directory");
  cmd->add_option("--compare", args->compare, "run directories to overlay on the same axes")
      ->expected(2, 64);
  cmd->add_option("--out", args->out,
                  "HTML file to write (default: <run>/report.html, or report_compare.html)");
  cmd->add_flag("--serve", args->serve,
                "serve the page on 127.0.0.1, refreshed from the files while the run is live");
  cmd->add_option("--port", args->port, "port for --serve (0: any free port)")
      ->check(CLI::Range(0, 65535));

  auto* gp = cmd->add_subcommand("goodput", "Wall time, productive time, time lost per fault kind");
  auto gargs = std::make_shared<GoodputArgs>();
  gp->add_option("--run", gargs->run, "run directory")->required();
  gp->add_flag("--json", gargs->json, "one JSON object instead of text");
  gp->callback([gargs] { run_goodput(*gargs); });

  cmd->callback([gp, args] {
    if (gp->parsed()) return;  // `keel report goodput` ran instead
    run_report(*args);
  });
}

}  // namespace keel::cli
