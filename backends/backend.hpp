#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "harness/core/comm.hpp"
#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct BackendSetup {
  int64_t payload_bytes = 0;  // per token copy (hidden x dtype bytes)
  int32_t warmup = 2;         // untimed iterations per exchange
  int32_t iters = 5;          // timed iterations per exchange
  std::string algo = "alltoallv";  // alltoallv | pairwise | hierarchical
  int64_t corrupt_token = -1;      // tests only: flip a byte of this received token index on rank 0
};

// What an exchange measured. Backends that only model (sim) measure nothing. The vectors are
// [R], identical on every process; times are means over the timed iterations.
struct ExchangeResult {
  bool measured = false;
  double dispatch_s = 0;  // slowest rank
  double combine_s = 0;
  std::vector<double> rank_dispatch_s, rank_combine_s;
  std::vector<int64_t> tokens_sent, tokens_received, tokens_lost, tokens_corrupted;  // dispatch + combine
  int64_t bytes_moved = 0;  // dispatch payload bytes over all ranks, per iteration
};

// Sees traffic matrices and bytes, never routers. Collective over `group`.
class ExchangeBackend {
 public:
  virtual ~ExchangeBackend() = default;
  virtual ExchangeResult exchange(const TrafficMatrix& dispatch, const TrafficMatrix& combine, const Topology& topology,
                                  const Comm& group) = 0;
};

// What one rank of a real exchange measured, gathered into an ExchangeResult for every rank.
// Collective over `group`.
struct RankExchange {
  double dispatch_s = 0, combine_s = 0;
  int64_t sent = 0, received = 0, lost = 0, corrupted = 0;
  int64_t dispatch_bytes = 0;
};
ExchangeResult gather_exchange(const RankExchange& mine, const Comm& group);

// The counts a real dispatcher exchanges before any payload: send[p] = copies from this rank to p
// (its row of the dispatch matrix), recv[p] = what p announces to this rank (MPI_Alltoall), and
// lost = copies the matrix says should arrive but no peer announced. Collective.
struct PeerCounts {
  std::vector<int64_t> send, recv;
  int64_t lost = 0;
};
PeerCounts exchange_counts(const TrafficMatrix& dispatch, const Comm& group);

using BackendFactory = std::function<std::unique_ptr<ExchangeBackend>(const BackendSetup&, const Topology&, const Comm&)>;
using BackendRegistry = Registry<BackendFactory>;

// Collective over `group` (real backends build communicators). Throws InputError for a bad name.
std::unique_ptr<ExchangeBackend> make_backend(const std::string& name, const BackendSetup& setup, const Topology& topology,
                                              const Comm& group);

}  // namespace moe
