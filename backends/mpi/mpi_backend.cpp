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
    std::vector<int64_t> send_counts(P), recv_counts(P);
    for (int d = 0; d < P; ++d) send_counts[d] = dispatch.tok(r, d);
    MOE_MPI(MPI_Alltoall(send_counts.data(), 1, MPI_INT64_T, recv_counts.data(), 1, MPI_INT64_T, group.raw()));
    const auto sl = wire::make_layout(send_counts, tb);
    const auto rl = wire::make_layout(recv_counts, tb);
    send_.resize(static_cast<size_t>(sl.bytes));
    recv_.resize(static_cast<size_t>(rl.bytes));
    back_.resize(static_cast<size_t>(sl.bytes));
    for (int d = 0; d < P; ++d)
      for (int64_t j = 0; j < send_counts[d]; ++j) wire::write_token(send_.data() + (sl.displs[d] + j) * tb, tb, r, d, j);

    ExchangeResult out;
    out.measured = true;
    const double dispatch_s = timed([&] { exchanger_.exchange(send_.data(), sl, recv_.data(), rl); }, group);
    if (setup_.corrupt_token >= 0 && r == 0 && setup_.corrupt_token < rl.tokens)
      recv_[static_cast<size_t>(setup_.corrupt_token * tb + tb - 1)] ^= std::byte{0x5a};
    // Dispatch check: every copy from s must be s's j-th copy to me, intact.
    int64_t received = 0, corrupted = 0;
    for (int s = 0; s < P; ++s)
      for (int64_t j = 0; j < recv_counts[s]; ++j) {
        ++received;
        if (wire::verify_token(recv_.data() + (rl.displs[s] + j) * tb, tb, s, r, j) != wire::Verdict::ok) ++corrupted;
      }
    int64_t lost = 0;
    for (int s = 0; s < P; ++s) lost += std::max<int64_t>(0, dispatch.tok(s, r) - recv_counts[s]);
    // Combine: the received copies go back to their sources (the layouts swap roles).
    const double combine_s = timed([&] { exchanger_.exchange(recv_.data(), rl, back_.data(), sl); }, group);
    for (int d = 0; d < P; ++d)
      for (int64_t j = 0; j < send_counts[d]; ++j) {
        ++received;
        if (wire::verify_token(back_.data() + (sl.displs[d] + j) * tb, tb, r, d, j) != wire::Verdict::ok) ++corrupted;
      }
    const int64_t sent = sl.tokens + rl.tokens;

    // Per-rank figures to everyone: [dispatch_s, combine_s] and [sent, received, lost, corrupted].
    std::vector<double> times(2 * static_cast<size_t>(P));
    const double mine_t[2] = {dispatch_s, combine_s};
    MOE_MPI(MPI_Allgather(mine_t, 2, MPI_DOUBLE, times.data(), 2, MPI_DOUBLE, group.raw()));
    std::vector<int64_t> counts(4 * static_cast<size_t>(P));
    const int64_t mine_c[4] = {sent, received, lost, corrupted};
    MOE_MPI(MPI_Allgather(mine_c, 4, MPI_INT64_T, counts.data(), 4, MPI_INT64_T, group.raw()));
    for (int p = 0; p < P; ++p) {
      out.rank_dispatch_s.push_back(times[2 * p]);
      out.rank_combine_s.push_back(times[2 * p + 1]);
      out.tokens_sent.push_back(counts[4 * p]);
      out.tokens_received.push_back(counts[4 * p + 1]);
      out.tokens_lost.push_back(counts[4 * p + 2]);
      out.tokens_corrupted.push_back(counts[4 * p + 3]);
    }
    out.dispatch_s = *std::max_element(out.rank_dispatch_s.begin(), out.rank_dispatch_s.end());
    out.combine_s = *std::max_element(out.rank_combine_s.begin(), out.rank_combine_s.end());
    out.bytes_moved = group.sum(sl.bytes);
    return out;
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
