// events.jsonl: lines round-trip with their extra fields, a torn last line is
// ignored, a bad line is an error naming file and line, and two processes
// appending at once never interleave their lines.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "resilience/events_log.h"

using namespace keel;
using namespace keel::resilience;

namespace {
std::string fresh_path(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("keel_events_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string p = (dir / name).string();
  std::filesystem::remove(p);
  return p;
}
}  // namespace

TEST(EventsLog, RoundTripWithSchemaAndExtra) {
  const std::string path = fresh_path("a.jsonl");
  {
    EventsLog log(path);
    Event e;
    e.event = "fault";
    e.detector = "hang";
    e.rank = 1;
    e.step = 37;
    e.steps_lost = 7;
    e.time_lost_s = 2.5;
    e.world_size = 2;
    e.detail = "step 37 ran 9.0s";
    e.extra = {{"timeout_s", 3.0}};
    const Event w = log.append(e);
    EXPECT_GT(w.time, 1.6e9);
    Event s;
    s.event = "start";
    log.append(s);
  }
  const auto ev = read_events(path);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].event, "fault");
  EXPECT_EQ(ev[0].detector, "hang");
  EXPECT_EQ(ev[0].rank, 1);
  EXPECT_EQ(ev[0].step, 37);
  EXPECT_EQ(ev[0].steps_lost, 7);
  EXPECT_DOUBLE_EQ(ev[0].time_lost_s, 2.5);
  EXPECT_EQ(ev[0].world_size, 2);
  EXPECT_EQ(ev[0].extra.at("timeout_s"), 3.0);
  EXPECT_EQ(ev[1].rank, -1);
  EXPECT_EQ(ev[1].detector, "");
  // The schema's field order, as the shared format describes it.
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line.rfind("{\"time\":", 0), 0u);
  EXPECT_NE(line.find("\"event\":\"fault\",\"detector\":\"hang\",\"rank\":1,\"step\":37,"
                      "\"steps_lost\":7,\"time_lost_s\":2.5,\"world_size\":2,\"detail\":"),
            std::string::npos);
}

TEST(EventsLog, TornLastLineIgnoredBadLineNamed) {
  const std::string path = fresh_path("b.jsonl");
  std::ofstream(path) << "{\"time\":1,\"event\":\"start\"}\n{\"time\":2,\"ev";
  EXPECT_EQ(read_events(path).size(), 1u);
  std::ofstream(path) << "{\"time\":1,\"event\":\"start\"}\nnot json\n";
  try {
    read_events(path);
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2: not a JSON line"), std::string::npos);
  }
  std::ofstream(path) << "{\"time\":1,\"event\":\"start\",\"rank\":\"x\"}\n";
  EXPECT_THROW(read_events(path), IoError);
  EXPECT_TRUE(read_events(path + ".missing").empty());
}

TEST(EventsLog, ConcurrentWritersKeepLinesWhole) {
  const std::string path = fresh_path("c.jsonl");
  std::vector<pid_t> kids;
  for (int k = 0; k < 2; ++k) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      EventsLog log(path);
      for (int i = 0; i < 200; ++i) {
        Event e;
        e.event = "checkpoint";
        e.rank = k;
        e.step = i;
        e.detail = std::string(300, char('a' + k));
        log.append(e);
      }
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t p : kids) {
    int st = 0;
    ::waitpid(p, &st, 0);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  const auto ev = read_events(path);
  ASSERT_EQ(ev.size(), 400u);
  int64_t next[2] = {0, 0};
  for (const auto& e : ev) {
    ASSERT_TRUE(e.rank == 0 || e.rank == 1);
    EXPECT_EQ(e.step, next[e.rank]++);  // each writer's lines in its order
    EXPECT_EQ(e.detail, std::string(300, char('a' + e.rank)));
  }
}
