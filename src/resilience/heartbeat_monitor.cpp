#include "resilience/heartbeat_monitor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "resilience/hang_watchdog.h"

namespace keel::resilience {

namespace {

// State and parent of a process from /proc/<pid>/stat ('?' and 0 when gone).
struct ProcStat {
  char state = '?';
  long ppid = 0;
};
ProcStat read_proc_stat(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string s;
  if (!std::getline(in, s)) return {};
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses; the state
  // and the parent follow the last ')'.
  const auto p = s.rfind(')');
  if (p == std::string::npos || p + 2 >= s.size()) return {};
  return {s[p + 2], p + 4 < s.size() ? std::strtol(s.c_str() + p + 4, nullptr, 10) : 0};
}

}  // namespace

char process_state(pid_t pid) {
  return read_proc_stat(std::to_string(pid)).state;
}

bool process_alive(pid_t pid) {
  const char st = process_state(pid);
  return st != '?' && st != 'Z' && st != 'X';
}

HeartbeatMonitor::HeartbeatMonitor(HeartbeatOptions opt, bool all_interfaces) : opt_(opt) {
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) fail<IoError>("heartbeat: cannot open a UDP socket: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(all_interfaces ? INADDR_ANY : INADDR_LOOPBACK);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    fail<IoError>("heartbeat: cannot bind a UDP socket: {}", std::strerror(errno));
  socklen_t len = sizeof a;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  char h[64] = {};
  ::gethostname(h, sizeof h - 1);
  host_ = h;
  address_ =
      fmt::format("{}:{}", all_interfaces ? host_ : std::string("127.0.0.1"), ntohs(a.sin_port));
}

HeartbeatMonitor::~HeartbeatMonitor() {
  if (fd_ >= 0) ::close(fd_);
}

void HeartbeatMonitor::receive(double now) {
  for (;;) {
    Beat b;
    sockaddr_storage from{};
    socklen_t from_len = sizeof from;
    const ssize_t n =
        ::recvfrom(fd_, &b, sizeof b, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) return;  // EAGAIN: drained
    if (n != ssize_t(sizeof b) || b.magic != Beat::kMagic || b.version != Beat::kVersion ||
        b.rank < 0)
      continue;  // not ours
    b.host[sizeof b.host - 1] = 0;
    World& w = worlds_[b.world_id];
    Rank& r = w.ranks[b.rank];
    const bool first = r.last_beat == 0;
    if (first || b.progress != r.last.progress) {
      r.progress_since = now;
      const int64_t phase = b.progress >= 0 ? b.progress % 8 : -1;
      if (phase == kPhaseBegan) r.step_began = now;
      // Step durations of one rank are enough for the median: in a data
      // parallel world every rank runs the same steps.
      if (phase == kPhaseEnded && r.step_began >= 0 && b.rank == w.ranks.begin()->first) {
        w.step_s.push_back(now - r.step_began);
        if (w.step_s.size() > 50) w.step_s.pop_front();
        r.step_began = -1;
      }
    }
    if (b.flags & Beat::kExiting) w.exiting = true;
    // Leaving on purpose or on request sticks, whatever later beats say.
    b.flags |= r.last.flags & (Beat::kExiting | Beat::kTerminated);
    r.last = b;
    r.last_beat = now;
    r.from = from;
    r.from_len = from_len;
    r.local = host_ == b.host;
  }
}

double HeartbeatMonitor::median_step_s(uint64_t world_id) const {
  const auto it = worlds_.find(world_id);
  if (it == worlds_.end() || it->second.step_s.empty()) return 0;
  std::vector<double> v(it->second.step_s.begin(), it->second.step_s.end());
  std::nth_element(v.begin(), v.begin() + int64_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

std::optional<HeartbeatVerdict> HeartbeatMonitor::judge(uint64_t world_id, int world_size,
                                                        double now) {
  const auto it = worlds_.find(world_id);
  if (it == worlds_.end()) return std::nullopt;
  World& w = it->second;
  if (w.exiting || int(w.ranks.size()) < world_size) return std::nullopt;
  // Ranks gone without a word crashed; ranks that went on request (mpirun
  // ending the world) or on purpose did not, and then the world's own exit
  // says what happened.
  std::vector<int> gone;
  for (const auto& [rank, r] : w.ranks)
    if (r.local && !process_alive(r.last.pid)) gone.push_back(rank);
  if (!gone.empty()) {
    receive(now);  // a last word may be waiting on the socket
    if (w.exiting) return std::nullopt;
    std::vector<int> silent;
    for (int rank : gone)
      if (!(w.ranks[rank].last.flags & Beat::kTerminated)) silent.push_back(rank);
    if (silent.empty()) return std::nullopt;
    const Rank& r = w.ranks[silent.front()];
    const int64_t step = r.last.progress >= 0 ? r.last.progress / 8 : 0;
    return HeartbeatVerdict{
        "crash", silent.size() == 1 ? silent.front() : -1, step,
        fmt::format("heartbeat: rank(s) {} gone without a word (pid {}{})", fmt::join(silent, ","),
                    r.last.pid, silent.size() > 1 ? ", ..." : ""),
        true};
  }
  for (const auto& [rank, r] : w.ranks) {
    if (r.last.flags & Beat::kTerminated) continue;
    const int64_t step = r.last.progress >= 0 ? r.last.progress / 8 : 0;
    if (now - r.last_beat > opt_.dead_after_s) {
      const char st = r.local ? process_state(r.last.pid) : '?';
      // A local process that runs or sleeps but is silent is starved of CPU
      // (a loaded machine delays its beat thread by a second or more), not
      // dead: if it is really stuck, its progress stalls and the hang rule
      // below judges it at the hang timeout.
      if (r.local && (st == 'R' || st == 'S' || st == 'D')) continue;
      // A process that exists but cannot beat (stopped) is hung; one that is
      // unreachable is dead.
      if (r.local && st != '?' && st != 'Z' && st != 'X')
        return HeartbeatVerdict{"hang", rank, step,
                                fmt::format("heartbeat: rank {} (pid {}, state {}) sent no beat "
                                            "for {:.2f}s",
                                            rank, r.last.pid, st, now - r.last_beat),
                                false};
      return HeartbeatVerdict{
          "crash", rank, step,
          fmt::format("heartbeat: no beat from rank {} for {:.2f}s", rank, now - r.last_beat),
          false};
    }
  }
  if (int64_t(w.step_s.size()) < opt_.min_steps) return std::nullopt;
  const double timeout = std::max(opt_.hang_floor_s, opt_.hang_factor * median_step_s(world_id));
  std::vector<int64_t> progress;
  double stalled = 0;
  for (const auto& [rank, r] : w.ranks) {
    progress.push_back(r.last.progress);
    if (!(r.last.flags & Beat::kPaused)) stalled = std::max(stalled, now - r.progress_since);
  }
  // Every running rank must be stalled: one rank that moves is progress.
  for (const auto& [rank, r] : w.ranks)
    if (!(r.last.flags & Beat::kPaused) && now - r.progress_since < timeout) return std::nullopt;
  if (stalled < timeout) return std::nullopt;
  const int behind = rank_behind(progress);
  const int64_t step = *std::min_element(progress.begin(), progress.end()) / 8;
  std::string where;
  for (int64_t v : progress) where += fmt::format(" {}.{}", v / 8, v % 8);
  return HeartbeatVerdict{
      "hang", behind, step,
      fmt::format("heartbeat: no progress for {:.2f}s (timeout {:.2f}s = max({}s, {} x median "
                  "step {:.3f}s)); {}; progress step.phase per rank:{}",
                  stalled, timeout, opt_.hang_floor_s, opt_.hang_factor, median_step_s(world_id),
                  behind >= 0 ? fmt::format("rank {} is behind every other rank", behind)
                              : std::string("no rank is behind the others"),
                  where),
      false};
}

bool HeartbeatMonitor::spare_ready(uint64_t world_id, int world_size) const {
  const auto it = worlds_.find(world_id);
  if (it == worlds_.end() || int(it->second.ranks.size()) < world_size) return false;
  for (const auto& [rank, r] : it->second.ranks)
    if (!(r.last.flags & Beat::kSpareWaiting)) return false;
  return true;
}

std::optional<pid_t> HeartbeatMonitor::stopped_child(pid_t parent) {
  std::error_code ec;
  for (const auto& d : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = d.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    const ProcStat st = read_proc_stat(name);  // '?' when gone meanwhile
    if (st.ppid == long(parent) && (st.state == 'T' || st.state == 't'))
      return pid_t(std::stol(name));
  }
  return std::nullopt;
}

void HeartbeatMonitor::release(uint64_t world_id) {
  const auto it = worlds_.find(world_id);
  if (it == worlds_.end()) return;
  Release m;
  m.world_id = world_id;
  for (auto& [rank, r] : it->second.ranks)
    (void)::sendto(fd_, &m, sizeof m, 0, reinterpret_cast<sockaddr*>(&r.from), r.from_len);
}

std::vector<pid_t> HeartbeatMonitor::local_pids(uint64_t world_id) const {
  std::vector<pid_t> out;
  const auto it = worlds_.find(world_id);
  if (it == worlds_.end()) return out;
  for (const auto& [rank, r] : it->second.ranks)
    if (r.local) out.push_back(r.last.pid);
  return out;
}

int64_t HeartbeatMonitor::steps_done(uint64_t world_id) const {
  const auto it = worlds_.find(world_id);
  int64_t best = 0;
  if (it == worlds_.end()) return best;
  for (const auto& [rank, r] : it->second.ranks)
    if (r.last.progress >= 0)
      best = std::max(
          best, r.last.progress % 8 == kPhaseEnded ? r.last.progress / 8 : r.last.progress / 8 - 1);
  return best;
}

bool HeartbeatMonitor::exiting(uint64_t world_id) const {
  const auto it = worlds_.find(world_id);
  return it != worlds_.end() && it->second.exiting;
}

void HeartbeatMonitor::forget(uint64_t world_id) {
  worlds_.erase(world_id);
}

}  // namespace keel::resilience
