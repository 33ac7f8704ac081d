#include "harness/placement/planner.hpp"

#include <algorithm>

#include "harness/core/error.hpp"

namespace moe {

PlacementLoads parse_placement_loads(const std::string& name) {
  if (name == "none") return PlacementLoads::none;
  if (name == "oracle") return PlacementLoads::oracle;
  if (name == "warmup") return PlacementLoads::warmup;
  if (name == "ema") return PlacementLoads::ema;
  if (name.rfind("file:", 0) == 0) return PlacementLoads::file;
  throw InputError("--placement-loads: unknown value '" + name +
                   "' (known: none, oracle, warmup, ema, file:PATH)");
}

int64_t moved_copies(const Placement& before, const Placement& after, int32_t num_experts) {
  int64_t moved = 0;
  std::vector<int32_t> was;
  for (int32_t e = 0; e < num_experts; ++e) {
    was.assign(before.ranks_of(e), before.ranks_of(e) + before.copies(e));
    for (int32_t i = 0; i < after.copies(e); ++i) {
      const auto it = std::find(was.begin(), was.end(), after.ranks_of(e)[i]);
      if (it == was.end())
        ++moved;
      else
        was.erase(it);
    }
  }
  return moved;
}

PlacementPlanner::PlacementPlanner(const PlannerSpec& spec) : spec_(spec) {
  if (spec.max_moves < 0)
    throw InputError("--replace-max-moves: must be >= 0 (got " + std::to_string(spec.max_moves) +
                     ")");
  if (spec.placement.rfind("file:", 0) == 0) {  // a fixed placement per layer, read by the caller
    if (spec.loads != PlacementLoads::none)
      throw InputError("--placement-loads: --placement " + spec.placement +
                       " is fixed (it does not use loads)");
    if (spec.max_moves > 0)
      throw InputError("--replace-max-moves: --placement " + spec.placement +
                       " is fixed (never re-placed)");
    if (static_cast<int32_t>(spec.file_placement.size()) != spec.layers)
      fail("PlacementPlanner: file placement not loaded");
    current_ = spec.file_placement;
    previous_ = current_;
    moved_.assign(static_cast<size_t>(spec.layers), 0);
    load_.assign(static_cast<size_t>(spec.layers),
                 std::vector<double>(static_cast<size_t>(spec.setup.num_experts), 0.0));
    return;
  }
  const bool uses_loads = placement_strategy(spec.placement).uses_loads;
  if (spec.loads != PlacementLoads::none && !uses_loads)
    throw InputError("--placement-loads: placement " + spec.placement +
                     " does not use loads (load_balanced and eplb do)");
  if (spec.warmup_steps < 1)
    throw InputError("--placement-warmup: must be >= 1 (got " + std::to_string(spec.warmup_steps) +
                     ")");
  if (spec.replace_every < 1)
    throw InputError("--replace-every: must be >= 1 (got " + std::to_string(spec.replace_every) +
                     ")");
  if (!(spec.ema_decay >= 0 && spec.ema_decay < 1))
    throw InputError("--placement-ema: must be in [0, 1) (got " + std::to_string(spec.ema_decay) +
                     ")");
  if (spec.max_moves > 0 &&
      (spec.loads == PlacementLoads::none || spec.loads == PlacementLoads::file))
    throw InputError("--replace-max-moves: placement " + spec.placement +
                     " is never re-placed (--placement-loads " +
                     (spec.loads == PlacementLoads::none ? "none" : "file: places once") +
                     "; oracle, warmup and ema re-place)");
  spec_.setup.expert_load.clear();
  const Placement first = make_placement(spec.placement, spec_.setup);  // equal loads
  current_.assign(static_cast<size_t>(spec.layers), first);
  previous_ = current_;
  moved_.assign(static_cast<size_t>(spec.layers), 0);
  load_.assign(static_cast<size_t>(spec.layers),
               std::vector<double>(static_cast<size_t>(spec.setup.num_experts), 0.0));
  if (spec.loads == PlacementLoads::file) {  // offline EPLB: placed once, before the first step
    if (static_cast<int32_t>(spec.file_loads.size()) != spec.layers)
      fail("PlacementPlanner: file loads not loaded");
    for (int32_t l = 0; l < spec.layers; ++l) {
      PlacementSetup s = spec_.setup;
      s.expert_load = spec.file_loads[static_cast<size_t>(l)];
      current_[static_cast<size_t>(l)] = make_placement(spec_.placement, s);
      train_balancedness_.push_back(
          placement_balancedness(current_[static_cast<size_t>(l)], s.expert_load));
    }
    previous_ = current_;
  }
}

void PlacementPlanner::replace(int32_t layer, const std::vector<double>& load) {
  PlacementSetup s = spec_.setup;
  s.expert_load = load;
  Placement next = make_placement(spec_.placement, s);
  if (spec_.max_moves > 0)
    next = limit_moves(current_[layer], next, load, spec_.max_moves, spec_.setup.num_experts);
  const int64_t moved = moe::moved_copies(current_[layer], next, spec_.setup.num_experts);
  previous_[layer] = std::move(current_[layer]);
  current_[layer] = std::move(next);
  moved_[layer] = moved;
}

const Placement& PlacementPlanner::placement(int32_t layer, const std::vector<int64_t>& demand) {
  if (spec_.loads == PlacementLoads::oracle)
    replace(layer, std::vector<double>(demand.begin(), demand.end()));
  return current_[static_cast<size_t>(layer)];
}

void PlacementPlanner::end_step(int32_t step, const std::vector<std::vector<int64_t>>& demand) {
  if (spec_.loads != PlacementLoads::oracle) std::fill(moved_.begin(), moved_.end(), 0);
  const int32_t L = spec_.layers;
  switch (spec_.loads) {
    case PlacementLoads::none:
    case PlacementLoads::file:
    case PlacementLoads::oracle:
      return;
    case PlacementLoads::warmup:
      if (step >= spec_.warmup_steps) return;
      for (int32_t l = 0; l < L; ++l)
        for (size_t e = 0; e < load_[l].size(); ++e)
          load_[l][e] += static_cast<double>(demand[l][e]) / spec_.warmup_steps;
      if (step + 1 == spec_.warmup_steps)
        for (int32_t l = 0; l < L; ++l) replace(l, load_[l]);
      return;
    case PlacementLoads::ema:
      for (int32_t l = 0; l < L; ++l)
        for (size_t e = 0; e < load_[l].size(); ++e)
          load_[l][e] = step == 0 ? static_cast<double>(demand[l][e])
                                  : spec_.ema_decay * load_[l][e] +
                                        (1 - spec_.ema_decay) * static_cast<double>(demand[l][e]);
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
  if (!p.replica_offsets.empty() &&
      (p.replica_offsets.size() != static_cast<size_t>(num_experts) + 1 ||
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

namespace moe {

namespace {

std::vector<double> rank_loads(const std::vector<int32_t>& expert_of_slot, int32_t slots_per_rank,
                               const std::vector<double>& load,
                               const std::vector<int32_t>& copies) {
  std::vector<double> r(expert_of_slot.size() / static_cast<size_t>(std::max(1, slots_per_rank)),
                        0.0);
  for (size_t s = 0; s < expert_of_slot.size(); ++s) {
    const int32_t e = expert_of_slot[s];
    if (e >= 0 && copies[static_cast<size_t>(e)] > 0)
      r[s / static_cast<size_t>(slots_per_rank)] +=
          load[static_cast<size_t>(e)] / copies[static_cast<size_t>(e)];
  }
  return r;
}

std::vector<int32_t> copies_of(const std::vector<int32_t>& expert_of_slot, int32_t num_experts) {
  std::vector<int32_t> c(static_cast<size_t>(num_experts), 0);
  for (int32_t e : expert_of_slot)
    if (e >= 0) ++c[static_cast<size_t>(e)];
  return c;
}

}  // namespace

double placement_balancedness(const Placement& p, const std::vector<double>& load) {
  std::vector<int32_t> slots = p.expert_of_slot;
  int32_t per_rank = p.slots_per_rank;
  if (slots.empty()) {  // one copy per expert, described by rank_of_expert only
    const Placement q = Placement::from_ranks(
        p.rank_of_expert, *std::max_element(p.rank_of_expert.begin(), p.rank_of_expert.end()) + 1);
    slots = q.expert_of_slot;
    per_rank = q.slots_per_rank;
  }
  const auto r =
      rank_loads(slots, per_rank, load, copies_of(slots, static_cast<int32_t>(load.size())));
  double sum = 0, mx = 0;
  for (double x : r) sum += x, mx = std::max(mx, x);
  return mx > 0 ? sum / static_cast<double>(r.size()) / mx : 1.0;
}

Placement limit_moves(const Placement& current, const Placement& target,
                      const std::vector<double>& load, int64_t max_moves, int32_t num_experts) {
  if (current.slots_per_rank != target.slots_per_rank ||
      current.expert_of_slot.size() != target.expert_of_slot.size())
    return target;  // a different slot layout: no move-by-move path between them
  const size_t P = static_cast<size_t>(current.slots_per_rank);
  const size_t R = current.expert_of_slot.size() / P;
  // Per rank: slots whose expert the target does not keep there (removable), experts the target
  // adds.
  std::vector<std::vector<size_t>> removable(R);
  std::vector<std::vector<int32_t>> wanted(R);
  int64_t needed = 0;
  for (size_t r = 0; r < R; ++r) {
    std::vector<int32_t> want(
        target.expert_of_slot.begin() + static_cast<std::ptrdiff_t>(r * P),
        target.expert_of_slot.begin() + static_cast<std::ptrdiff_t>((r + 1) * P));
    for (size_t s = r * P; s < (r + 1) * P; ++s) {
      const auto it = std::find(want.begin(), want.end(), current.expert_of_slot[s]);
      if (it != want.end())
        want.erase(it);
      else
        removable[r].push_back(s);
    }
    needed += static_cast<int64_t>(
        std::count_if(want.begin(), want.end(), [](int32_t e) { return e >= 0; }));
    wanted[r] = std::move(want);
  }
  if (needed <= max_moves) return target;
  std::vector<int32_t> slots = current.expert_of_slot;
  std::vector<int32_t> copies = copies_of(slots, num_experts);
  auto score = [&]() {
    const auto rl = rank_loads(slots, static_cast<int32_t>(P), load, copies);
    double mx = 0, sq = 0;
    for (double x : rl) mx = std::max(mx, x), sq += x * x;
    return std::pair{mx, sq};
  };
  auto set = [&](size_t slot, int32_t e) {
    const int32_t a = slots[slot];
    if (a >= 0) --copies[static_cast<size_t>(a)];
    if (e >= 0) ++copies[static_cast<size_t>(e)];
    slots[slot] = e;
  };
  // Strictly better: a lower peak, or the same peak and a lower spread (relative tolerance).
  auto better = [](std::pair<double, double> x, std::pair<double, double> y) {
    return x.first < y.first * (1 - 1e-12) ||
           (x.first <= y.first * (1 + 1e-12) && x.second < y.second * (1 - 1e-12));
  };
  // A move: one slot changes to an expert the target wants on its rank (1 copy moved; never an
  // expert's last copy), or two slots of two ranks exchange experts each of them wants (2 copies,
  // what a placement without spare copies needs).
  struct Move {
    size_t r = 0, i = 0, j = 0;     // slot removable[r][i] takes wanted[r][j]
    size_t r2 = 0, i2 = 0, j2 = 0;  // swap: slot removable[r2][i2] takes wanted[r2][j2]
    bool swap = false;
  };
  auto best_score = score();
  int64_t budget = max_moves;
  while (budget > 0) {
    bool found = false;
    Move best;
    auto consider = [&](const Move& m) {
      const size_t s1 = removable[m.r][m.i];
      const int32_t a = slots[s1];
      set(s1, wanted[m.r][m.j]);
      int32_t b = -1;
      size_t s2 = 0;
      if (m.swap) {
        s2 = removable[m.r2][m.i2];
        b = slots[s2];
        set(s2, wanted[m.r2][m.j2]);
      }
      const auto sc = score();
      if (m.swap) set(s2, b);
      set(s1, a);
      if (better(sc, best_score)) best_score = sc, best = m, found = true;
    };
    for (size_t r = 0; r < R; ++r)
      for (size_t i = 0; i < removable[r].size(); ++i) {
        const int32_t a = slots[removable[r][i]];
        for (size_t j = 0; j < wanted[r].size(); ++j) {
          const int32_t b = wanted[r][j];
          if (b < 0) continue;
          if (a < 0 || copies[static_cast<size_t>(a)] > 1) consider(Move{r, i, j});
          if (budget < 2 || a < 0) continue;
          // Swap partners: a rank that wants `a` and holds a removable copy of `b`.
          for (size_t r2 = 0; r2 < R; ++r2) {
            if (r2 == r) continue;
            const auto ja = std::find(wanted[r2].begin(), wanted[r2].end(), a);
            if (ja == wanted[r2].end()) continue;
            for (size_t i2 = 0; i2 < removable[r2].size(); ++i2)
              if (slots[removable[r2][i2]] == b)
                consider(Move{r, i, j, r2, i2, static_cast<size_t>(ja - wanted[r2].begin()), true});
          }
        }
      }
    if (!found) break;
    set(removable[best.r][best.i], wanted[best.r][best.j]);
    if (best.swap) set(removable[best.r2][best.i2], wanted[best.r2][best.j2]);
    budget -= best.swap ? 2 : 1;
    auto drop = [&](size_t r, size_t i, size_t j) {
      removable[r].erase(removable[r].begin() + static_cast<std::ptrdiff_t>(i));
      wanted[r].erase(wanted[r].begin() + static_cast<std::ptrdiff_t>(j));
    };
    drop(best.r, best.i, best.j);
    if (best.swap) drop(best.r2, best.i2, best.j2);
  }
  Placement out;
  out.slots_per_rank = static_cast<int32_t>(P);
  out.expert_of_slot = std::move(slots);
  out.index(num_experts);
  return out;
}

}  // namespace moe
