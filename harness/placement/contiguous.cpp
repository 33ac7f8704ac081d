// Experts in contiguous blocks: expert e on rank floor(e * R / E) (E/R per rank when R divides E).
#include "harness/placement/placement.hpp"

namespace moe {
namespace {
const PlacementRegistry::Registrar reg(
    "contiguous", "experts in contiguous blocks: expert e on rank floor(e*R/E)", PlacementStrategy{false, false, [](const PlacementSetup& s) {
      Placement p;
      const int64_t R = s.topology.ep_size();
      for (int64_t e = 0; e < s.num_experts; ++e) p.rank_of_expert.push_back(static_cast<int32_t>(e * R / s.num_experts));
      return p;
    }});
}  // namespace
}  // namespace moe
