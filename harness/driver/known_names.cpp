#include "harness/config/known_names.hpp"

#include "backends/backend.hpp"
#include "backends/gpu_routing.hpp"
#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/driver/loads_file.hpp"
#include "harness/placement/placement.hpp"
#include "harness/placement/planner.hpp"
#include "harness/routing/router.hpp"
#include "workloads/trace_file.hpp"
#include "workloads/workload.hpp"

namespace moe {

std::vector<std::string> known_routers() {
  return RouterRegistry::instance().names();
}
std::vector<std::string> known_workloads() {
  return WorkloadRegistry::instance().names();
}
std::vector<std::string> known_placements() {
  return PlacementRegistry::instance().names();
}
std::vector<std::string> known_backends() {
  return BackendRegistry::instance().names();
}
std::vector<std::string> known_gpu_routers() {
  return GpuRouteRegistry::instance().names();
}

std::string check_router_args(const RunConfig& cfg, const std::string& router) {
  try {
    RouterSetup rs{cfg.experts, cfg.top_k, cfg.layers, cfg.topology()};
    make_router(router, rs,
                cfg.router_args.count(router) ? cfg.router_args.at(router)
                                              : std::map<std::string, std::string>{});
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string check_workload_args(const RunConfig& cfg) {
  try {
    WorkloadSetup ws{cfg.experts,         cfg.layers,  cfg.top_k, cfg.ep_size,
                     cfg.tokens_per_rank, cfg.seq_len, cfg.seed};
    ws.trace_file = cfg.trace_file;
    make_workload(cfg.workload, ws,
                  cfg.workload_args.count(cfg.workload) ? cfg.workload_args.at(cfg.workload)
                                                        : std::map<std::string, std::string>{});
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

PlannerSpec planner_spec(const RunConfig& cfg) {
  PlannerSpec ps;
  ps.placement = cfg.placement;
  ps.setup.num_experts = cfg.experts;
  ps.setup.topology = cfg.topology();
  ps.setup.seed = cfg.seed;
  ps.setup.redundant_experts = cfg.redundant_experts;
  ps.setup.expert_groups = cfg.expert_groups;
  ps.loads = parse_placement_loads(cfg.placement_loads);
  ps.layers = cfg.layers;
  ps.warmup_steps = cfg.placement_warmup;
  ps.replace_every = cfg.replace_every;
  ps.ema_decay = cfg.placement_ema;
  ps.max_moves = cfg.replace_max_moves;
  if (cfg.placement.rfind("file:", 0) == 0)
    ps.file_placement = read_placement_file(cfg.placement.substr(5), cfg.experts,
                                            cfg.topology().ep_size(), cfg.layers);
  if (ps.loads == PlacementLoads::file)
    ps.file_loads =
        read_loads_file(cfg.placement_loads.substr(5), cfg.experts, cfg.layers, cfg.top_k);
  return ps;
}

std::string check_placement(RunConfig& cfg) {
  try {
    const bool from_file = cfg.placement.rfind("file:", 0) == 0;
    if (cfg.placement_loads == "auto")
      cfg.placement_loads =
          !from_file && placement_strategy(cfg.placement).uses_loads ? "ema" : "none";
    PlannerSpec ps = planner_spec(cfg);
    PlacementPlanner check(ps);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

void apply_trace_defaults(RunConfig& cfg, std::vector<std::string>& problems) {
  try {
    const TraceReader reader(cfg.trace_file);
    const TraceHeader& h = reader.header();
    auto given = [&](const char* name) { return cfg.explicit_options.count(name) > 0; };
    if (!given("experts"))
      cfg.experts = h.num_experts;
    else if (cfg.experts != h.num_experts)
      problems.push_back("--experts " + std::to_string(cfg.experts) + ": the trace " +
                         cfg.trace_file + " has num_experts = " + std::to_string(h.num_experts));
    if (!given("layers")) cfg.layers = h.num_layers;
    if (!given("steps")) cfg.steps = h.num_steps;
    if (h.counts()) {  // each assignment replays as a token with one expert
      if (given("top-k") && cfg.top_k != 1)
        problems.push_back(
            "--top-k " + std::to_string(cfg.top_k) + ": the count-only trace " + cfg.trace_file +
            " replays each assignment as a token with one expert, so k = 1 (capacity C = "
            "ceil(CF x assignments / E) is then the model's)");
      cfg.top_k = 1;
    } else if (given("count-sources")) {
      problems.push_back("--count-sources: only for a count-only trace (" + cfg.trace_file +
                         " is kind " + h.kind + ")");
    }
    if (!given("top-k") && h.top_k > 0 && !h.counts()) cfg.top_k = h.top_k;
    if (given("tokens-per-rank"))
      problems.push_back(
          "--tokens-per-rank: does not apply to --workload trace (the trace's steps set the "
          "tokens; " +
          std::to_string(h.num_tokens / h.num_steps) + " per step on average in " + cfg.trace_file +
          ")");
  } catch (const InputError& e) {
    problems.push_back(std::string("--trace: ") + e.what());
  }
}

}  // namespace moe
