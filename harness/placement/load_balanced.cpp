// load_balanced: greedy largest-first packing of the expert loads onto the ranks, the same number
// of slots on every rank. With --redundant-experts N, the E + N slots (raised to a multiple of R)
// first get extra copies of the experts with the largest load per copy (ties: lowest index), each
// copy carrying load / copies; then every copy, heaviest first (ties: lowest index), goes to the
// least-loaded rank that still has a free slot (ties: lowest rank). This is also EPLB's global
// policy (eplb uses it when expert groups do not divide evenly over the nodes).
#include "harness/placement/placement.hpp"

namespace moe {
namespace {
Placement place(const PlacementSetup& s) {
  const int32_t E = s.num_experts, R = s.topology.ep_size();
  const std::vector<double> load = s.expert_load.empty() ? std::vector<double>(static_cast<size_t>(E), 1.0) : s.expert_load;
  const int64_t P = physical_slots(E, s.redundant_experts, R);
  std::vector<int32_t> copy_rank, copies;
  const std::vector<int32_t> phy2log = replicate_experts(load, P, copy_rank, copies);
  std::vector<double> w(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) w[i] = load[phy2log[i]] / copies[phy2log[i]];
  std::vector<int32_t> pack, rank_in_pack;
  balanced_packing(w, R, pack, rank_in_pack);
  Placement p;
  p.slots_per_rank = static_cast<int32_t>(P / R);
  p.expert_of_slot.assign(static_cast<size_t>(P), -1);
  for (int64_t i = 0; i < P; ++i) p.expert_of_slot[static_cast<size_t>(pack[i]) * p.slots_per_rank + rank_in_pack[i]] = phy2log[i];
  return p;
}
const PlacementRegistry::Registrar reg(
    "load_balanced", "greedy largest-first packing of expert loads, equal slots per rank (--redundant-experts copies)",
    PlacementStrategy{true, true, place});
}  // namespace
}  // namespace moe
