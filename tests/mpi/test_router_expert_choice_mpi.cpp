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
#include "tests/mpi/split_check.hpp"

using namespace moe;

using moe::testing::kSplitRanks;

TEST(ExpertChoiceMpi, IdenticalToOneProcessOnAnySplit) {
  const Comm world = Comm::world();
  ASSERT_EQ(kSplitRanks % world.size(), 0);
  const int64_t here = kSplitRanks / world.size();
  for (int mode : {0, 1, 2})
    for (const char* c : {"2", "0.75"}) {
      const int32_t E = 16;
      const int64_t per_rank = 53;
      RouterSetup s{E, 2, 1, Topology{}};
      auto dist = make_router("expert_choice", s, {{"c", c}});
      auto alone = make_router("expert_choice", s, {{"c", c}});
      const TokenBatch mine = moe::testing::split_batch(E, per_rank, world.rank() * here, here, mode);
      const TokenBatch all = moe::testing::split_batch(E, per_rank, 0, kSplitRanks, mode);
      RoutingPlan got, want;
      dist->route(mine, world, got);
      alone->route(all, Comm::self(), want);
      const int64_t t0 = mine.first_token;
      ASSERT_EQ(got.num_tokens, mine.num_tokens);
      int64_t first_bad = -1;
      const int64_t differ = moe::testing::count_plan_differences(got, want, t0, first_bad);
      EXPECT_EQ(differ, 0) << "first differing token " << first_bad << " mode=" << mode << " c=" << c;
      // Every expert takes exactly C = ceil(T*c/E) tokens over the group.
      std::vector<int64_t> load(E, 0);
      for (int32_t e : got.expert) ++load[e];
      world.sum(load);
      const int64_t C = static_cast<int64_t>(std::ceil(std::atof(c) * static_cast<double>(per_rank * kSplitRanks) / E - 1e-9));
      for (int32_t e = 0; e < E; ++e) ASSERT_EQ(load[e], C) << "expert " << e << " mode=" << mode;
      EXPECT_EQ(dist->figures(), alone->figures()) << "mode=" << mode << " c=" << c;
    }
}
