#pragma once
#include <string>
#include <vector>

namespace moe {

struct RunConfig;

// What the registries hold, for validation and `moebench list`. Implemented by the driver, which
// is the one place that sees every stage.
std::vector<std::string> known_routers();
std::vector<std::string> known_workloads();
std::vector<std::string> known_placements();
std::vector<std::string> known_backends();
std::vector<std::string> known_gpu_routers();
// Builds the component to check its knobs; returns the problem, or "" when fine.
std::string check_router_args(const RunConfig& cfg, const std::string& router);
std::string check_workload_args(const RunConfig& cfg);
// Resolves --placement-loads auto and checks the placement options by building the first placement.
std::string check_placement(RunConfig& cfg);
// --workload trace: reads the trace's header, takes E, layers, steps and k from it where the
// options were not given, and adds a problem for each option that contradicts it.
void apply_trace_defaults(RunConfig& cfg, std::vector<std::string>& problems);

}  // namespace moe
