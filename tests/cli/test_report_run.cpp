// `keel report` reading damaged run directories (truncated metrics line,
// empty or missing events, missing files) and the page it renders: notices
// name what was skipped, long runs are downsampled to recorded points, and
// the page stays self-contained and small.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <fmt/format.h>

#include "cli/commands/report_html.h"
#include "cli/commands/report_run.h"
#include "core/error.h"

namespace fs = std::filesystem;
using namespace keel::cli::report;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / fmt::format("keel_report_{}_{}", name, ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}

std::string metrics_lines(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i)
    s += fmt::format(
        R"({{"step":{},"loss":{},"lr":0.001,"grad_norm":1.5,"tokens_per_s":1000,"mfu":0.1,"peak_rss_mb":50,"step_seconds":0.25}})"
        "\n",
        i, 5.0 - 0.01 * i);
  return s;
}

bool has_notice(const RunData& r, const std::string& needle) {
  for (const auto& n : r.notices)
    if (n.find(needle) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST(ReportRun, TruncatedLastMetricsLineIsSkippedWithNotice) {
  const auto d = fresh_dir("trunc");
  write(d / "metrics.jsonl", metrics_lines(20) + R"({"step":21,"loss":4.7,"lr":0.0)");
  write(d / "events.jsonl", "");
  write(d / "config.toml", "[train]\nbatch_size = 4\nseq_len = 8\n");
  const RunData r = read_run(d.string());
  EXPECT_EQ(r.step.size(), 20u);
  EXPECT_EQ(r.columns.at("loss").size(), 20u);
  EXPECT_TRUE(has_notice(r, "metrics.jsonl:21: truncated last line, skipped"));
  EXPECT_TRUE(has_notice(r, "events.jsonl: empty"));
  EXPECT_TRUE(has_notice(r, "summary.json: missing"));
  EXPECT_DOUBLE_EQ(r.tokens_per_step, 32.0);
  EXPECT_EQ(r.config_value("train.batch_size"), "4");
  const std::string html = render_html({r}, false);
  EXPECT_NE(html.find("metrics.jsonl:21: truncated last line, skipped"), std::string::npos);
}

TEST(ReportRun, MissingFilesAndBadLinesStillRead) {
  const auto d = fresh_dir("missing");
  // A line in the middle that is not JSON, one without a step, null (NaN) loss.
  write(d / "metrics.jsonl", R"({"step":1,"loss":3.0}
garbage
{"loss":2.0}
{"step":2,"loss":null,"step_seconds":0.5}
)");
  write(d / "events.jsonl", R"({"time":10,"event":"start","step":0}
{"time":12,"event":"fault","detector":"nan","rank":"x"}
{"time":13,"event":"fault","detector":"crash","rank":1,"step":2,"steps_lost":1,"time_lost_s":2.5}
)");
  const RunData r = read_run(d.string());
  ASSERT_EQ(r.step.size(), 2u);
  EXPECT_TRUE(std::isnan(r.columns.at("loss")[1]));
  EXPECT_TRUE(has_notice(r, "metrics.jsonl:2: not a JSON object, skipped"));
  EXPECT_TRUE(has_notice(r, "metrics.jsonl:3: no integer \"step\", skipped"));
  EXPECT_TRUE(has_notice(r, "events.jsonl:2: line 2: field 'rank'"));
  EXPECT_TRUE(has_notice(r, "config.toml: missing"));
  EXPECT_TRUE(has_notice(r, "environment.json: missing"));
  ASSERT_EQ(r.events.size(), 2u);
  const auto g = r.goodput();
  EXPECT_DOUBLE_EQ(g.lost_by_kind.at("crash"), 2.5);
  EXPECT_EQ(g.steps_recomputed, 1);
  EXPECT_FALSE(render_html({r}, false).empty());
}

TEST(ReportRun, MissingEventsFileAndMissingDirectory) {
  const auto d = fresh_dir("noevents");
  write(d / "metrics.jsonl", metrics_lines(3));
  const RunData r = read_run(d.string());
  EXPECT_TRUE(has_notice(r, "events.jsonl: missing, skipped"));
  EXPECT_TRUE(r.events.empty());
  try {
    read_run((d / "nope").string());
    FAIL() << "no error";
  } catch (const keel::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("nope: run directory not found"), std::string::npos);
  }
}

TEST(ReportRun, DownsampleKeepsRecordedExtremesAndEnds) {
  std::vector<double> x, y;
  std::mt19937 rng(3);
  std::normal_distribution<double> nd;
  for (int i = 0; i < 100000; ++i) {
    x.push_back(i + 1);
    y.push_back(nd(rng));
  }
  y[54321] = 100;  // a spike must survive
  y[777] = -100;
  const auto ox = x, oy = y;
  downsample_min_max(x, y, kMaxPoints);
  ASSERT_LE(x.size(), kMaxPoints);
  ASSERT_GE(x.size(), kMaxPoints / 2);
  EXPECT_EQ(x.front(), 1);
  EXPECT_EQ(x.back(), 100000);
  for (size_t i = 0; i < x.size(); ++i) {
    if (i) {
      ASSERT_LT(x[i - 1], x[i]);
    }
    ASSERT_EQ(y[i], oy[size_t(x[i]) - 1]) << "point " << i << " is not a recorded value";
  }
  EXPECT_NE(std::find(y.begin(), y.end(), 100.0), y.end());
  EXPECT_NE(std::find(y.begin(), y.end(), -100.0), y.end());
}

TEST(ReportRun, HundredThousandStepsPageIsSmallAndSelfContained) {
  const auto d = fresh_dir("big");
  std::string m;
  for (int i = 1; i <= 100000; ++i)
    m += fmt::format(
        R"({{"step":{},"loss":{:.6f},{}"lr":0.001,"grad_norm":{:.4f},"tokens_per_s":{},"mfu":0.31,"peak_rss_mb":812.5,"step_seconds":0.21}})"
        "\n",
        i, 10.0 / std::sqrt(double(i)),
        i % 1000 == 0 ? fmt::format(R"("val_loss":{:.6f},)", 10.5 / std::sqrt(double(i))) : "",
        1.0 + std::sin(i * 0.01), 50000 + i % 97);
  write(d / "metrics.jsonl", m);
  const RunData r = read_run(d.string());
  ASSERT_EQ(r.step.size(), 100000u);
  const std::string html = render_html({r}, false);
  EXPECT_LT(html.size(), 2u * 1024 * 1024);
  // No external resource: nothing is loaded by URL.
  for (const char* bad : {"<script src", "<link", "<img", "url(", "@import", "https://"})
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
}

TEST(ReportRun, RollbackKeepsTheLastRecordOfEachStep) {
  const auto d = fresh_dir("rollback");
  write(d / "metrics.jsonl", R"({"step":1,"loss":5}
{"step":2,"loss":4}
{"step":3,"loss":99}
{"step":2,"loss":4.5}
{"step":3,"loss":3}
)");
  const RunData r = read_run(d.string());
  const auto data = page_data({r}, false);
  const auto& loss = data["runs"][0]["series"]["loss"];
  EXPECT_EQ(loss[0], nlohmann::json::parse("[1,2,3]"));
  EXPECT_EQ(loss[1], nlohmann::json::parse("[5,4.5,3]"));
  EXPECT_EQ(data["runs"][0]["final_step"], 3);
}
