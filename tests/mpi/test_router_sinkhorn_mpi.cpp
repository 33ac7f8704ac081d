// sinkhorn under mpiexec -n 1/2/4: the plan of this process's tokens, routed collectively over
// MPI_COMM_WORLD, is bit-identical to the same tokens' plan when one process routes the whole group
// alone (every rank recomputes that reference on MPI_COMM_SELF): the column sums, the iteration count
// and the convergence test must not depend on the process count. Also with many tied logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "harness/routing/router.hpp"
#include "tests/mpi/split_check.hpp"

using namespace moe;

using moe::testing::kSplitRanks;

TEST(SinkhornMpi, IdenticalToOneProcessOnAnySplit) {
  const Comm world = Comm::world();
  ASSERT_EQ(kSplitRanks % world.size(), 0);
  const int64_t here = kSplitRanks / world.size();
  for (int mode : {0, 1, 2})
    for (const char* c : {"1", "4"}) {
      const int32_t E = 16;
      const int64_t per_rank = 53;
      RouterSetup s{E, std::atoi(c), 1, Topology{}};
      auto dist = make_router("sinkhorn", s, {});
      auto alone = make_router("sinkhorn", s, {});
      const TokenBatch mine = moe::testing::split_batch(E, per_rank, world.rank() * here, here, mode);
      const TokenBatch all = moe::testing::split_batch(E, per_rank, 0, kSplitRanks, mode);
      RoutingPlan got, want;
      dist->route(mine, world, got);
      alone->route(all, Comm::self(), want);
      const int64_t t0 = mine.first_token;
      ASSERT_EQ(got.num_tokens, mine.num_tokens);
      int64_t first_bad = -1;
      const int64_t differ = moe::testing::count_plan_differences(got, want, t0, first_bad);
      EXPECT_EQ(differ, 0) << "first differing token " << first_bad << " mode=" << mode << " k=" << c;
      EXPECT_EQ(dist->figures(), alone->figures()) << "mode=" << mode << " k=" << c;
    }
}
