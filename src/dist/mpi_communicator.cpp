// MpiCommunicator: nonblocking MPI collectives polled against deadlines, and
// the fixed-order sum (all-to-all, add in rank order, all-gather).
#include "dist/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace keel::dist {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Polling without burning a core that a peer rank may need: spin briefly
// (most collectives between ready peers finish in microseconds), then sleep
// between tests, up to 200 us.
class Backoff {
 public:
  void pause() {
    if (++spins_ < 2000) return;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    sleep_us_ = std::min(sleep_us_ * 2, 200);
  }

 private:
  int spins_ = 0;
  int sleep_us_ = 10;
};

int checked_count(size_t n, const char* op, int rank) {
  if (n > size_t(INT_MAX))
    fail<DistError>("[{}] rank {}: {} elements exceed MPI's int count limit", op, rank, n);
  return int(n);
}

// out[i] = sum over r in rank order of in[r * chunk + i].
void sum_chunks_in_rank_order(const float* in, int world, size_t chunk, float* out) {
  std::memcpy(out, in, chunk * sizeof(float));
  for (int r = 1; r < world; ++r) {
    const float* c = in + size_t(r) * chunk;
    for (size_t i = 0; i < chunk; ++i) out[i] += c[i];
  }
}

struct ByteBuffers {
  std::vector<std::byte> in, out;
};

}  // namespace

// Nonblocking fixed-order sum: phase 0 all-to-all of chunks (then the local
// ordered sum), phase 1 all-gather of the sums (started in ticket order),
// phase 2 done.
class MpiPendingSum final : public PendingSum {
 public:
  MpiPendingSum(MpiCommunicator& c, std::vector<float> data) : c_(c), n_(data.size()) {
    const int N = c.size();
    b_ = std::make_shared<Buffers>();
    b_->pool = c.pool();
    b_->send = std::move(data);
    if (N == 1) {
      phase_ = 2;
      return;
    }
    chunk_ = (n_ + size_t(N) - 1) / size_t(N);
    b_->send.resize(chunk_ * size_t(N));
    // Zero padding adds nothing (a recycled buffer may hold old values there).
    std::fill(b_->send.begin() + std::ptrdiff_t(n_), b_->send.end(), 0.f);
    b_->recv = b_->pool->take(chunk_ * size_t(N));
    b_->mine = b_->pool->take(chunk_);
    const int cnt = checked_count(chunk_, "allreduce_sum", c.rank());
    ticket_ = c.take_sum_ticket();
    mpi_check(MPI_Ialltoall(b_->send.data(), cnt, MPI_FLOAT, b_->recv.data(), cnt, MPI_FLOAT,
                            c.scatter_comm(), &req_),
              "allreduce_sum (all-to-all)", c.rank());
    c.sum_live(this);
  }

  ~MpiPendingSum() override {
    // Dropped while in flight (an exception unwound past it): keep the
    // buffers alive until MPI is done with them.
    if (phase_ < 2) abandon();
  }

  bool test() override {
    c_.progress_sums();
    return phase_ == 2;
  }

  // One nonblocking step; progress_sums calls it for every sum in ticket order.
  void advance() {
    if (phase_ == 0) {
      if (!scattered_) {
        int flag = 0;
        mpi_check(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), "allreduce_sum (all-to-all)",
                  c_.rank());
        if (!flag) return;
        scattered_ = true;
        sum_chunks_in_rank_order(b_->recv.data(), c_.size(), chunk_, b_->mine.data());
      }
      if (!c_.gather_turn(ticket_)) return;
      // The all-to-all is complete, so its send buffer receives the result.
      mpi_check(MPI_Iallgather(b_->mine.data(), int(chunk_), MPI_FLOAT, b_->send.data(),
                               int(chunk_), MPI_FLOAT, c_.gather_comm(), &req_),
                "allreduce_sum (all-gather)", c_.rank());
      c_.gather_started();
      phase_ = 1;
    }
    if (phase_ == 1) {
      int flag = 0;
      mpi_check(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), "allreduce_sum (all-gather)", c_.rank());
      if (flag) phase_ = 2;
    }
  }
  bool done() const { return phase_ == 2; }

  void wait() override {
    const auto t0 = Clock::now();
    Backoff bo;
    while (!test()) {
      const double el = seconds_since(t0);
      if (el > c_.timeout_s()) {
        const char* op = phase_ == 0 ? "allreduce_sum (all-to-all)" : "allreduce_sum (all-gather)";
        abandon();
        fail<DistError>(
            "[{}] rank {} of {}: timed out after {:.3f} s (timeout {} s): a peer crashed, hangs "
            "or skipped the collective",
            op, c_.rank(), c_.size(), el, c_.timeout_s());
      }
      bo.pause();
    }
  }

  std::span<const float> result() const override {
    KEEL_ASSERT(phase_ == 2);
    return std::span<const float>(b_->send.data(), n_);
  }

 private:
  // Back to the pool once MPI is done with them (also for an abandoned sum).
  struct Buffers {
    std::vector<float> send, recv, mine;
    std::shared_ptr<FloatBufferPool> pool;
    ~Buffers() {
      if (!pool) return;
      pool->give(std::move(send));
      pool->give(std::move(recv));
      pool->give(std::move(mine));
    }
  };
  void abandon() {
    if (req_ != MPI_REQUEST_NULL) c_.wait_request(req_, nullptr, b_);  // hand over, no wait
    phase_ = 2;
    c_.sum_gone(this);
  }

  MpiCommunicator& c_;
  size_t n_, chunk_ = 0;
  std::shared_ptr<Buffers> b_;
  MPI_Request req_ = MPI_REQUEST_NULL;
  uint64_t ticket_ = 0;
  bool scattered_ = false;
  int phase_ = 0;
};

// A send and a receive on the exchange communicator, tested together.
class MpiPendingExchange final : public PendingExchange {
 public:
  MpiPendingExchange(MpiCommunicator& c, std::vector<std::byte> send, int to, size_t recv_bytes,
                     int from, std::vector<std::byte> recv_buffer)
      : c_(c), to_(to), from_(from) {
    const char* op = "exchange";
    if (to < 0 || to >= c.size() || from < 0 || from >= c.size())
      fail<DistError>("[{}] rank {}: peers {} and {} are not ranks of {}", op, c.rank(), to, from,
                      c.size());
    b_ = std::make_shared<ByteBuffers>();
    b_->in = std::move(send);
    b_->out = std::move(recv_buffer);
    b_->out.resize(recv_bytes);
    mpi_check(MPI_Irecv(b_->out.data(), checked_count(recv_bytes, op, c.rank()), MPI_BYTE, from, 0,
                        c.exchange_comm(), &req_[0]),
              op, c.rank());
    mpi_check(MPI_Isend(b_->in.data(), checked_count(b_->in.size(), op, c.rank()), MPI_BYTE, to, 0,
                        c.exchange_comm(), &req_[1]),
              op, c.rank());
  }
  ~MpiPendingExchange() override {
    // Dropped in flight: MPI keeps the buffers until it is done with them.
    for (MPI_Request& r : req_)
      if (r != MPI_REQUEST_NULL) c_.wait_request(r, nullptr, b_);
  }
  bool test() override {
    int flag = 0;
    mpi_check(MPI_Testall(2, req_, &flag, MPI_STATUSES_IGNORE), "exchange", c_.rank());
    return flag != 0;
  }
  void wait() override {
    const auto t0 = Clock::now();
    Backoff bo;
    while (!test()) {
      const double el = seconds_since(t0);
      if (el > c_.timeout_s())
        fail<DistError>(
            "[exchange] rank {} of {}: sending to rank {} and receiving from rank {} timed out "
            "after {:.3f} s (timeout {} s): a peer crashed, hangs or skipped the exchange",
            c_.rank(), c_.size(), to_, from_, el, c_.timeout_s());
      bo.pause();
    }
  }
  std::span<const std::byte> received() const override { return b_->out; }
  std::pair<std::vector<std::byte>, std::vector<std::byte>> release_buffers() override {
    wait();
    return {std::move(b_->in), std::move(b_->out)};
  }

 private:
  MpiCommunicator& c_;
  int to_, from_;
  std::shared_ptr<ByteBuffers> b_;
  MPI_Request req_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
};

std::unique_ptr<PendingExchange> MpiCommunicator::start_exchange(
    std::vector<std::byte> send, int to, size_t recv_bytes, int from,
    std::vector<std::byte> recv_buffer) {
  reap_abandoned();
  return std::make_unique<MpiPendingExchange>(*this, std::move(send), to, recv_bytes, from,
                                              std::move(recv_buffer));
}

void MpiCommunicator::progress_sums() {
  // Completed sums leave the list; the vector is not touched while iterating.
  for (MpiPendingSum* s : live_) s->advance();
  std::erase_if(live_, [](MpiPendingSum* s) { return s->done(); });
}

void MpiCommunicator::sum_gone(MpiPendingSum* s) {
  std::erase(live_, s);
}

void mpi_check(int rc, const char* op, int rank) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  fail<DistError>("[{}] rank {}: MPI error {}: {}", op, rank, rc, std::string(text, size_t(len)));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  mpi_check(MPI_Comm_dup(comm, &comm_), "comm_dup", -1);
  mpi_check(MPI_Comm_dup(comm, &scatter_comm_), "comm_dup", -1);
  mpi_check(MPI_Comm_dup(comm, &gather_comm_), "comm_dup", -1);
  mpi_check(MPI_Comm_dup(comm, &exchange_comm_), "comm_dup", -1);
  for (MPI_Comm c : {scatter_comm_, gather_comm_, exchange_comm_})
    mpi_check(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN), "comm_set_errhandler", -1);
  mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "comm_set_errhandler", -1);
  mpi_check(MPI_Comm_rank(comm_, &rank_), "comm_rank", -1);
  mpi_check(MPI_Comm_size(comm_, &size_), "comm_size", rank_);
}

MpiCommunicator::~MpiCommunicator() {
  reap_abandoned();
  if (!abandoned_.empty()) {
    // Still in flight: MPI may write into these buffers until the process
    // ends, so they are never freed.
    new std::vector<Abandoned>(std::move(abandoned_));
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    for (MPI_Comm* c : {&comm_, &scatter_comm_, &gather_comm_, &exchange_comm_})
      if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

void MpiCommunicator::wait_request(MPI_Request& req, const char* op, std::shared_ptr<void> keep) {
  if (op == nullptr) {  // abandon at once
    abandoned_.push_back({req, std::move(keep)});
    req = MPI_REQUEST_NULL;
    return;
  }
  const auto t0 = Clock::now();
  Backoff bo;
  for (;;) {
    int flag = 0;
    mpi_check(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), op, rank_);
    if (flag) return;
    const double el = seconds_since(t0);
    if (el > timeout_s()) {
      abandoned_.push_back({req, std::move(keep)});
      req = MPI_REQUEST_NULL;
      fail<DistError>(
          "[{}] rank {} of {}: timed out after {:.3f} s (timeout {} s): a peer crashed, hangs or "
          "skipped the collective",
          op, rank_, size_, el, timeout_s());
    }
    bo.pause();
  }
}

void MpiCommunicator::reap_abandoned() {
  for (size_t i = 0; i < abandoned_.size();) {
    int flag = 0;
    if (MPI_Test(&abandoned_[i].req, &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
      abandoned_.erase(abandoned_.begin() + std::ptrdiff_t(i));
    } else {
      ++i;
    }
  }
}

size_t MpiCommunicator::abandoned() {
  reap_abandoned();
  return abandoned_.size();
}

std::unique_ptr<PendingSum> MpiCommunicator::start_allreduce_sum(std::vector<float> data) {
  reap_abandoned();
  return std::make_unique<MpiPendingSum>(*this, std::move(data));
}

void MpiCommunicator::reduce_scatter_sum(std::span<const float> in, std::span<float> out) {
  const char* op = "reduce_scatter_sum";
  const size_t chunk = out.size();
  if (in.size() != chunk * size_t(size_))
    fail<DistError>("[{}] rank {}: input has {} elements, need size {} x output {}", op, rank_,
                    in.size(), size_, chunk);
  reap_abandoned();
  auto b = std::make_shared<std::vector<float>>(in.size() * 2);
  std::copy(in.begin(), in.end(), b->begin());
  const int cnt = checked_count(chunk, op, rank_);
  MPI_Request req;
  mpi_check(
      MPI_Ialltoall(b->data(), cnt, MPI_FLOAT, b->data() + in.size(), cnt, MPI_FLOAT, comm_, &req),
      op, rank_);
  wait_request(req, op, b);
  sum_chunks_in_rank_order(b->data() + in.size(), size_, chunk, out.data());
}

void MpiCommunicator::allgather(std::span<const std::byte> in, std::span<std::byte> out) {
  const char* op = "allgather";
  if (out.size() != in.size() * size_t(size_))
    fail<DistError>("[{}] rank {}: output has {} bytes, need size {} x input {}", op, rank_,
                    out.size(), size_, in.size());
  reap_abandoned();
  auto b = std::make_shared<ByteBuffers>();
  b->in.assign(in.begin(), in.end());
  b->out.resize(out.size());
  const int cnt = checked_count(in.size(), op, rank_);
  MPI_Request req;
  mpi_check(MPI_Iallgather(b->in.data(), cnt, MPI_BYTE, b->out.data(), cnt, MPI_BYTE, comm_, &req),
            op, rank_);
  wait_request(req, op, b);
  std::memcpy(out.data(), b->out.data(), out.size());
}

void MpiCommunicator::allgatherv(std::span<const std::byte> in, std::span<std::byte> out,
                                 std::span<const size_t> counts) {
  const char* op = "allgatherv";
  if (counts.size() != size_t(size_) || counts[size_t(rank_)] != in.size())
    fail<DistError>("[{}] rank {}: {} counts for {} ranks, or this rank's count is not {}", op,
                    rank_, counts.size(), size_, in.size());
  std::vector<int> cnt(counts.size()), displ(counts.size());
  size_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    displ[r] = checked_count(total, op, rank_);
    cnt[r] = checked_count(counts[r], op, rank_);
    total += counts[r];
  }
  checked_count(total, op, rank_);
  if (out.size() != total)
    fail<DistError>("[{}] rank {}: output has {} bytes, counts sum to {}", op, rank_, out.size(),
                    total);
  reap_abandoned();
  auto b = std::make_shared<ByteBuffers>();
  b->in.assign(in.begin(), in.end());
  b->out.resize(total);
  MPI_Request req;
  mpi_check(MPI_Iallgatherv(b->in.data(), int(in.size()), MPI_BYTE, b->out.data(), cnt.data(),
                            displ.data(), MPI_BYTE, comm_, &req),
            op, rank_);
  wait_request(req, op, b);
  std::memcpy(out.data(), b->out.data(), total);
}

void MpiCommunicator::broadcast(std::span<std::byte> data, int root) {
  const char* op = "broadcast";
  if (root < 0 || root >= size_)
    fail<DistError>("[{}] rank {}: root {} is not a rank of {}", op, rank_, root, size_);
  reap_abandoned();
  auto b = std::make_shared<ByteBuffers>();
  b->in.assign(data.begin(), data.end());
  MPI_Request req;
  mpi_check(
      MPI_Ibcast(b->in.data(), checked_count(data.size(), op, rank_), MPI_BYTE, root, comm_, &req),
      op, rank_);
  wait_request(req, op, b);
  std::memcpy(data.data(), b->in.data(), data.size());
}

void MpiCommunicator::barrier() {
  reap_abandoned();
  MPI_Request req;
  mpi_check(MPI_Ibarrier(comm_, &req), "barrier", rank_);
  wait_request(req, "barrier", nullptr);
}

}  // namespace keel::dist
