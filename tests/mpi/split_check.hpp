#pragma once
// Shared by the collective routers' mpi tests: the batch of a slice of EP ranks, and the check
// that a process's plan equals the same tokens' plan when one process routes the whole group.
#include <algorithm>
#include <cmath>

#include "harness/routing/router.hpp"
#include "workloads/workload.hpp"

namespace moe::testing {

inline constexpr int32_t kSplitRanks = 8;  // EP ranks, split over the processes

// Zipf logits of EP ranks [first_rank, first_rank + ranks). mode 0: as generated; 1: rounded (many
// equal values); 2: every token has global token 0's logits (all scores tie).
inline TokenBatch split_batch(int32_t E, int64_t per_rank, int64_t first_rank, int64_t ranks, int mode) {
  WorkloadSetup ws;
  ws.num_experts = E;
  ws.num_layers = 1;
  ws.top_k = 2;
  ws.ep_size = kSplitRanks;
  ws.tokens_per_rank = per_rank;
  ws.seq_len = 32;
  ws.seed = 99;
  auto w = make_workload("zipf", ws, {{"s", "1.0"}});
  TokenBatch b;
  w->generate(1, 0, first_rank * per_rank, ranks * per_rank, b);
  if (mode == 1)
    for (float& z : b.logits) z = std::round(z);
  if (mode == 2) {
    TokenBatch first;
    w->generate(1, 0, 0, 1, first);
    for (int64_t t = 0; t < b.num_tokens; ++t) std::copy(first.logits.begin(), first.logits.end(), b.logits.begin() + t * E);
  }
  return b;
}

// Tokens of `got` (this process's batch starting at global token t0) whose experts or weights
// differ from `want` (the whole group's plan); first_bad = the first such global token. Counts
// instead of stopping: a rank that returned early would miss later collectives and hang the rest.
inline int64_t count_plan_differences(const RoutingPlan& got, const RoutingPlan& want, int64_t t0, int64_t& first_bad) {
  int64_t differ = 0;
  first_bad = -1;
  for (int64_t t = 0; t < got.num_tokens; ++t) {
    const bool same = got.count(t) == want.count(t0 + t) &&
                      std::equal(got.expert.begin() + got.offsets[t], got.expert.begin() + got.offsets[t + 1],
                                 want.expert.begin() + want.offsets[t0 + t]) &&
                      std::equal(got.weight.begin() + got.offsets[t], got.weight.begin() + got.offsets[t + 1],
                                 want.weight.begin() + want.offsets[t0 + t]);
    if (!same && differ++ == 0) first_bad = t0 + t;
  }
  return differ;
}

}  // namespace moe::testing
