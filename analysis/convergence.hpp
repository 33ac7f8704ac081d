#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "analysis/results_reader.hpp"

namespace moe {

// How far a stateful router had settled in a results file. Stateful routers start somewhere and
// move (remoe's threshold controller toward k experts per token; deepseek_v3's bias toward
// balanced loads), so their first steps are a cold start, not their steady state.
struct RouterConvergence {
  std::string router;  // instance name
  std::string figure;  // the figure followed (mean over layers, per step)
  double target = 0;   // remoe: k; deepseek_v3: NaN (MaxVio has no reachable target)
  std::vector<double> per_step;
  int64_t settled_step = -1;  // first settled step (see router_convergence); -1: never
  std::string text;           // one line for people
};

// remoe (controller mode): mean_active_experts per step against the run's --top-k; settled at the
// first step within 5% of k or across k from the step before (the sign controller then oscillates
// around k by about one step of eta). deepseek_v3: MaxVio per step; settled from
// the first step after which MaxVio stays within 5% (relative, or 0.005 absolute) of the run's last
// step, and "still falling" when the last quarter of steps is more than 5% below the quarter
// before. Routers without state are not listed.
std::vector<RouterConvergence> router_convergence(const ResultsFile& f);

// Removes the first n steps of every router's records and figures (the steps a report is asked to
// treat as warm-up). Throws InputError when n is not below the completed steps.
void drop_warmup_steps(ResultsFile& f, int64_t n);

// A warning when the routers of a file differ in mean experts per token (before capacity) by more
// than 10% and the differing routers were not configured explicitly (--router-arg): their bytes
// and loads are then not a like-for-like comparison. "" when they agree.
std::string compute_mismatch_warning(const ResultsFile& f);

// The lines every report prints about a file's routers: the excluded warm-up steps, the
// compute-mismatch warning, and one convergence line per stateful router ("NOT ..." when it had
// not settled).
std::vector<std::string> router_notes(const ResultsFile& f);

}  // namespace moe
