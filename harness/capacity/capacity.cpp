#include "harness/capacity/capacity.hpp"

#include <algorithm>
#include <cmath>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"

namespace moe {

DropPolicy parse_drop_policy(const std::string& name, const std::string& option) {
  if (name == "choice_first" || name == "position") return DropPolicy::choice_first;
  if (name == "token_order") return DropPolicy::token_order;
  if (name == "probability") return DropPolicy::probability;
  throw InputError(option + ": unknown value '" + name +
                   "' (known: choice_first, token_order, probability; position = choice_first)");
}

const char* drop_policy_name(DropPolicy p) {
  switch (p) {
    case DropPolicy::choice_first:
      return "choice_first";
    case DropPolicy::token_order:
      return "token_order";
    case DropPolicy::probability:
      return "probability";
  }
  return "?";
}

CapacityRounding parse_capacity_rounding(const std::string& name) {
  if (name == "exact") return CapacityRounding::exact;
  if (name == "framework") return CapacityRounding::framework;
  throw InputError("--capacity-rounding: unknown value '" + name + "' (known: exact, framework)");
}

int64_t expert_capacity(double capacity_factor, int32_t top_k, int64_t group_tokens,
                        int32_t num_experts, CapacityRounding rounding) {
  if (capacity_factor <= 0) return 0;
  double c = 0;
  if (rounding == CapacityRounding::framework) {
    // Megatron-Core get_capacity: math.ceil((num_tokens / num_experts) * capacity_factor) with
    // num_tokens = T * k, in Python floats (IEEE double), no tolerance.
    c = std::ceil(static_cast<double>(group_tokens * top_k) / num_experts * capacity_factor);
  } else {
    c = std::ceil(capacity_factor * top_k * static_cast<double>(group_tokens) / num_experts - 1e-9);
  }
  return std::max<int64_t>(1, static_cast<int64_t>(c));
}

namespace {

// The assignments of tokens [t0, t1) of `plan`; `group` holds consecutive token ranges in rank
// order (Comm::self() for one range). `demand` gets the group-wide demand added.
struct Range {
  int64_t t0, t1;
};

void keep_choice_first(const RoutingPlan& plan, Range r, int64_t C, const Comm& group,
                       std::vector<uint8_t>& kept, std::vector<int64_t>& demand) {
  const int32_t E = plan.num_experts;
  int64_t local_priorities = 0;
  for (int64_t t = r.t0; t < r.t1; ++t)
    local_priorities = std::max(local_priorities, plan.count(t));
  const int64_t P = group.max(local_priorities);
  // counts[j][e]: this process's assignments to e at priority j.
  std::vector<int64_t> counts(static_cast<size_t>(P * E), 0);
  for (int64_t t = r.t0; t < r.t1; ++t)
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a)
      ++counts[(a - plan.offsets[t]) * E + plan.expert[a]];
  std::vector<int64_t> before(counts);  // assignments on lower ranks at the same priority
  group.exscan_sum(before);
  std::vector<int64_t> totals(counts);
  group.sum(totals);
  // next[j][e]: group-wide position of the next local assignment at (j, e).
  std::vector<int64_t> next(static_cast<size_t>(P * E));
  std::vector<int64_t> seen(static_cast<size_t>(E), 0);
  for (int64_t j = 0; j < P; ++j)
    for (int32_t e = 0; e < E; ++e) {
      next[j * E + e] = seen[e] + before[j * E + e];
      seen[e] += totals[j * E + e];
    }
  for (int32_t e = 0; e < E; ++e) demand[e] += seen[e];
  for (int64_t t = r.t0; t < r.t1; ++t)
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
      const int64_t slot = (a - plan.offsets[t]) * E + plan.expert[a];
      kept[a] = (C == 0 || next[slot] < C) ? 1 : 0;
      ++next[slot];
    }
}

void keep_token_order(const RoutingPlan& plan, Range r, int64_t C, const Comm& group,
                      std::vector<uint8_t>& kept, std::vector<int64_t>& demand) {
  const int32_t E = plan.num_experts;
  std::vector<int64_t> counts(static_cast<size_t>(E), 0);
  for (int64_t a = plan.offsets[r.t0]; a < plan.offsets[r.t1]; ++a) ++counts[plan.expert[a]];
  std::vector<int64_t> next(counts);  // becomes: assignments to e on lower ranks
  group.exscan_sum(next);
  group.sum(counts);
  for (int32_t e = 0; e < E; ++e) demand[e] += counts[e];
  for (int64_t a = plan.offsets[r.t0]; a < plan.offsets[r.t1]; ++a)
    kept[a] = (C == 0 || next[plan.expert[a]]++ < C) ? 1 : 0;
}

void keep_by_probability(const RoutingPlan& plan, Range r, int64_t C, const Comm& group,
                         std::vector<uint8_t>& kept, std::vector<int64_t>& demand) {
  const int32_t E = plan.num_experts;
  const int64_t a0 = plan.offsets[r.t0], a1 = plan.offsets[r.t1];
  std::vector<int64_t> counts(static_cast<size_t>(E), 0);
  for (int64_t a = a0; a < a1; ++a) ++counts[plan.expert[a]];
  group.sum(counts);
  for (int32_t e = 0; e < E; ++e) demand[e] += counts[e];
  if (C == 0) {
    std::fill(kept.begin() + a0, kept.begin() + a1, uint8_t{1});
    return;
  }
  // Assignments are in token order, so "first globally" is the lower global token.
  const std::vector<int64_t> quota(static_cast<size_t>(E), C);
  std::vector<uint8_t> selected;
  const std::span<const int32_t> experts(plan.expert.data() + a0, static_cast<size_t>(a1 - a0));
  const std::span<const float> weights(plan.weight.data() + a0, static_cast<size_t>(a1 - a0));
  select_top_per_bucket(group, E, experts, weights, quota, selected);
  std::copy(selected.begin(), selected.end(), kept.begin() + a0);
}

void keep(const RoutingPlan& plan, DropPolicy policy, Range r, int64_t C, const Comm& group,
          std::vector<uint8_t>& kept, std::vector<int64_t>& demand) {
  switch (policy) {
    case DropPolicy::choice_first:
      keep_choice_first(plan, r, C, group, kept, demand);
      return;
    case DropPolicy::token_order:
      keep_token_order(plan, r, C, group, kept, demand);
      return;
    case DropPolicy::probability:
      keep_by_probability(plan, r, C, group, kept, demand);
      return;
  }
}

// Loads and drop counts of `kept`, summed over `group` (one allreduce).
void count_kept(const RoutingPlan& plan, const Comm& group, CapacityResult& out) {
  const int32_t E = plan.num_experts;
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

}  // namespace

void apply_capacity(const RoutingPlan& plan, const CapacitySpec& spec, int64_t group_tokens,
                    const Comm& group, CapacityResult& out) {
  const int32_t E = plan.num_experts;
  const DropPolicy policy = parse_drop_policy(spec.policy);
  out.capacity = expert_capacity(spec.capacity_factor, spec.top_k, group_tokens, E, spec.rounding);
  out.kept.assign(static_cast<size_t>(plan.assignments()), 1);
  out.expert_demand.assign(E, 0);
  keep(plan, policy, {0, plan.num_tokens}, out.capacity, group, out.kept, out.expert_demand);
  count_kept(plan, group, out);
}

void apply_capacity_per_rank(const RoutingPlan& plan, const CapacitySpec& spec,
                             const TokenBatch& layout, CapacityResult& out) {
  const int32_t E = plan.num_experts;
  const DropPolicy policy = parse_drop_policy(spec.policy);
  if (plan.num_tokens != layout.num_tokens)
    throw Error("capacity: the plan has " + std::to_string(plan.num_tokens) +
                " tokens, the rank layout " + std::to_string(layout.num_tokens));
  out.capacity = 0;
  out.kept.assign(static_cast<size_t>(plan.assignments()), 1);
  out.expert_demand.assign(E, 0);
  const Comm self = Comm::self();
  for (int32_t i = 0; i < layout.ranks_here(); ++i) {
    const Range r{layout.rank_begin(i), layout.rank_end(i)};
    const int64_t C =
        expert_capacity(spec.capacity_factor, spec.top_k, r.t1 - r.t0, E, spec.rounding);
    if (r.t1 > r.t0) out.capacity = std::max(out.capacity, C);
    keep(plan, policy, r, C, self, out.kept, out.expert_demand);
  }
  count_kept(plan, self, out);
}

}  // namespace moe
