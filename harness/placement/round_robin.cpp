// Experts dealt out like cards: expert e on rank e mod R.
#include "harness/placement/placement.hpp"

namespace moe {
namespace {
const PlacementRegistry::Registrar reg("round_robin", "expert e on rank e mod R (neighbouring experts on different ranks)",
                                       PlacementStrategy{false, false, [](const PlacementSetup& s) {
                                         Placement p;
                                         const int32_t R = s.topology.ep_size();
                                         for (int32_t e = 0; e < s.num_experts; ++e) p.rank_of_expert.push_back(e % R);
                                         return p;
                                       }});
}  // namespace
}  // namespace moe
