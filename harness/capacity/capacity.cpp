#include "harness/capacity/capacity.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "harness/core/error.hpp"

namespace moe {

int64_t expert_capacity(double capacity_factor, int32_t top_k, int64_t group_tokens, int32_t num_experts) {
  if (capacity_factor <= 0) return 0;
  const double c = capacity_factor * top_k * static_cast<double>(group_tokens) / num_experts;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(c - 1e-9)));
}

namespace {

// Monotone map float -> uint32 (larger float, larger key).
uint32_t order_key(float w) {
  const uint32_t u = std::bit_cast<uint32_t>(w);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

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
  // Per expert: (key, assignment) sorted by key descending, then token (assignment) ascending.
  std::vector<int64_t> start(static_cast<size_t>(E) + 1, 0);
  for (int64_t a = 0; a < plan.assignments(); ++a) ++start[plan.expert[a] + 1];
  for (int32_t e = 0; e < E; ++e) start[e + 1] += start[e];
  std::vector<std::pair<uint32_t, int64_t>> bucket(static_cast<size_t>(plan.assignments()));
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t a = 0; a < plan.assignments(); ++a) bucket[fill[plan.expert[a]]++] = {order_key(plan.weight[a]), a};
  }
  for (int32_t e = 0; e < E; ++e)
    std::sort(bucket.begin() + start[e], bucket.begin() + start[e + 1],
              [](const auto& x, const auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
  auto count_at_least = [&](int32_t e, uint64_t key) -> int64_t {
    if (key > 0xffffffffull) return 0;
    auto b = bucket.begin() + start[e], en = bucket.begin() + start[e + 1];
    return std::partition_point(b, en, [&](const auto& x) { return x.first >= key; }) - b;
  };
  for (int32_t e = 0; e < E; ++e) demand[e] = start[e + 1] - start[e];
  group.sum(demand);
  std::fill(kept.begin(), kept.end(), 1);
  if (C == 0) return;
  // Bisection on the key per expert, all experts at once: thr[e] = largest key with
  // global count(key >= thr) >= C.
  std::vector<uint64_t> lo(E, 0), hi(E, 0x100000000ull);
  std::vector<int64_t> cnt(E);
  for (int iter = 0; iter < 33; ++iter) {
    bool open = false;
    for (int32_t e = 0; e < E; ++e) {
      const uint64_t mid = (lo[e] + hi[e]) / 2;
      cnt[e] = (demand[e] > C && hi[e] - lo[e] > 1) ? count_at_least(e, mid) : 0;
    }
    group.sum(cnt);
    for (int32_t e = 0; e < E; ++e) {
      if (!(demand[e] > C && hi[e] - lo[e] > 1)) continue;
      const uint64_t mid = (lo[e] + hi[e]) / 2;
      (cnt[e] >= C ? lo[e] : hi[e]) = mid;
      open = open || hi[e] - lo[e] > 1;
    }
    if (!open) break;
  }
  // Strictly above the threshold: all kept. At the threshold: the lowest global tokens first.
  std::vector<int64_t> above(E), ties(E);
  for (int32_t e = 0; e < E; ++e) {
    above[e] = demand[e] > C ? count_at_least(e, lo[e] + 1) : 0;
    ties[e] = demand[e] > C ? count_at_least(e, lo[e]) - above[e] : 0;
  }
  std::vector<int64_t> above_global(above);
  group.sum(above_global);
  std::vector<int64_t> ties_before(ties);
  group.exscan_sum(ties_before);
  for (int32_t e = 0; e < E; ++e) {
    if (demand[e] <= C) continue;
    const int64_t tie_slots = C - above_global[e];
    const int64_t first_tie = start[e] + above[e];
    for (int64_t i = first_tie + ties[e]; i < start[e + 1]; ++i) kept[bucket[i].second] = 0;
    for (int64_t i = 0; i < ties[e]; ++i)
      if (ties_before[e] + i >= tie_slots) kept[bucket[first_tie + i].second] = 0;
  }
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
