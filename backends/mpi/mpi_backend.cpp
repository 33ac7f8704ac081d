// The `mpi` backend: moves every routed token copy between the processes (one EP rank each) with
// real MPI, verifies every byte, and times it the way nccl-tests does (warm-up iterations, a
// barrier, timed iterations; per-rank mean; the slowest rank is the collective's time).
//
// Per exchange: the rank's row of the dispatch matrix gives its send counts; the counts are
// exchanged first (MPI_Alltoall, as real dispatchers do), then the payload (--a2a-algo), then the
// combine sends every received copy back to its source. Each copy is stamped (source, destination,
// index) and its body regenerated from the stamp, so receivers check every byte; copies missing
// against the matrix are lost, copies that fail the check are corrupted.
#include <mpi.h>

#include <algorithm>
#include <numeric>

#include "backends/backend.hpp"
#include "backends/mpi/alltoall.hpp"
#include "backends/mpi/token_codec.hpp"
#include "harness/core/error.hpp"

namespace moe {
namespace {

class MpiBackend final : public ExchangeBackend {
 public:
  MpiBackend(const BackendSetup& s, const Topology& topo, const Comm& group)
      : setup_(s), exchanger_(group, topo, wire::token_bytes(s.payload_bytes), parse_a2a_algo(s.algo)) {
    if (s.warmup < 0 || s.iters < 1) throw InputError("--warmup must be >= 0 and --iters >= 1");
  }

  ExchangeResult exchange(const TrafficMatrix& dispatch, const TrafficMatrix&, const Topology&, const Comm& group) override {
    const int P = group.size(), r = group.rank();
    const int64_t tb = exchanger_.token_bytes();
    // Counts first: what I send to each peer, and what each peer announces to me.
    const PeerCounts counts = exchange_counts(dispatch, group);
    const std::vector<int64_t>& send_counts = counts.send;
    const std::vector<int64_t>& recv_counts = counts.recv;
    const auto sl = wire::make_layout(send_counts, tb);
    const auto rl = wire::make_layout(recv_counts, tb);
    send_.resize(static_cast<size_t>(sl.bytes));
    recv_.resize(static_cast<size_t>(rl.bytes));
    back_.resize(static_cast<size_t>(sl.bytes));
    for (int d = 0; d < P; ++d)
      for (int64_t j = 0; j < send_counts[d]; ++j) wire::write_token(send_.data() + (sl.displs[d] + j) * tb, tb, r, d, j);

    RankExchange mine;
    mine.dispatch_s = timed([&] { exchanger_.exchange(send_.data(), sl, recv_.data(), rl); }, group);
    if (setup_.corrupt_token >= 0 && r == 0 && setup_.corrupt_token < rl.tokens)
      recv_[static_cast<size_t>(setup_.corrupt_token * tb + tb - 1)] ^= std::byte{0x5a};
    // Dispatch check: every copy from s must be s's j-th copy to me, intact; missing ones are lost.
    mine.corrupted = wire::count_corrupted<int>(recv_.data(), tb, recv_counts, rl.displs, r, true);
    mine.lost = counts.lost;
    // Combine: the received copies go back to their sources (the layouts swap roles).
    mine.combine_s = timed([&] { exchanger_.exchange(recv_.data(), rl, back_.data(), sl); }, group);
    mine.corrupted += wire::count_corrupted<int>(back_.data(), tb, send_counts, sl.displs, r, false);
    mine.sent = sl.tokens + rl.tokens;
    mine.received = rl.tokens + sl.tokens;
    mine.dispatch_bytes = sl.bytes;
    return gather_exchange(mine, group);
  }

 private:
  // Warm-up, barrier, timed iterations; returns this rank's mean seconds per iteration.
  template <class F>
  double timed(F&& once, const Comm& group) {
    for (int i = 0; i < setup_.warmup; ++i) once();
    group.barrier();
    const double t0 = MPI_Wtime();
    for (int i = 0; i < setup_.iters; ++i) once();
    return (MPI_Wtime() - t0) / setup_.iters;
  }

  BackendSetup setup_;
  TokenExchanger exchanger_;
  std::vector<std::byte> send_, recv_, back_;
};

const BackendRegistry::Registrar reg(
    "mpi", "real MPI all-to-all of every token copy (--a2a-algo alltoallv|pairwise|hierarchical), verified, timed; EP size = world size",
    [](const BackendSetup& s, const Topology& t, const Comm& g) -> std::unique_ptr<ExchangeBackend> {
      return std::make_unique<MpiBackend>(s, t, g);
    });

}  // namespace
}  // namespace moe
