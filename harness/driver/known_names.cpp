#include "harness/config/known_names.hpp"

#include "backends/backend.hpp"
#include "backends/gpu_routing.hpp"
#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/placement/placement.hpp"
#include "harness/routing/router.hpp"
#include "workloads/workload.hpp"

namespace moe {

std::vector<std::string> known_routers() { return RouterRegistry::instance().names(); }
std::vector<std::string> known_workloads() { return WorkloadRegistry::instance().names(); }
std::vector<std::string> known_placements() { return PlacementRegistry::instance().names(); }
std::vector<std::string> known_backends() { return BackendRegistry::instance().names(); }
std::vector<std::string> known_gpu_routers() { return GpuRouteRegistry::instance().names(); }

std::string check_router_args(const RunConfig& cfg, const std::string& router) {
  try {
    RouterSetup rs{cfg.experts, cfg.top_k, cfg.layers, cfg.topology()};
    make_router(router, rs, cfg.router_args.count(router) ? cfg.router_args.at(router) : std::map<std::string, std::string>{});
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string check_workload_args(const RunConfig& cfg) {
  try {
    WorkloadSetup ws{cfg.experts, cfg.layers, cfg.top_k, cfg.ep_size, cfg.tokens_per_rank, cfg.seq_len, cfg.seed};
    make_workload(cfg.workload, ws, cfg.workload_args.count(cfg.workload) ? cfg.workload_args.at(cfg.workload) : std::map<std::string, std::string>{});
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace moe
