#include "harness/capacity/capacity.hpp"

#include <algorithm>
#include <cmath>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"

namespace moe {

int64_t expert_capacity(double capacity_factor, int32_t top_k, int64_t group_tokens, int32_t num_experts) {
  if (capacity_factor <= 0) return 0;
  const double c = capacity_factor * top_k * static_cast<double>(group_tokens) / num_experts;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(c - 1e-9)));
}

namespace {

void keep_by_position(const RoutingPlan& plan, int64_t C, const Comm& group, std::vector<uint8_t>& kept,
                      std::vector<int64_t>& demand) {
  const int32_t E = plan.num_experts;
  int64_t local_priorities = 0;
  for (int64_t t = 0; t < plan.num_tokens; ++t) local_priorities = std::max(local_priorities, plan.count(t));
  const int64_t P = group.max(local_priorities);
  // counts[j][e]: this process's assignments to e at priority j.
  std::vector<int64_t> counts(static_cast<size_t>(P * E), 0);
  for (int64_t t = 0; t < plan.num_tokens; ++t)
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) ++counts[(a - plan.offsets[t]) * E + plan.expert[a]];
  std::vector<int64_t> before(counts);  // assignments on lower ranks at the same priority
  group.exscan_sum(before);
  std::vector<int64_t> totals(counts);
  group.sum(totals);
  // next[j][e]: global position of the next local assignment at (j, e).
  std::vector<int64_t> next(static_cast<size_t>(P * E));
  std::fill(demand.begin(), demand.end(), 0);
  for (int64_t j = 0; j < P; ++j)
    for (int32_t e = 0; e < E; ++e) {
      next[j * E + e] = demand[e] + before[j * E + e];
      demand[e] += totals[j * E + e];
    }
  for (int64_t t = 0; t < plan.num_tokens; ++t)
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
      const int64_t slot = (a - plan.offsets[t]) * E + plan.expert[a];
      kept[a] = (C == 0 || next[slot] < C) ? 1 : 0;
      ++next[slot];
    }
}

void keep_by_probability(const RoutingPlan& plan, int64_t C, const Comm& group, std::vector<uint8_t>& kept,
                         std::vector<int64_t>& demand) {
  const int32_t E = plan.num_experts;
  std::fill(demand.begin(), demand.end(), 0);
  for (int64_t a = 0; a < plan.assignments(); ++a) ++demand[plan.expert[a]];
  group.sum(demand);
  if (C == 0) {
    std::fill(kept.begin(), kept.end(), 1);
    return;
  }
  // Assignments are in token order, so "first globally" is the lower global token.
  const std::vector<int64_t> quota(static_cast<size_t>(E), C);
  select_top_per_bucket(group, E, plan.expert, plan.weight, quota, kept);
}

}  // namespace

void apply_capacity(const RoutingPlan& plan, const CapacitySpec& spec, int64_t group_tokens, const Comm& group,
                    CapacityResult& out) {
  const int32_t E = plan.num_experts;
  out.capacity = expert_capacity(spec.capacity_factor, spec.top_k, group_tokens, E);
  out.kept.assign(static_cast<size_t>(plan.assignments()), 1);
  out.expert_demand.assign(E, 0);
  if (spec.policy == "position") {
    keep_by_position(plan, out.capacity, group, out.kept, out.expert_demand);
  } else if (spec.policy == "probability") {
    keep_by_probability(plan, out.capacity, group, out.kept, out.expert_demand);
  } else {
    throw InputError("--drop-policy: unknown value '" + spec.policy + "' (known: position, probability)");
  }
  // One allreduce for the loads and the two drop counts.
  std::vector<int64_t> sums(static_cast<size_t>(E) + 2, 0);
  for (int64_t t = 0; t < plan.num_tokens; ++t) {
    int64_t kept_here = 0;
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
      if (out.kept[a]) {
        ++sums[plan.expert[a]];
        ++kept_here;
      } else {
        ++sums[E];
      }
    }
    if (plan.count(t) > 0 && kept_here == 0) ++sums[E + 1];
  }
  group.sum(sums);
  out.expert_load.assign(sums.begin(), sums.begin() + E);
  out.dropped_assignments = sums[E];
  out.dropped_tokens = sums[E + 1];
}

}  // namespace moe
