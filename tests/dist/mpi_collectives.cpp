// The MPI communicator's collectives, run as real ranks under mpirun (any
// world size): sums are the rank-ordered float sums bit for bit on every
// rank, data movement is exact, and a rank that skips a collective makes its
// peers fail with a DistError inside the deadline instead of hanging.
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "core/error.h"
#include "dist/mpi_communicator.h"
#include "mpi_test_main.h"

using namespace keel;
using namespace keel::dist;
using keel::dist::testing::world;

namespace {

// Rank r's input element i: magnitudes that differ by orders, so a different
// summation order gives different bits.
float input(int r, size_t i) {
  const float scale = (r % 3 == 0) ? 1e8f : (r % 3 == 1 ? 1.f : 1e-3f);
  return scale * std::sin(float(i) * 0.37f + float(r) * 1.3f) + float(r);
}

std::vector<float> expected_sum(int world_size, size_t n) {
  std::vector<float> e(n);
  for (size_t i = 0; i < n; ++i) {
    float s = input(0, i);
    for (int r = 1; r < world_size; ++r) s += input(r, i);
    e[i] = s;
  }
  return e;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Rank 0's copy of v, on every rank.
std::vector<float> rank0_copy(Communicator& c, std::vector<float> v) {
  c.broadcast(std::as_writable_bytes(std::span<float>(v)), 0);
  return v;
}

}  // namespace

TEST(MpiCommunicator, AllreduceSumIsTheRankOrderedSumOnEveryRank) {
  Communicator& c = world().comm();
  c.set_timeout(30);
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1001), size_t(65537)}) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = input(c.rank(), i);
    c.allreduce_sum(v);
    EXPECT_TRUE(same_bits(v, expected_sum(c.size(), n))) << "n=" << n;
    EXPECT_TRUE(same_bits(v, rank0_copy(c, v))) << "n=" << n;
  }
}

TEST(MpiCommunicator, StartedSumsCompleteInAnyWaitOrder) {
  Communicator& c = world().comm();
  std::vector<std::unique_ptr<PendingSum>> sums;
  for (size_t k = 0; k < 4; ++k) {
    std::vector<float> v(100 + k * 37);
    for (size_t i = 0; i < v.size(); ++i) v[i] = input(c.rank(), i + k);
    sums.push_back(c.start_allreduce_sum(std::move(v)));
  }
  for (size_t k = 4; k-- > 0;) {
    sums[k]->wait();
    const auto r = sums[k]->result();
    std::vector<float> e(100 + k * 37);
    for (size_t i = 0; i < e.size(); ++i) {
      float s = input(0, i + k);
      for (int q = 1; q < c.size(); ++q) s += input(q, i + k);
      e[i] = s;
    }
    EXPECT_TRUE(same_bits(std::vector<float>(r.begin(), r.end()), e)) << "sum " << k;
  }
}

TEST(MpiCommunicator, ReduceScatterSumGivesEachRankItsChunk) {
  Communicator& c = world().comm();
  const size_t chunk = 33, n = chunk * size_t(c.size());
  std::vector<float> in(n), out(chunk);
  for (size_t i = 0; i < n; ++i) in[i] = input(c.rank(), i);
  c.reduce_scatter_sum(in, out);
  const auto e = expected_sum(c.size(), n);
  EXPECT_TRUE(
      same_bits(out, std::vector<float>(e.begin() + std::ptrdiff_t(chunk) * c.rank(),
                                        e.begin() + std::ptrdiff_t(chunk) * (c.rank() + 1))));
  std::vector<float> bad(n + 1);
  EXPECT_THROW(c.reduce_scatter_sum(bad, out), DistError);
}

TEST(MpiCommunicator, AllgatherAllgathervBroadcastBarrier) {
  Communicator& c = world().comm();
  const int N = c.size(), me = c.rank();
  const std::vector<int> ranks = allgather_value(c, me * 10 + 1);
  for (int r = 0; r < N; ++r) EXPECT_EQ(ranks[size_t(r)], r * 10 + 1);
  // Uneven byte counts, rank 1 contributes nothing.
  std::vector<size_t> counts(static_cast<size_t>(N));
  for (int r = 0; r < N; ++r) counts[size_t(r)] = r == 1 ? 0 : size_t(3 + 5 * r);
  std::vector<std::byte> mine(counts[size_t(me)]);
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = std::byte(me * 16 + int(i));
  size_t total = 0;
  for (size_t x : counts) total += x;
  std::vector<std::byte> all(total);
  c.allgatherv(mine, all, counts);
  size_t off = 0;
  for (int r = 0; r < N; ++r)
    for (size_t i = 0; i < counts[size_t(r)]; ++i, ++off)
      EXPECT_EQ(all[off], std::byte(r * 16 + int(i))) << "rank " << r << " byte " << i;
  std::vector<double> b = {double(me), 2.5};
  const int root = N - 1;
  c.broadcast(std::as_writable_bytes(std::span<double>(b)), root);
  EXPECT_EQ(b[0], double(root));
  EXPECT_THROW(c.broadcast(std::as_writable_bytes(std::span<double>(b)), N), DistError);
  c.barrier();
}

// Exchanges around the ring (what in-memory snapshots use): each rank sends
// to rank+1 and receives from rank-1, messages of different sizes per rank,
// two in flight at once, completed in either order, while a collective runs.
TEST(MpiCommunicator, RingExchangesDeliverExactBytesWhileCollectivesRun) {
  Communicator& c = world().comm();
  c.set_timeout(30);
  const int N = c.size(), me = c.rank(), next = (me + 1) % N, prev = (me + N - 1) % N;
  auto bytes_of = [](int r, int round) {
    std::vector<std::byte> v(size_t(100000 + 1000 * r + round));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = std::byte((i * 7 + size_t(r) * 13 + size_t(round)) & 0xff);
    return v;
  };
  auto first = c.start_exchange(bytes_of(me, 0), next, bytes_of(prev, 0).size(), prev);
  auto second = c.start_exchange(bytes_of(me, 1), next, bytes_of(prev, 1).size(), prev);
  std::vector<float> v(1001);
  for (size_t i = 0; i < v.size(); ++i) v[i] = input(me, i);
  c.allreduce_sum(v);  // progresses the exchanges too
  EXPECT_TRUE(same_bits(v, expected_sum(N, v.size())));
  second->wait();
  first->wait();
  EXPECT_TRUE(first->test());
  const auto a = first->received(), b = second->received();
  const auto want_a = bytes_of(prev, 0), want_b = bytes_of(prev, 1);
  ASSERT_EQ(a.size(), want_a.size());
  ASSERT_EQ(b.size(), want_b.size());
  EXPECT_EQ(std::memcmp(a.data(), want_a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(b.data(), want_b.data(), b.size()), 0);
  EXPECT_THROW(c.start_exchange({}, N, 0, prev), DistError);
}

// Rank 1 skips a collective: rank 0 must get a DistError naming it, its rank
// and the time waited; without the deadline this test would hang (ctest's
// TIMEOUT). Rank 1 waits for rank 0's verdict by a point-to-point message, so
// it cannot have joined before the deadline passed.
void expect_timeout(Communicator& c, const char* op,
                    const std::function<void(Communicator&)>& call) {
  c.set_timeout(0.5);
  try {
    call(c);
    ADD_FAILURE() << op << " completed although rank 1 never joined";
  } catch (const DistError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(op), std::string::npos) << m;
    EXPECT_NE(m.find("rank 0"), std::string::npos) << m;
    EXPECT_NE(m.find("timed out after"), std::string::npos) << m;
  }
  EXPECT_EQ(c.abandoned(), 1u);
  int go = 1;
  MPI_Send(&go, 1, MPI_INT, 1, 77, MPI_COMM_WORLD);
}

void wait_for_rank0() {
  int go = 0;
  MPI_Recv(&go, 1, MPI_INT, 0, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

// A barrier can be joined late: the abandoned request then completes and the
// communicator stays usable.
TEST(MpiCommunicator, SkippedBarrierTimesOutAndCanBeJoinedLate) {
  Communicator& c = world().comm();
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  if (c.rank() == 0) expect_timeout(c, "barrier", [](Communicator& x) { x.barrier(); });
  if (c.rank() == 1) wait_for_rank0();
  c.set_timeout(30);
  if (c.rank() != 0) c.barrier();  // matches rank 0's abandoned barrier
  c.barrier();
  for (int k = 0; k < 1000 && c.abandoned() > 0; ++k) c.barrier();
  EXPECT_EQ(c.abandoned(), 0u);
}

// A timed-out sum leaves its communicator unusable (the phases can no longer
// be matched): it runs on a communicator of its own, which is then dropped.
TEST(MpiCommunicator, SkippedAllreduceTimesOut) {
  Communicator& c = world().comm();
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  {
    MpiCommunicator side(MPI_COMM_WORLD);
    if (c.rank() == 0)
      expect_timeout(side, "allreduce_sum", [](Communicator& x) {
        std::vector<float> v(1000, 1.f);
        x.allreduce_sum(v);
      });
    if (c.rank() == 1) wait_for_rank0();
  }
  c.barrier();
}

int main(int argc, char** argv) {
  return keel::dist::testing::mpi_test_main(argc, argv);
}
