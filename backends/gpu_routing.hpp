#pragma once
#include <functional>
#include <map>
#include <string>

#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

// GPU implementations of routers (`run --route-on gpu`), keyed by the router's registry name.
// Registered only by builds with CUDA (backends/nccl); the plan must equal the CPU router's.
using GpuRouteFn = std::function<void(const TokenBatch& batch, int32_t top_k,
                                      const std::map<std::string, std::string>& router_args, RoutingPlan& plan)>;
using GpuRouteRegistry = Registry<GpuRouteFn>;

}  // namespace moe
