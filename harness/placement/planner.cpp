#include "harness/placement/planner.hpp"

#include <algorithm>

#include "harness/core/error.hpp"

namespace moe {

PlacementLoads parse_placement_loads(const std::string& name) {
  if (name == "none") return PlacementLoads::none;
  if (name == "oracle") return PlacementLoads::oracle;
  if (name == "warmup") return PlacementLoads::warmup;
  if (name == "ema") return PlacementLoads::ema;
  throw InputError("--placement-loads: unknown value '" + name + "' (known: none, oracle, warmup, ema)");
}

int64_t moved_copies(const Placement& before, const Placement& after, int32_t num_experts) {
  int64_t moved = 0;
  std::vector<int32_t> was;
  for (int32_t e = 0; e < num_experts; ++e) {
    was.assign(before.ranks_of(e), before.ranks_of(e) + before.copies(e));
    for (int32_t i = 0; i < after.copies(e); ++i) {
      const auto it = std::find(was.begin(), was.end(), after.ranks_of(e)[i]);
      if (it == was.end()) ++moved;
      else was.erase(it);
    }
  }
  return moved;
}

PlacementPlanner::PlacementPlanner(const PlannerSpec& spec) : spec_(spec) {
  const bool uses_loads = placement_strategy(spec.placement).uses_loads;
  if (spec.loads != PlacementLoads::none && !uses_loads)
    throw InputError("--placement-loads: placement " + spec.placement + " does not use loads (load_balanced and eplb do)");
  if (spec.warmup_steps < 1) throw InputError("--placement-warmup: must be >= 1 (got " + std::to_string(spec.warmup_steps) + ")");
  if (spec.replace_every < 1) throw InputError("--replace-every: must be >= 1 (got " + std::to_string(spec.replace_every) + ")");
  if (!(spec.ema_decay >= 0 && spec.ema_decay < 1))
    throw InputError("--placement-ema: must be in [0, 1) (got " + std::to_string(spec.ema_decay) + ")");
  spec_.setup.expert_load.clear();
  const Placement first = make_placement(spec.placement, spec_.setup);  // equal loads
  current_.assign(static_cast<size_t>(spec.layers), first);
  previous_ = current_;
  moved_.assign(static_cast<size_t>(spec.layers), 0);
  load_.assign(static_cast<size_t>(spec.layers), std::vector<double>(static_cast<size_t>(spec.setup.num_experts), 0.0));
}

void PlacementPlanner::replace(int32_t layer, const std::vector<double>& load) {
  PlacementSetup s = spec_.setup;
  s.expert_load = load;
  Placement next = make_placement(spec_.placement, s);
  const int64_t moved = moe::moved_copies(current_[layer], next, spec_.setup.num_experts);
  previous_[layer] = std::move(current_[layer]);
  current_[layer] = std::move(next);
  moved_[layer] = moved;
}

const Placement& PlacementPlanner::placement(int32_t layer, const std::vector<int64_t>& demand) {
  if (spec_.loads == PlacementLoads::oracle) replace(layer, std::vector<double>(demand.begin(), demand.end()));
  return current_[static_cast<size_t>(layer)];
}

void PlacementPlanner::end_step(int32_t step, const std::vector<std::vector<int64_t>>& demand) {
  if (spec_.loads != PlacementLoads::oracle) std::fill(moved_.begin(), moved_.end(), 0);
  const int32_t L = spec_.layers;
  switch (spec_.loads) {
    case PlacementLoads::none:
    case PlacementLoads::oracle: return;
    case PlacementLoads::warmup:
      if (step >= spec_.warmup_steps) return;
      for (int32_t l = 0; l < L; ++l)
        for (size_t e = 0; e < load_[l].size(); ++e) load_[l][e] += static_cast<double>(demand[l][e]) / spec_.warmup_steps;
      if (step + 1 == spec_.warmup_steps)
        for (int32_t l = 0; l < L; ++l) replace(l, load_[l]);
      return;
    case PlacementLoads::ema:
      for (int32_t l = 0; l < L; ++l)
        for (size_t e = 0; e < load_[l].size(); ++e)
          load_[l][e] = step == 0 ? static_cast<double>(demand[l][e])
                                  : spec_.ema_decay * load_[l][e] + (1 - spec_.ema_decay) * static_cast<double>(demand[l][e]);
      if ((step + 1) % spec_.replace_every == 0)
        for (int32_t l = 0; l < L; ++l) replace(l, load_[l]);
      return;
  }
}

namespace {
void save_placement(StateWriter& out, const Placement& p) {
  out.put(p.slots_per_rank);
  out.put_vec(p.expert_of_slot);
  out.put_vec(p.rank_of_expert);
  out.put_vec(p.replica_offsets);
  out.put_vec(p.replica_ranks);
}
void load_placement(StateReader& in, Placement& p, int32_t num_experts) {
  p.slots_per_rank = in.get<int32_t>();
  in.get_vec(p.expert_of_slot);
  in.get_vec(p.rank_of_expert, static_cast<size_t>(num_experts));
  in.get_vec(p.replica_offsets);
  in.get_vec(p.replica_ranks);
  for (int32_t e : p.expert_of_slot)
    if (e < -1 || e >= num_experts) in.bad("an expert id out of range in a placement");
  if (!p.replica_offsets.empty() && (p.replica_offsets.size() != static_cast<size_t>(num_experts) + 1 ||
                                     p.replica_offsets.back() != static_cast<int64_t>(p.replica_ranks.size())))
    in.bad("replica lists of the wrong size");
}
}  // namespace

void PlacementPlanner::save_state(StateWriter& out) const {
  out.put(static_cast<uint64_t>(current_.size()));
  for (size_t l = 0; l < current_.size(); ++l) {
    save_placement(out, current_[l]);
    save_placement(out, previous_[l]);
    out.put_vec(load_[l]);
  }
  out.put_vec(moved_);
}

void PlacementPlanner::load_state(StateReader& in) {
  if (in.get<uint64_t>() != current_.size()) in.bad("placement planner: layer count");
  const int32_t E = spec_.setup.num_experts;
  for (size_t l = 0; l < current_.size(); ++l) {
    load_placement(in, current_[l], E);
    load_placement(in, previous_[l], E);
    in.get_vec(load_[l], static_cast<size_t>(E));
  }
  in.get_vec(moved_, current_.size());
}

}  // namespace moe
