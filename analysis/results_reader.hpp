#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness/metrics/metrics.hpp"

namespace moe {

// A results file read back with nothing but the file (no config, no cluster). Scalars only for
// every (step, layer) record; the vectors (loads, matrices) stay in the file.
struct ResultsFile {
  std::string path;
  std::string status;  // complete | partial
  std::string config_json, command_line, git_sha, moebench_version, topology_json, hosts;
  int64_t format_version = 0;
  int64_t steps_done = 0, steps_planned = 0, layers = 0, experts = 0, ep_size = 0, world_size = 0;
  int64_t warmup_steps_excluded = 0;  // report --warmup-steps N: the records start at step N
  std::vector<std::string> routers;
  // --trace-tail: the model ("none"), its parameters (JSON), and the routers whose routing read
  // the completed logits: their figures carry the completion's error.
  std::string trace_tail = "none", trace_tail_params;
  std::set<std::string> tail_routers;
  std::string tail_mark(const std::string& router) const {
    return tail_routers.count(router) ? "tail completed (" + trace_tail + ")" : "";
  }
  std::map<std::string, std::vector<StepLayerMetrics>>
      records;  // router -> [step * layers + layer]
  std::map<std::string, std::map<std::string, std::vector<double>>>
      figures;  // router -> name -> [step * layers + layer]
  // Routers placed once from another run's or a trace's loads (--placement-loads file:): [layers]
  // balancedness of the placement on those training loads.
  std::map<std::string, std::vector<double>> train_gpu_balancedness;
};

// Offline placement of one router: balancedness on its training loads against this run's (test)
// loads, both EPLB's estimate (mean/max of rank loads, experts split evenly over their copies).
struct OfflinePlacementGap {
  std::string router;
  double train = 0;   // mean over layers of train_gpu_balancedness
  double test = 0;    // mean over steps and layers of placement_balancedness
  double gap = 0;     // train - test: what the placement loses on data it was not made from
  double served = 0;  // mean gpu_balancedness actually served (replica selection, capacity)
};
std::vector<OfflinePlacementGap> offline_placement_gaps(const ResultsFile& file);

// Throws InputError naming the file for a missing file, a non-moebench file or an unknown version.
ResultsFile read_results(const std::string& path);

// `moebench report FILE`: header, partial-file warning and the per-router table, from the file
// alone.
std::string format_report(const ResultsFile& file);

}  // namespace moe
