#pragma once
#include <string>

#include "harness/core/comm.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct CapacitySpec {
  double capacity_factor = 0;  // 0: unlimited
  int32_t top_k = 1;           // nominal k of the formula
  std::string policy = "position";  // position | probability
};

// C = ceil(CF * k * T / E) for T tokens in the capacity group; 0 when CF == 0 (unlimited).
int64_t expert_capacity(double capacity_factor, int32_t top_k, int64_t group_tokens, int32_t num_experts);

// Decides which assignments of `plan` survive capacity C over the group `group` (collective; pass
// Comm::self() with local token counts for a per-process capacity). The processes of the group
// hold consecutive global token ranges in rank order.
//  position:    keep each expert's first C assignments in (priority, global token) order, so every
//               first choice beats every second choice (GShard).
//  probability: keep each expert's C assignments of highest weight; equal weights go to the lower
//               global token index.
void apply_capacity(const RoutingPlan& plan, const CapacitySpec& spec, int64_t group_tokens, const Comm& group,
                    CapacityResult& out);

}  // namespace moe
