#include "backends/backend.hpp"

#include <algorithm>

#include "harness/core/error.hpp"

namespace moe {

std::unique_ptr<ExchangeBackend> make_backend(const std::string& name, const BackendSetup& setup, const Topology& topology,
                                              const Comm& group) {
  const auto* entry = BackendRegistry::instance().find(name);
  if (!entry) throw InputError("unknown backend '" + name + "' (known: " + join(BackendRegistry::instance().names()) + ")");
  return entry->factory(setup, topology, group);
}

PeerCounts exchange_counts(const TrafficMatrix& dispatch, const Comm& group) {
  const int P = group.size(), r = group.rank();
  PeerCounts c;
  c.send.resize(P);
  c.recv.resize(P);
  for (int d = 0; d < P; ++d) c.send[d] = dispatch.tok(r, d);
  MOE_MPI(MPI_Alltoall(c.send.data(), 1, MPI_INT64_T, c.recv.data(), 1, MPI_INT64_T, group.raw()));
  for (int s = 0; s < P; ++s) c.lost += std::max<int64_t>(0, dispatch.tok(s, r) - c.recv[s]);
  return c;
}

ExchangeResult gather_exchange(const RankExchange& mine, const Comm& group) {
  const int P = group.size();
  std::vector<double> times(2 * static_cast<size_t>(P));
  const double t[2] = {mine.dispatch_s, mine.combine_s};
  MOE_MPI(MPI_Allgather(t, 2, MPI_DOUBLE, times.data(), 2, MPI_DOUBLE, group.raw()));
  std::vector<int64_t> counts(4 * static_cast<size_t>(P));
  const int64_t c[4] = {mine.sent, mine.received, mine.lost, mine.corrupted};
  MOE_MPI(MPI_Allgather(c, 4, MPI_INT64_T, counts.data(), 4, MPI_INT64_T, group.raw()));
  ExchangeResult out;
  out.measured = true;
  for (int p = 0; p < P; ++p) {
    out.rank_dispatch_s.push_back(times[2 * p]);
    out.rank_combine_s.push_back(times[2 * p + 1]);
    out.tokens_sent.push_back(counts[4 * p]);
    out.tokens_received.push_back(counts[4 * p + 1]);
    out.tokens_lost.push_back(counts[4 * p + 2]);
    out.tokens_corrupted.push_back(counts[4 * p + 3]);
    out.dispatch_s = std::max(out.dispatch_s, times[2 * p]);
    out.combine_s = std::max(out.combine_s, times[2 * p + 1]);
  }
  out.bytes_moved = group.sum(mine.dispatch_bytes);
  return out;
}

}  // namespace moe
