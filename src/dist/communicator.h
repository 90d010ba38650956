// Communicator: the collectives data parallelism needs, each bounded by a
// deadline, with sums reduced in a fixed order so that every rank gets the
// same bits on every run. MpiCommunicator (mpi_communicator.h) implements it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace keel::dist {

// A sum in flight (started by Communicator::start_allreduce_sum). It owns its
// buffers, so a collective that timed out can be abandoned without the
// transport writing into freed memory.
class PendingSum {
 public:
  virtual ~PendingSum() = default;
  // Advances the collective without blocking; true once the sum is complete.
  virtual bool test() = 0;
  // Blocks until complete; keel::DistError (naming the collective, the rank
  // and the seconds waited) when the communicator's timeout passes first.
  // The timeout counts from this call, not from the start: a sum started
  // early in backward may legitimately wait for its peers' backward.
  virtual void wait() = 0;
  // The element-wise sum over ranks (valid after wait() or test() == true);
  // as many elements as were given to start_allreduce_sum.
  virtual std::span<const float> result() const = 0;
};

// A point-to-point exchange in flight (started by Communicator::start_exchange):
// this rank's bytes on their way to one peer and another peer's on their way
// here. It owns its buffers, like PendingSum.
class PendingExchange {
 public:
  virtual ~PendingExchange() = default;
  // Advances without blocking; true once both the send and the receive are done.
  virtual bool test() = 0;
  // Blocks until done; keel::DistError naming the peers and the seconds
  // waited when the communicator's timeout passes first.
  virtual void wait() = 0;
  // The bytes received (valid after wait() or test() == true).
  virtual std::span<const std::byte> received() const = 0;
  // After wait() or test() == true: hands back the send and the receive
  // buffers, so a caller that exchanges every step reuses them instead of
  // allocating and zero-filling megabytes each time. received() is empty after.
  virtual std::pair<std::vector<std::byte>, std::vector<std::byte>> release_buffers() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Every call below fails with keel::DistError naming the collective, this
  // rank and the seconds waited when it has not completed within timeout_s
  // (e.g. a peer crashed, hangs, or skipped the call). A world where that
  // happened cannot be used further: the caller should abort it.
  double timeout_s() const { return timeout_s_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }

  // In place: data := sum over ranks of data. Every rank gets the same bits,
  // run after run, for any world size: rank r sums chunk r of every rank's
  // vector in rank order 0, 1, ..., N-1 (a reduce-scatter by all-to-all),
  // then the summed chunks are all-gathered. Every rank passes the same size.
  void allreduce_sum(std::span<float> data);
  // Starts the same sum without waiting (for overlap with computation).
  virtual std::unique_ptr<PendingSum> start_allreduce_sum(std::vector<float> data) = 0;
  // A vector of n floats to fill and pass to start_allreduce_sum; contents
  // unspecified. Communicators that recycle the buffers of finished sums
  // return one of those, so steady-state steps allocate nothing.
  virtual std::vector<float> sum_buffer(size_t n) { return std::vector<float>(n); }
  // in holds size() * out.size() elements; out := sum over ranks r' of
  // chunk rank() of r''s in, summed in rank order (the first half of allreduce_sum).
  virtual void reduce_scatter_sum(std::span<const float> in, std::span<float> out) = 0;
  // out := the concatenation over ranks of each rank's in (all of one size).
  virtual void allgather(std::span<const std::byte> in, std::span<std::byte> out) = 0;
  // The same with a byte count per rank (counts[r] == in.size() on rank r;
  // out.size() == sum of counts).
  virtual void allgatherv(std::span<const std::byte> in, std::span<std::byte> out,
                          std::span<const size_t> counts) = 0;
  // data := root's data on every rank.
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  // Starts sending `send` to rank `to` and receiving `recv_bytes` bytes from
  // rank `from` without waiting (the two peers need not be the same rank;
  // every send must meet a receive of the same size on its peer). Exchanges
  // complete in the order they were started between the same two ranks.
  // recv_buffer: storage to receive into (resized to recv_bytes; a buffer of
  // that size from release_buffers() is reused as it is).
  virtual std::unique_ptr<PendingExchange> start_exchange(
      std::vector<std::byte> send, int to, size_t recv_bytes, int from,
      std::vector<std::byte> recv_buffer = {}) = 0;
  virtual void barrier() = 0;

  // Collectives that timed out and are still outstanding (their buffers are
  // kept alive until the transport finishes them, if ever).
  virtual size_t abandoned() = 0;

 private:
  double timeout_s_ = 300;
};

// Every rank's value of x, in rank order.
template <class T>
std::vector<T> allgather_value(Communicator& c, const T& x) {
  std::vector<T> out(size_t(c.size()));
  c.allgather(std::as_bytes(std::span<const T>(&x, 1)), std::as_writable_bytes(std::span<T>(out)));
  return out;
}

// The mean of every rank's x, summed in rank order: the same bits on every rank.
inline double mean_in_rank_order(Communicator& c, double x) {
  double s = 0;
  for (double v : allgather_value(c, x)) s += v;
  return s / double(c.size());
}

}  // namespace keel::dist
