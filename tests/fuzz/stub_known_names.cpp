// The component registries, stubbed for the config fuzz target (harness/config/known_names.hpp):
// the real ones build routers, placements and workloads, which the parser does not need.
#include "harness/config/known_names.hpp"

namespace moe {
std::vector<std::string> known_routers() {
  return {"softmax_topk", "sigmoid_topk"};
}
std::vector<std::string> known_workloads() {
  return {"zipf", "uniform", "trace"};
}
std::vector<std::string> known_placements() {
  return {"contiguous", "round_robin"};
}
std::vector<std::string> known_backends() {
  return {"sim", "mpi"};
}
std::vector<std::string> known_gpu_routers() {
  return {};
}
std::string check_router_args(const RunConfig&, const std::string&) {
  return "";
}
std::string check_workload_args(const RunConfig&) {
  return "";
}
std::string check_placement(RunConfig&) {
  return "";
}
void apply_trace_defaults(RunConfig&, std::vector<std::string>&) {}
}  // namespace moe
