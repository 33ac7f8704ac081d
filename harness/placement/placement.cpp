#include "harness/placement/placement.hpp"

#include <algorithm>
#include <numeric>

#include "harness/core/error.hpp"

namespace moe {

const PlacementStrategy& placement_strategy(const std::string& name) {
  const auto* entry = PlacementRegistry::instance().find(name);
  if (!entry)
    throw InputError("unknown placement '" + name + "' (known: " + join(PlacementRegistry::instance().names()) + ")");
  return entry->factory;
}

int64_t physical_slots(int32_t experts, int32_t redundant, int32_t ranks) {
  const int64_t p = static_cast<int64_t>(experts) + redundant;
  return (p + ranks - 1) / ranks * ranks;
}

Placement make_placement(const std::string& name, const PlacementSetup& setup) {
  const PlacementStrategy& strategy = placement_strategy(name);
  const int32_t R = setup.topology.ep_size();
  const int32_t E = setup.num_experts;
  if (setup.redundant_experts > 0 && !strategy.replicates)
    throw InputError("--redundant-experts " + std::to_string(setup.redundant_experts) + ": placement " + name +
                     " does not replicate experts (load_balanced and eplb do)");
  if (!setup.expert_load.empty() && static_cast<int32_t>(setup.expert_load.size()) != E) fail("placement: loads are not [E]");
  Placement p = strategy.place(setup);
  if (p.expert_of_slot.empty()) {
    if (static_cast<int32_t>(p.rank_of_expert.size()) != E) fail("placement " + name + " placed the wrong number of experts");
    for (int32_t r : p.rank_of_expert)
      if (r < 0 || r >= R) fail("placement " + name + " used rank " + std::to_string(r) + " outside the EP group");
    return Placement::from_ranks(p.rank_of_expert, R);
  }
  if (p.slots_per_rank < 1 || static_cast<int64_t>(p.expert_of_slot.size()) != static_cast<int64_t>(R) * p.slots_per_rank)
    fail("placement " + name + " does not fill R x slots_per_rank slots");
  for (int32_t e : p.expert_of_slot)
    if (e < -1 || e >= E) fail("placement " + name + " put expert " + std::to_string(e) + " in a slot");
  p.index(E);
  for (int32_t e = 0; e < E; ++e)
    if (p.copies(e) < 1) fail("placement " + name + " left expert " + std::to_string(e) + " without a copy");
  return p;
}

std::vector<int32_t> replicate_experts(const std::vector<double>& load, int64_t n_phy, std::vector<int32_t>& copy_rank,
                                       std::vector<int32_t>& copies) {
  const int64_t n_log = static_cast<int64_t>(load.size());
  if (n_phy < n_log) fail("replicate_experts: fewer physical than logical experts");
  std::vector<int32_t> phy2log(static_cast<size_t>(n_phy));
  copy_rank.assign(static_cast<size_t>(n_phy), 0);
  copies.assign(static_cast<size_t>(n_log), 1);
  std::iota(phy2log.begin(), phy2log.begin() + n_log, 0);
  for (int64_t i = n_log; i < n_phy; ++i) {
    int64_t best = 0;
    for (int64_t j = 1; j < n_log; ++j)
      if (load[j] / copies[j] > load[best] / copies[best]) best = j;
    phy2log[i] = static_cast<int32_t>(best);
    copy_rank[i] = copies[best];
    ++copies[best];
  }
  return phy2log;
}

void balanced_packing(const std::vector<double>& weight, int32_t packs, std::vector<int32_t>& pack_of,
                      std::vector<int32_t>& rank_in_pack) {
  const int64_t n = static_cast<int64_t>(weight.size());
  if (packs < 1 || n % packs != 0) fail("balanced_packing: " + std::to_string(n) + " items do not divide into " + std::to_string(packs) + " packs");
  const int64_t per_pack = n / packs;
  pack_of.assign(static_cast<size_t>(n), 0);
  rank_in_pack.assign(static_cast<size_t>(n), 0);
  if (per_pack == 1) {
    std::iota(pack_of.begin(), pack_of.end(), 0);
    return;
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return weight[a] > weight[b]; });
  std::vector<double> pack_weight(static_cast<size_t>(packs), 0.0);
  std::vector<int64_t> items(static_cast<size_t>(packs), 0);
  for (int64_t i : order) {
    int32_t best = -1;
    for (int32_t p = 0; p < packs; ++p)
      if (items[p] < per_pack && (best < 0 || pack_weight[p] < pack_weight[best])) best = p;
    pack_of[i] = best;
    rank_in_pack[i] = static_cast<int32_t>(items[best]++);
    pack_weight[best] += weight[i];
  }
}

}  // namespace moe
