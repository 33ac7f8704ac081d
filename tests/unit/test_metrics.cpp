#include <gtest/gtest.h>

#include "harness/metrics/metrics.hpp"

using namespace moe;

TEST(TransitionFigures, HandComputed) {
  TokenBatch b;
  b.num_tokens = 8;
  b.num_experts = 8;
  b.tokens_per_rank = 4;  // two EP ranks in this batch
  b.sequence.assign(8, 0);
  b.position = {0, 1, 2, 3, 4, 5, 6, 7};
  b.domain = {0, 0, 1, 1, 1, 0, 0, 0};
  b.experts_per_domain = 1;
  b.domain_experts = {5, 7};  // domain 0 -> expert 5, domain 1 -> expert 7
  RoutingPlan p;
  p.reset(8, 8, 16);
  for (int t = 0; t < 8; ++t) {
    p.expert.insert(p.expert.end(), {7, 5});
    p.weight.insert(p.weight.end(), {t == 4 ? 0.5f : 0.6f, t == 4 ? 0.5f : 0.4f});
    p.offsets[t + 1] = 2 * (t + 1);
  }
  // Transitions: t=1 (-> domain 1, correct 7: first choice, weight .6) and t=4 (-> domain 0,
  // correct 5: second choice, weight .5). t=3 -> 4 crosses the EP-rank boundary and keeps its domain.
  const auto f = transition_figures(b, p, Comm::self());
  ASSERT_EQ(f.size(), transition_figure_names().size());
  EXPECT_EQ(f[0], 2);
  EXPECT_DOUBLE_EQ(f[1], 0.5);
  EXPECT_NEAR(f[2], (0.6 + 0.5) / 2, 1e-7);
  EXPECT_DOUBLE_EQ(f[3], 0.5);
  EXPECT_DOUBLE_EQ(f[4], 1.0);
  EXPECT_DOUBLE_EQ(f[6], 1.0);
}
