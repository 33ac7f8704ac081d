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

// file: loads read once from another run or a trace (offline EPLB), placed once before step 0.
enum class PlacementLoads { none, oracle, warmup, ema, file };
PlacementLoads parse_placement_loads(
    const std::string& name);  // none | oracle | warmup | ema | file:...

struct PlannerSpec {
  std::string placement;
  PlacementSetup setup;  // expert_load ignored (the planner supplies it)
  PlacementLoads loads = PlacementLoads::none;
  int32_t layers = 1;
  int32_t warmup_steps = 1;   // warmup: steps whose mean load places the experts once
  int32_t replace_every = 1;  // ema: re-place after every N steps
  double ema_decay = 0.5;     // ema: load <- decay * load + (1 - decay) * step load
  int64_t max_moves =
      0;  // > 0: a re-placement of a layer makes at most this many copy moves (the most valuable)
  std::vector<std::vector<double>> file_loads;  // file: [layers][E] loads to place once
  std::vector<Placement> file_placement;        // placement file:PATH: [layers] fixed placements
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
  // Loads from a file: the balancedness of each layer's placement on those (training) loads.
  const std::vector<double>& train_balancedness() const { return train_balancedness_; }
  // --resume: the placements, the moved counts and the load history, after end_step().
  void save_state(StateWriter& out) const;
  void load_state(StateReader& in);

 private:
  void replace(int32_t layer, const std::vector<double>& load);

  PlannerSpec spec_;
  std::vector<Placement> current_, previous_;
  std::vector<int64_t> moved_;
  std::vector<std::vector<double>> load_;  // [L][E]: warm-up sum or moving average
  std::vector<double> train_balancedness_;
};

// Balancedness (mean / max over ranks) of `placement` under expert loads `load`, each expert's
// load split evenly over its copies (the EPLB assumption). 1 when every load is 0.
double placement_balancedness(const Placement& placement, const std::vector<double>& load);

// Moves from `current` toward `target` (same slots per rank), at most `max_moves` expert copies
// moved (as moved_copies counts them). A move either changes one slot to an expert the target adds
// on that rank (1 copy; never an expert's last copy), or exchanges the experts of two slots on two
// ranks that each want the other's (2 copies: what a placement without spare copies needs).
// Greedy: each time the move that most lowers the largest rank load under `load` (then the sum of
// squared rank loads); stops early when no move helps. A budget that covers every move the target
// needs returns the target itself.
Placement limit_moves(const Placement& current, const Placement& target,
                      const std::vector<double>& load, int64_t max_moves, int32_t num_experts);

// `--placement file:PATH`: the physical-to-logical map of every layer from a JSON file, as SGLang's
// --init-expert-location takes it ({"physical_to_logical_map": [[...], ...]}) or as `moebench
// export placement --format json` writes it (the same key plus ep_size, experts...). [layers, R x
// slots]; one row applies to every layer. Throws InputError naming the file and the problem.
std::vector<Placement> read_placement_file(const std::string& path, int32_t num_experts,
                                           int32_t ranks, int32_t layers);

// Copies in `after` on a rank that held no copy of that expert in `before` (per expert, a
// multiset difference of ranks).
int64_t moved_copies(const Placement& before, const Placement& after, int32_t num_experts);

}  // namespace moe
