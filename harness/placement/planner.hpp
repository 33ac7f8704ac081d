#pragma once
// Where a run's placement comes from, layer by layer and step by step: a static strategy, or a
// load-aware one fed with expert loads (the step's own loads, a warm-up mean, or a moving
// average) and re-placed on a schedule. It also counts what each re-placement costs: the expert
// copies that land on a rank that did not hold that expert before.
#include <string>
#include <vector>

#include "harness/core/state_io.hpp"
#include "harness/placement/placement.hpp"

namespace moe {

enum class PlacementLoads { none, oracle, warmup, ema };
PlacementLoads parse_placement_loads(const std::string& name);  // none | oracle | warmup | ema

struct PlannerSpec {
  std::string placement;
  PlacementSetup setup;          // expert_load ignored (the planner supplies it)
  PlacementLoads loads = PlacementLoads::none;
  int32_t layers = 1;
  int32_t warmup_steps = 1;      // warmup: steps whose mean load places the experts once
  int32_t replace_every = 1;     // ema: re-place after every N steps
  double ema_decay = 0.5;        // ema: load <- decay * load + (1 - decay) * step load
};

class PlacementPlanner {
 public:
  explicit PlacementPlanner(const PlannerSpec& spec);
  // The placement of `layer` for the current step. With oracle loads, `demand` (this step's
  // expert demand of the layer, group-wide) places it first.
  const Placement& placement(int32_t layer, const std::vector<int64_t>& demand);
  // The placement this layer had before the last change (for the cost/saving of a re-placement).
  const Placement& previous(int32_t layer) const { return previous_[static_cast<size_t>(layer)]; }
  // Expert copies moved to adopt the current placement of `layer` at this step (0: unchanged).
  int64_t moved_copies(int32_t layer) const { return moved_[static_cast<size_t>(layer)]; }
  // Feeds the step's loads (warmup, ema) and re-places for the next step when due. Call once per
  // step with every layer's demand [L][E].
  void end_step(int32_t step, const std::vector<std::vector<int64_t>>& demand);
  // --resume: the placements, the moved counts and the load history, after end_step().
  void save_state(StateWriter& out) const;
  void load_state(StateReader& in);

 private:
  void replace(int32_t layer, const std::vector<double>& load);

  PlannerSpec spec_;
  std::vector<Placement> current_, previous_;
  std::vector<int64_t> moved_;
  std::vector<std::vector<double>> load_;  // [L][E]: warm-up sum or moving average
};

// Copies in `after` on a rank that held no copy of that expert in `before` (per expert, a
// multiset difference of ranks).
int64_t moved_copies(const Placement& before, const Placement& after, int32_t num_experts);

}  // namespace moe
