#pragma once
#include <functional>
#include <string>
#include <vector>

#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct PlacementSetup {
  int32_t num_experts = 0;
  Topology topology;
  uint64_t seed = 0;
  int32_t redundant_experts = 0;    // extra expert copies (placements that replicate)
  int32_t expert_groups = 0;        // eplb: expert groups (0: one per node)
  std::vector<double> expert_load;  // [E] load to balance (empty: equal loads)
};

// A named strategy: expert -> rank(s). Static ones ignore loads; load-aware ones balance
// expert_load and may replicate (redundant_experts extra copies, raised so that every rank holds
// the same number of slots).
struct PlacementStrategy {
  bool uses_loads = false;
  bool replicates = false;
  std::function<Placement(const PlacementSetup&)> place;
};
using PlacementRegistry = Registry<PlacementStrategy>;

// Builds and checks a placement: every expert has >= 1 copy, every slot is on a rank of the EP
// group, replicating placements fill every slot. Throws InputError for an unknown name or knobs
// the strategy does not take.
Placement make_placement(const std::string& name, const PlacementSetup& setup);
const PlacementStrategy& placement_strategy(const std::string& name);

// Physical expert slots of a replicating placement: E + redundant, raised to a multiple of R.
int64_t physical_slots(int32_t experts, int32_t redundant, int32_t ranks);

// The building blocks of DeepSeek's EPLB (also used by load_balanced):
// replicate: n_phy >= n_log physical copies; copy i < n_log is expert i, each further copy goes to
// the expert with the largest load per copy (ties: lowest index). Returns phy2log, and fills
// copy_rank (the copy's index among its expert's copies) and copies (per expert).
std::vector<int32_t> replicate_experts(const std::vector<double>& load, int64_t n_phy, std::vector<int32_t>& copy_rank,
                                       std::vector<int32_t>& copies);
// balanced_packing: n items into `packs` packs of exactly n / packs items each; items by weight,
// heaviest first (ties: lowest index), each into the lightest pack that still has room (ties:
// lowest pack). With one item per pack, item i goes to pack i. Fills pack_of and rank_in_pack.
void balanced_packing(const std::vector<double>& weight, int32_t packs, std::vector<int32_t>& pack_of,
                      std::vector<int32_t>& rank_in_pack);

}  // namespace moe
