#pragma once
#include <functional>
#include <string>

#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct PlacementSetup {
  int32_t num_experts = 0;
  Topology topology;
  uint64_t seed = 0;
};

// Static expert -> rank maps. Every expert gets exactly one rank in [0, ep_size).
using PlacementFactory = std::function<Placement(const PlacementSetup&)>;
using PlacementRegistry = Registry<PlacementFactory>;

// Throws InputError for an unknown name.
Placement make_placement(const std::string& name, const PlacementSetup& setup);

}  // namespace moe
