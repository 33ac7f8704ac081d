#include "harness/placement/placement.hpp"

#include "harness/core/error.hpp"

namespace moe {

Placement make_placement(const std::string& name, const PlacementSetup& setup) {
  const auto* entry = PlacementRegistry::instance().find(name);
  if (!entry)
    throw InputError("unknown placement '" + name + "' (known: " + join(PlacementRegistry::instance().names()) + ")");
  Placement p = entry->factory(setup);
  if (static_cast<int32_t>(p.rank_of_expert.size()) != setup.num_experts) fail("placement " + name + " placed the wrong number of experts");
  for (int32_t r : p.rank_of_expert)
    if (r < 0 || r >= setup.topology.ep_size()) fail("placement " + name + " used rank " + std::to_string(r) + " outside the EP group");
  return p;
}

}  // namespace moe
