#include "resilience/heartbeat.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/log.h"
#include "resilience/async_checkpointer.h"
#include "resilience/exit_codes.h"

namespace keel::resilience {

namespace {

// host:port -> sockaddr; IoError naming the variable when it does not parse.
void resolve(const std::string& target, sockaddr_storage& out, socklen_t& len) {
  const auto colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == target.size())
    fail<IoError>("{}='{}': expected host:port", kHeartbeatEnv, target);
  const std::string host = target.substr(0, colon), port = target.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res)
    fail<IoError>("{}='{}': cannot resolve: {}", kHeartbeatEnv, target, ::gai_strerror(rc));
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  len = socklen_t(res->ai_addrlen);
  ::freeaddrinfo(res);
}

}  // namespace

HeartbeatSender::HeartbeatSender(const std::string& target, uint64_t world_id, int rank, bool spare,
                                 pid_t supervisor_pid)
    : world_id_(world_id), rank_(rank), supervisor_pid_(supervisor_pid) {
  resolve(target, target_, target_len_);
  fd_ = ::socket(target_.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) fail<IoError>("heartbeat: cannot open a UDP socket: {}", std::strerror(errno));
  // Bound now, so the first beat already names the port a release comes to.
  sockaddr_storage any{};
  any.ss_family = target_.ss_family;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&any),
             any.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in)) != 0)
    fail<IoError>("heartbeat: cannot bind a UDP socket: {}", std::strerror(errno));
  sockaddr_storage own{};
  socklen_t own_len = sizeof own;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&own), &own_len) == 0)
    reply_port_ = ntohs(own.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&own)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&own)->sin_port);
  char h[64] = {};
  ::gethostname(h, sizeof h - 1);
  std::memcpy(host_buf_, h, sizeof host_buf_);
  if (spare) flags_ = Beat::kPaused | Beat::kSpareWaiting;
  released_ = !spare;
  send_now();
  thread_ = std::thread([this] { run(); });
}

HeartbeatSender::~HeartbeatSender() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

void HeartbeatSender::send_now(uint32_t extra_flags) noexcept {
  // Async-signal-safe (heartbeat_terminating): no allocation, no locks.
  Beat b;
  b.world_id = world_id_;
  b.rank = rank_;
  b.pid = int32_t(::getpid());
  b.progress = progress_.load();
  b.flags = flags_.load() | extra_flags;
  b.reply_port = reply_port_;
  std::memcpy(b.host, host_buf_, sizeof b.host);
  // Best effort: a lost datagram is what the supervisor's timeout allows for.
  (void)::sendto(fd_, &b, sizeof b, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&target_),
                 target_len_);
}

void HeartbeatSender::progress(int64_t step, int phase) {
  progress_ = step * 8 + phase;
  send_now();
}

void HeartbeatSender::pause() {
  flags_ |= Beat::kPaused;
  send_now();
}

void HeartbeatSender::resume() {
  flags_ &= ~uint32_t(Beat::kPaused);
  send_now();
}

void HeartbeatSender::exiting() {
  flags_ |= Beat::kExiting;
  send_now();
}

void HeartbeatSender::wait_until_released() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [this] { return released_ || stop_; });
}

void HeartbeatSender::run() {
  using clock = std::chrono::steady_clock;
  auto next = clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
    }
    const auto now = clock::now();
    if (now >= next) {
      send_now();
      next = now + std::chrono::duration_cast<clock::duration>(
                       std::chrono::duration<double>(kBeatInterval_s));
      // A spare that nobody can release any more ends itself.
      bool waiting;
      {
        std::lock_guard<std::mutex> lk(mu_);
        waiting = !released_;
      }
      if (waiting && supervisor_pid_ > 0 && ::kill(supervisor_pid_, 0) != 0 && errno == ESRCH) {
        log().error("warm spare rank {}: the supervisor (pid {}) is gone; exiting", rank_,
                    supervisor_pid_);
        ::_exit(kExitError);
      }
    }
    pollfd p{fd_, POLLIN, 0};
    const int wait_ms = int(std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(next - clock::now()).count()));
    if (::poll(&p, 1, wait_ms) <= 0) continue;
    Release r;
    const ssize_t n = ::recv(fd_, &r, sizeof r, MSG_DONTWAIT);
    if (n == ssize_t(sizeof r) && r.magic == Release::kMagic && r.world_id == world_id_) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        released_ = true;
      }
      flags_ = (flags_.load() & ~uint32_t(Beat::kSpareWaiting)) | Beat::kReleased;
      cv_.notify_all();
      send_now();
    }
  }
}

namespace {
std::atomic<HeartbeatSender*> g_active{nullptr};
}

void heartbeat_terminating() noexcept {
  if (HeartbeatSender* s = g_active.load()) {
    s->flags_ |= Beat::kTerminated;  // lock-free: safe in a signal handler
    s->send_now();
  }
}

HeartbeatSender* rank_heartbeat(int rank) {
  static std::unique_ptr<HeartbeatSender> sender;
  static std::once_flag once;
  if (rank < 0) return sender.get();
  std::call_once(once, [rank] {
    const char* target = std::getenv(kHeartbeatEnv);
    if (!target || !*target) return;
    const char* id = std::getenv(kWorldIdEnv);
    const char* spare = std::getenv(kSpareEnv);
    const char* sup = std::getenv(kSupervisorPidEnv);
    sender = std::make_unique<HeartbeatSender>(target, id ? std::strtoull(id, nullptr, 10) : 0,
                                               rank, spare && std::string(spare) == "1",
                                               sup ? pid_t(std::strtol(sup, nullptr, 10)) : 0);
    // exit() (a finished run, an error the rank reported) is no crash; a
    // signal, _exit or MPI_Abort skips this, and the supervisor judges those.
    std::atexit([] {
      if (sender) sender->exiting();
      g_active = nullptr;
    });
    g_active = sender.get();
    // mpirun ends the other ranks of a failed world with SIGTERM: the handler
    // says so before the rank dies (after a checkpoint write in flight).
    install_sigterm_drain_handler();
  });
  return sender.get();
}

}  // namespace keel::resilience
