// eplb: DeepSeek's expert-parallel load balancer (github.com/deepseek-ai/EPLB), reimplemented.
// Hierarchical policy when the G expert groups (--expert-groups, default one per node) divide
// evenly over the N nodes:
//  1. pack the groups onto the nodes (balanced_packing of the groups' summed loads, G/N groups
//     per node), which orders the experts node by node;
//  2. inside each node, replicate its E/N experts into P/N slots (P = E + --redundant-experts,
//     raised to a multiple of R): each extra copy goes to the expert with the largest load per
//     copy;
//  3. pack the node's copies (load / copies each) onto its R/N GPUs, P/R slots per GPU.
// Otherwise the global policy: the same with one group and one node (= load_balanced). Ties are
// broken by the lowest index everywhere (stable sort; first maximum; lightest pack, lowest first).
#include "harness/core/error.hpp"
#include "harness/placement/placement.hpp"

namespace moe {
namespace {

// Steps 1-3 for G groups over N nodes; N = G = 1 is the global policy.
Placement hierarchical(const std::vector<double>& load, int64_t P, int32_t G, int32_t N, int32_t M) {
  const int32_t E = static_cast<int32_t>(load.size());
  const int32_t group_size = E / G, groups_per_node = G / N;
  // 1. groups -> nodes
  std::vector<double> group_load(static_cast<size_t>(G), 0.0);
  for (int32_t e = 0; e < E; ++e) group_load[e / group_size] += load[e];
  std::vector<int32_t> group_pack, group_rank;
  balanced_packing(group_load, N, group_pack, group_rank);
  // log2mlog: expert e's place in the node-by-node order; mlog2log its inverse
  std::vector<int32_t> mlog2log(static_cast<size_t>(E));
  for (int32_t e = 0; e < E; ++e) {
    const int32_t g = e / group_size;
    const int32_t mlog = (group_pack[g] * groups_per_node + group_rank[g]) * group_size + e % group_size;
    mlog2log[mlog] = e;
  }
  // 2. and 3., node by node
  const int32_t log_per_node = E / N, gpus_per_node = M / N;
  const int64_t phy_per_node = P / N, slots_per_gpu = P / M;
  Placement p;
  p.slots_per_rank = static_cast<int32_t>(slots_per_gpu);
  p.expert_of_slot.assign(static_cast<size_t>(P), -1);
  for (int32_t n = 0; n < N; ++n) {
    std::vector<double> node_load(static_cast<size_t>(log_per_node));
    for (int32_t i = 0; i < log_per_node; ++i) node_load[i] = load[mlog2log[n * log_per_node + i]];
    std::vector<int32_t> copy_rank, copies;
    const std::vector<int32_t> phy2mlog = replicate_experts(node_load, phy_per_node, copy_rank, copies);
    std::vector<double> w(static_cast<size_t>(phy_per_node));
    for (int64_t q = 0; q < phy_per_node; ++q) w[q] = node_load[phy2mlog[q]] / copies[phy2mlog[q]];
    std::vector<int32_t> pack, rank_in_pack;
    balanced_packing(w, gpus_per_node, pack, rank_in_pack);
    for (int64_t q = 0; q < phy_per_node; ++q) {
      const int64_t slot = static_cast<int64_t>(n) * phy_per_node + pack[q] * slots_per_gpu + rank_in_pack[q];
      p.expert_of_slot[static_cast<size_t>(slot)] = mlog2log[n * log_per_node + phy2mlog[q]];
    }
  }
  return p;
}

Placement place(const PlacementSetup& s) {
  const int32_t E = s.num_experts, R = s.topology.ep_size(), N = s.topology.nodes;
  const std::vector<double> load = s.expert_load.empty() ? std::vector<double>(static_cast<size_t>(E), 1.0) : s.expert_load;
  const int64_t P = physical_slots(E, s.redundant_experts, R);
  const int32_t G = s.expert_groups > 0 ? s.expert_groups : N;
  if (E % G == 0 && G % N == 0 && E >= N) return hierarchical(load, P, G, N, R);
  return hierarchical(load, P, 1, 1, R);
}

const PlacementRegistry::Registrar reg(
    "eplb", "DeepSeek EPLB: groups packed onto nodes, hot experts replicated, copies packed onto GPUs (--expert-groups, --redundant-experts)",
    PlacementStrategy{true, true, place});

}  // namespace
}  // namespace moe
