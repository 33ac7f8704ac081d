// expert_choice under mpiexec -n 1/2/4: the plan of this process's tokens, routed collectively over
// MPI_COMM_WORLD, is bit-identical to the same tokens' plan when one process routes the whole group
// alone (every rank recomputes that reference on MPI_COMM_SELF); also with many tied scores, where
// ties must go to the globally first token whichever process holds it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "harness/routing/router.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

constexpr int32_t kRanks = 8;  // EP ranks, split over the processes

// mode 0: zipf logits; 1: rounded (many equal values); 2: every token has global token 0's logits
// (all scores tie, so ties decide everything).
TokenBatch make_batch(int32_t E, int64_t per_rank, int64_t first_rank, int64_t ranks, int mode) {
  WorkloadSetup ws;
  ws.num_experts = E;
  ws.num_layers = 1;
  ws.top_k = 2;
  ws.ep_size = kRanks;
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

}  // namespace

TEST(ExpertChoiceMpi, IdenticalToOneProcessOnAnySplit) {
  const Comm world = Comm::world();
  ASSERT_EQ(kRanks % world.size(), 0);
  const int64_t here = kRanks / world.size();
  for (int mode : {0, 1, 2})
    for (const char* c : {"2", "0.75"}) {
      const int32_t E = 16;
      const int64_t per_rank = 53;
      RouterSetup s{E, 2, 1, Topology{}};
      auto dist = make_router("expert_choice", s, {{"c", c}});
      auto alone = make_router("expert_choice", s, {{"c", c}});
      const TokenBatch mine = make_batch(E, per_rank, world.rank() * here, here, mode);
      const TokenBatch all = make_batch(E, per_rank, 0, kRanks, mode);
      RoutingPlan got, want;
      dist->route(mine, world, got);
      alone->route(all, Comm::self(), want);
      const int64_t t0 = mine.first_token;
      ASSERT_EQ(got.num_tokens, mine.num_tokens);
      // Count differences instead of stopping at the first: a rank that left early would miss the
      // collectives below and hang the others.
      int64_t differ = 0, first_bad = -1;
      for (int64_t t = 0; t < mine.num_tokens; ++t) {
        const bool same = got.count(t) == want.count(t0 + t) &&
                          std::equal(got.expert.begin() + got.offsets[t], got.expert.begin() + got.offsets[t + 1],
                                     want.expert.begin() + want.offsets[t0 + t]) &&
                          std::equal(got.weight.begin() + got.offsets[t], got.weight.begin() + got.offsets[t + 1],
                                     want.weight.begin() + want.offsets[t0 + t]);
        if (!same && differ++ == 0) first_bad = t0 + t;
      }
      EXPECT_EQ(differ, 0) << "first differing token " << first_bad << " mode=" << mode << " c=" << c;
      // Every expert takes exactly C = ceil(T*c/E) tokens over the group.
      std::vector<int64_t> load(E, 0);
      for (int32_t e : got.expert) ++load[e];
      world.sum(load);
      const int64_t C = static_cast<int64_t>(std::ceil(std::atof(c) * static_cast<double>(per_rank * kRanks) / E - 1e-9));
      for (int32_t e = 0; e < E; ++e) ASSERT_EQ(load[e], C) << "expert " << e << " mode=" << mode;
      EXPECT_EQ(dist->figures(), alone->figures()) << "mode=" << mode << " c=" << c;
    }
}
