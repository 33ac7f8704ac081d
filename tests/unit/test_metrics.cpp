#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "harness/metrics/metrics.hpp"

using namespace moe;

// Among-chosen figures (a router without a full distribution).
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
  // correct 5: second choice, weight .5). t=3 -> 4 crosses the EP-rank boundary and keeps its
  // domain.
  const auto f = transition_figures(b, p, Comm::self());
  ASSERT_EQ(f.size(), transition_figure_names(false).size());
  EXPECT_EQ(transition_figure_names(false)[2], "p_correct_among_chosen_at_transition");
  EXPECT_EQ(f[0], 2);
  EXPECT_DOUBLE_EQ(f[1], 0.5);
  EXPECT_NEAR(f[2], (0.6 + 0.5) / 2, 1e-7);
  EXPECT_DOUBLE_EQ(f[3], 0.5);
  EXPECT_DOUBLE_EQ(f[4], 1.0);
  EXPECT_DOUBLE_EQ(f[6], 1.0);
}

// Full-distribution figures: p_correct is the softmax mass over all E experts, coverage@K uses the
// full ranking (not the k chosen), ties to the lower index.
TEST(TransitionFigures, FullDistribution) {
  TokenBatch b;
  b.num_tokens = 4;
  b.num_experts = 4;
  b.sequence.assign(4, 0);
  b.position = {0, 1, 2, 3};
  b.domain = {0, 1, 1, 0};
  b.experts_per_domain = 2;
  b.domain_experts = {0, -1, 2, 3};  // domain 0 -> {0}, domain 1 -> {2, 3}
  // Scores: token 0 -> transition to domain 1 (correct 2, 3); token 2 -> to domain 0 (correct 0).
  const std::vector<std::vector<float>> z = {
      {3.f, 1.f, 1.f, 0.f}, {0.f, 0.f, 0.f, 0.f}, {1.f, 2.f, 1.f, 0.5f}, {0.f, 0.f, 0.f, 0.f}};
  RoutingPlan p;  // k = 1: the first choice of each token (argmax of its scores)
  p.reset(4, 4, 4);
  for (int t = 0; t < 4; ++t) {
    const int32_t e =
        static_cast<int32_t>(std::max_element(z[t].begin(), z[t].end()) - z[t].begin());
    p.expert.push_back(e);
    p.weight.push_back(1.f);
    p.offsets[t + 1] = t + 1;
  }
  const FullScoresFn scores = [&](int64_t t, float* out) {
    std::copy(z[t].begin(), z[t].end(), out);
  };
  const auto f = transition_figures(b, p, Comm::self(), &scores);
  ASSERT_EQ(f.size(), transition_figure_names(true).size());
  EXPECT_EQ(transition_figure_names(true)[2], "p_correct_at_transition");
  auto mass = [&](int t, std::vector<int> ok) {
    double all = 0, s = 0;
    for (int e = 0; e < 4; ++e) all += std::exp(static_cast<double>(z[t][e]));
    for (int e : ok) s += std::exp(static_cast<double>(z[t][e]));
    return s / all;
  };
  EXPECT_EQ(f[0], 2);
  EXPECT_DOUBLE_EQ(f[1], 0.0);  // first choices 0 and 1: neither correct
  EXPECT_NEAR(f[2], (mass(0, {2, 3}) + mass(2, {0})) / 2, 1e-12);
  // Token 0: ranking 0, 1, 2 (tie with 1, lower index first), 3 -> best correct rank 2 (K >= 3).
  // Token 2: ranking 1, 0, 2 (tie with 0), 3 -> expert 0 at rank 1 (K >= 2).
  EXPECT_DOUBLE_EQ(f[3], 0.0);
  EXPECT_DOUBLE_EQ(f[4], 0.5);
  EXPECT_DOUBLE_EQ(f[5], 1.0);
  EXPECT_DOUBLE_EQ(f[6], 1.0);
  // Among-chosen on the same plan: k = 1 sees only the first choice.
  const auto g = transition_figures(b, p, Comm::self());
  EXPECT_DOUBLE_EQ(g[2], 0.0);
  EXPECT_DOUBLE_EQ(g[6], 0.0);
}
