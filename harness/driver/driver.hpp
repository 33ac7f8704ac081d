#pragma once
#include <functional>
#include <string>
#include <vector>

#include "harness/config/run_config.hpp"
#include "harness/core/comm.hpp"
#include "harness/metrics/metrics.hpp"
#include "harness/placement/planner.hpp"

namespace moe {

struct RunOutput {
  std::vector<std::string> routers;
  std::vector<RouterSummary> summaries;  // [router]
  std::vector<std::vector<StepLayerMetrics>>
      records;  // [router][step * layers + layer]; only with keep_history
  std::vector<std::vector<TrafficMatrix>> matrices;  // same index; only with keep_history
  Placement placement;
  std::vector<std::vector<std::string>>
      figure_names;  // [router]: names of StepLayerMetrics::figures
  int32_t first_step =
      0;  // --resume: the first step this run routed (records and summaries start there)
  int stop_signal = 0;  // SIGTERM/SIGINT stopped the run after a complete step (status interrupted)
};

struct RunOptions {
  bool keep_history = false;   // tests: keep every record and group dispatch matrix in memory
  bool console = true;         // rank 0 prints the header and table
  int64_t corrupt_token = -1;  // tests only: the mpi backend corrupts this received token on rank 0
  int64_t chunk_tokens = int64_t{1}
                         << 18;  // token-local routers: tokens generated and routed at a time
  // Called once setup is over (components built, file created) and the step loop starts: from then
  // on an error may hit one rank only, so main aborts the job instead of exiting quietly.
  std::function<void()> on_start;
};

// The only code that knows the order of the stages. Collective over `world`; `cfg` must have been
// through resolve_and_validate(). Writes cfg.out (parallel HDF5) when set.
RunOutput run_pipeline(const RunConfig& cfg, const Comm& world, const RunOptions& options = {});

std::string topology_json(const Topology& t);

// The placement planner's settings from a resolved configuration.
PlannerSpec planner_spec(const RunConfig& cfg);

}  // namespace moe
