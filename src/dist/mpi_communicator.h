// MpiCommunicator: Communicator over an MPI communicator. Every collective is
// a nonblocking MPI call polled with MPI_Test against a deadline, so a lost
// or stalled peer becomes a DistError instead of a hang. Sums never use
// MPI_Allreduce (whose reduction order MPI leaves open): an all-to-all moves
// chunk r of every rank to rank r, which adds them in rank order, and an
// all-gather returns the sums; the result is the same bits on every rank and
// every run for any world size, at the bandwidth of a ring allreduce.
// Sums in flight start their MPI calls in the order they were started on
// every rank (MPI requires it): all-to-alls on one duplicate communicator in
// start order, all-gathers on another, each one only after the previous
// sum's, so no rank's timing can reorder them.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "dist/float_buffer_pool.h"

namespace keel::dist {

class MpiPendingSum;

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates comm (so keel's traffic never matches anyone else's) and makes
  // MPI errors on it return codes, turned into DistError here.
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::unique_ptr<PendingSum> start_allreduce_sum(std::vector<float> data) override;
  std::vector<float> sum_buffer(size_t n) override { return pool_->take(n); }
  void reduce_scatter_sum(std::span<const float> in, std::span<float> out) override;
  void allgather(std::span<const std::byte> in, std::span<std::byte> out) override;
  void allgatherv(std::span<const std::byte> in, std::span<std::byte> out,
                  std::span<const size_t> counts) override;
  void broadcast(std::span<std::byte> data, int root) override;
  std::unique_ptr<PendingExchange> start_exchange(std::vector<std::byte> send, int to,
                                                  size_t recv_bytes, int from,
                                                  std::vector<std::byte> recv_buffer = {}) override;
  void barrier() override;
  size_t abandoned() override;

  // ---- for the implementation's pieces (mpi_communicator.cpp)
  // A started request whose buffers live in keep: polls it until done or
  // until timeout_s() from now; on expiry the request and keep move to the
  // abandoned list and DistError names op.
  void wait_request(MPI_Request& req, const char* op, std::shared_ptr<void> keep);
  // Completes abandoned requests that have finished since (frees their buffers).
  void reap_abandoned();
  MPI_Comm comm() const { return comm_; }
  MPI_Comm scatter_comm() const { return scatter_comm_; }
  MPI_Comm gather_comm() const { return gather_comm_; }
  MPI_Comm exchange_comm() const { return exchange_comm_; }
  // Sums in flight, in start order: each advances only after those before it.
  void progress_sums();
  // Ticket bookkeeping of the sums (mpi_communicator.cpp).
  uint64_t take_sum_ticket() { return sums_started_++; }
  bool gather_turn(uint64_t ticket) const { return gathers_started_ == ticket; }
  void gather_started() { ++gathers_started_; }
  void sum_live(MpiPendingSum* s) { live_.push_back(s); }
  void sum_gone(MpiPendingSum* s);
  // Where finished sums leave their buffers (shared: an abandoned sum's
  // buffers may outlive a pending sum object).
  const std::shared_ptr<FloatBufferPool>& pool() const { return pool_; }

 private:
  struct Abandoned {
    MPI_Request req;
    std::shared_ptr<void> keep;
  };
  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm scatter_comm_ = MPI_COMM_NULL, gather_comm_ = MPI_COMM_NULL;
  // Point-to-point exchanges: their own context, so no collective's internal
  // messages can ever match them.
  MPI_Comm exchange_comm_ = MPI_COMM_NULL;
  uint64_t sums_started_ = 0, gathers_started_ = 0;
  std::vector<MpiPendingSum*> live_;
  int rank_ = 0, size_ = 1;
  std::vector<Abandoned> abandoned_;
  std::shared_ptr<FloatBufferPool> pool_ = std::make_shared<FloatBufferPool>();
};

// Throws DistError "[op] rank r: MPI error text" when rc is not MPI_SUCCESS.
void mpi_check(int rc, const char* op, int rank);

}  // namespace keel::dist
