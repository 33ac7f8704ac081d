#pragma once
#include <algorithm>
#include <array>
#include <string>

#include "harness/core/types.hpp"

namespace moe {

// How many copies of a token travel:
//  token_expert: one copy per kept (token, expert) assignment;
//  token_rank:   one copy per (token, destination rank), the rank applies all its experts;
//  token_node:   one copy per (token, destination node) over the network to the rank with the
//                source's local index on that node (rail-aligned, DeepEP style), which forwards one
//                copy per further destination rank inside its node. Same-node destinations are
//                reached directly.
enum class Dedup { token_expert, token_rank, token_node };
Dedup parse_dedup(const std::string& name);

// Which copy of a replicated expert a token goes to:
//  locality:    a copy on the token's own rank, else one on its own node, else any; among several
//               candidates the token's global index picks (spreads the load);
//  round_robin: each source rank uses the copies in turn (its i-th token takes copy i mod n);
//  random:      uniform from the counter RNG keyed by (seed, step, layer, token, expert);
//  token_hash:  a hash of the token's global index (the same token always takes the same copy).
enum class ReplicaSelect { locality, round_robin, random, token_hash };
ReplicaSelect parse_replica_select(const std::string& name);

struct TrafficSpec {
  Dedup dedup = Dedup::token_expert;
  int64_t payload_bytes = 0;  // hidden * dtype bytes, per token copy
  int64_t meta_bytes_per_assignment =
      8;  // int32 expert id + fp32 weight, for each expert a copy serves
  ReplicaSelect replica_select = ReplicaSelect::locality;
  uint64_t seed = 0;  // random replica selection
};

// Per-token and per-destination facts of one dispatch, beside the matrix (sum over processes like
// the matrix). Sizes from reset(): R ranks, N nodes, E experts.
//  rank_assignments[r]: kept assignments served by rank r (the experts' copies there), the per-GPU
//    load after placement and replica selection;
//  ranks_per_token_hist[n], nodes_per_token_hist[n]: tokens whose kept assignments go to n distinct
//    ranks / nodes (0..min(E, R) and 0..min(E, N)), independent of --dedup (destinations, not
//    relays);
//  expert_bytes[e * 3 + c]: bytes to expert e by link class c (local, intra, inter) counted one
//    copy per kept assignment (payload + metadata), whatever --dedup: each expert's own demand on
//    the links.
struct DispatchDetail {
  std::vector<int64_t> rank_assignments;
  std::vector<int64_t> ranks_per_token_hist;
  std::vector<int64_t> nodes_per_token_hist;
  std::vector<int64_t> expert_bytes;
  void reset(int32_t ranks, int32_t nodes, int32_t experts) {
    rank_assignments.assign(static_cast<size_t>(ranks), 0);
    ranks_per_token_hist.assign(static_cast<size_t>(std::min(experts, ranks)) + 1, 0);
    nodes_per_token_hist.assign(static_cast<size_t>(std::min(experts, nodes)) + 1, 0);
    expert_bytes.assign(static_cast<size_t>(experts) * 3, 0);
  }
};

// Adds the dispatch traffic of `plan`'s kept assignments (kept empty = all kept) to `dispatch`,
// token t coming from the EP rank that owns it in `batch`'s rank layout
// (which must be reset to R = topology.ep_size() first). Pure and local: sum the matrices of all
// processes to get the group's. tokens[s][d] counts copies, bytes[s][d] their bytes.
void account_dispatch(const RoutingPlan& plan, const std::vector<uint8_t>& kept,
                      const TokenBatch& batch, const Placement& placement, const Topology& topology,
                      const TrafficSpec& spec, TrafficMatrix& dispatch,
                      DispatchDetail* detail = nullptr);

// The combine sends every dispatched copy back the way it came (reduced where it was forwarded),
// carrying only the payload: tokens = dispatch.tokens transposed, bytes = tokens * payload.
void combine_from_dispatch(const TrafficMatrix& dispatch, int64_t payload_bytes,
                           TrafficMatrix& combine);

// Bytes of `m` by link class: [local, intra, inter].
std::array<int64_t, 3> bytes_by_class(const TrafficMatrix& m, const Topology& topology);

// Per rank, bytes sent (row) and received (column) by link class: send[r * 3 + c], recv[r * 3 + c].
void rank_bytes_by_class(const TrafficMatrix& m, const Topology& topology,
                         std::vector<int64_t>& send, std::vector<int64_t>& recv);

}  // namespace moe
