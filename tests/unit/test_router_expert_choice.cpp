// expert_choice (ROUTERS.md §8) on one process: exact per-expert load C, the selection is each
// expert's top C by softmax score, 0..E experts per token on a skewed workload, figures, knobs, and
// the whole pipeline with capacity factor 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"
#include "tests/unit/router_fixtures.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

std::unique_ptr<Router> ec(int32_t E, int32_t k,
                           const std::map<std::string, std::string>& args = {}) {
  return moe::testing::test_router("expert_choice", E, k, args);
}

// Softmax of one row in double.
std::vector<double> softmax(const TokenBatch& b, int64_t t) {
  const auto z = b.row(t);
  const double m = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t e = 0; e < z.size(); ++e) s += (p[e] = std::exp(z[e] - m));
  for (double& x : p) x /= s;
  return p;
}

int64_t expected_capacity(int64_t T, double c, int32_t E) {
  return std::min<int64_t>(T,
                           static_cast<int64_t>(std::ceil(c * static_cast<double>(T) / E - 1e-9)));
}

}  // namespace

TEST(ExpertChoice, EveryExpertTakesExactlyItsTopCTokens) {
  for (double c : {2.0, 1.0, 0.5, 3.7})
    for (int32_t E : {16, 64}) {
      const TokenBatch b = moe::testing::workload_batch("zipf", E, 3, 347, 7 + E, {{"s", "1.0"}});
      const int64_t T = b.num_tokens;
      const int64_t C = expected_capacity(T, c, E);
      auto r = ec(E, 2, {{"c", std::to_string(c)}});
      RoutingPlan plan;
      r->route(b, Comm::self(), plan);
      ASSERT_EQ(plan.num_tokens, T);
      ASSERT_EQ(plan.assignments(), C * E) << "c=" << c << " E=" << E;
      std::vector<int64_t> load(E, 0);
      std::vector<std::vector<uint8_t>> taken(E, std::vector<uint8_t>(T, 0));
      std::vector<double> min_taken(E, 2.0);
      for (int64_t t = 0; t < T; ++t) {
        const auto p = softmax(b, t);
        for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
          const int32_t e = plan.expert[a];
          ASSERT_GE(e, 0);
          ASSERT_LT(e, E);
          ASSERT_FALSE(taken[e][t]) << "token " << t << " listed twice for expert " << e;
          taken[e][t] = 1;
          ++load[e];
          ASSERT_NEAR(plan.weight[a], p[e], 1e-6 * std::max(p[e], 1e-3)) << "weight is S_{t,e}";
          min_taken[e] = std::min(min_taken[e], p[e]);
          if (a > plan.offsets[t]) {
            ASSERT_GE(plan.weight[a - 1], plan.weight[a]) << "experts in descending S order";
          }
        }
      }
      for (int32_t e = 0; e < E; ++e) {
        ASSERT_EQ(load[e], C) << "expert " << e << " c=" << c;
        // Nothing left out scores clearly above what the expert took (1e-6: float softmax).
        for (int64_t t = 0; t < T; ++t)
          if (!taken[e][t]) {
            ASSERT_LE(softmax(b, t)[e], min_taken[e] * (1 + 1e-5) + 1e-12)
                << "expert " << e << " skipped token " << t;
          }
      }
      const auto f = r->figures();
      ASSERT_EQ(f.size(), r->figure_names().size());
      EXPECT_EQ(f[0], static_cast<double>(C));
    }
}

TEST(ExpertChoice, TokensGetZeroToManyExpertsOnASkewedWorkload) {
  const int32_t E = 32, k = 2;
  const TokenBatch b = moe::testing::workload_batch("zipf", E, 4, 256, 3, {{"s", "1.2"}});
  auto r = ec(E, k);
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  int64_t zero = 0, more = 0, most = 0;
  for (int64_t t = 0; t < plan.num_tokens; ++t) {
    zero += plan.count(t) == 0;
    more += plan.count(t) > k;
    most = std::max(most, plan.count(t));
  }
  EXPECT_GT(zero, 0) << "some tokens get no expert";
  EXPECT_GT(more, 0) << "some tokens get more than k experts";
  EXPECT_LE(most, E);
  // Mean experts per token is C*E/T, about c = 2.
  EXPECT_NEAR(static_cast<double>(plan.assignments()) / static_cast<double>(plan.num_tokens), 2.0,
              0.05);
  const auto f = r->figures();
  const auto names = r->figure_names();
  ASSERT_EQ(names, (std::vector<std::string>{"capacity_per_expert", "zero_expert_tokens",
                                             "max_experts_per_token"}));
  EXPECT_DOUBLE_EQ(f[1], static_cast<double>(zero) / static_cast<double>(plan.num_tokens));
  EXPECT_EQ(f[2], static_cast<double>(most));
}

TEST(ExpertChoice, TiesGoToTheLowerTokenIndex) {
  // All tokens identical: every expert takes the first C tokens.
  const int32_t E = 8;
  TokenBatch b = moe::testing::workload_batch("uniform", E, 1, 40, 1);
  for (int64_t t = 1; t < b.num_tokens; ++t)
    std::copy(b.logits.begin(), b.logits.begin() + E, b.logits.begin() + t * E);
  auto r = ec(E, 2);
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  const int64_t C = expected_capacity(40, 2.0, E);  // 10
  for (int64_t t = 0; t < b.num_tokens; ++t) ASSERT_EQ(plan.count(t), t < C ? E : 0) << t;
  // Equal S inside a token: lower expert first.
  std::vector<int32_t> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return b.logits[x] > b.logits[y]; });
  EXPECT_EQ(std::vector<int32_t>(plan.expert.begin(), plan.expert.begin() + E), order);
}

TEST(ExpertChoice, CapacityClampsToTheGroupSize) {
  const int32_t E = 4;
  const TokenBatch b = moe::testing::workload_batch("uniform", E, 1, 10, 2);
  auto r = ec(E, 1, {{"c", "9"}});  // T*c/E = 22.5 > T
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  EXPECT_EQ(plan.assignments(), 10 * E);
  EXPECT_EQ(r->figures()[0], 10.0);
  EXPECT_EQ(r->figures()[1], 0.0);
  EXPECT_EQ(r->figures()[2], static_cast<double>(E));
}

TEST(ExpertChoice, KnobsAreValidatedAndInputsChecked) {
  EXPECT_THROW(ec(8, 2, {{"c", "0"}}), InputError);
  EXPECT_THROW(ec(8, 2, {{"c", "-1"}}), InputError);
  EXPECT_THROW(ec(8, 2, {{"c", "inf"}}), InputError);
  EXPECT_THROW(ec(8, 2, {{"capacity", "2"}}), InputError);
  TokenBatch b = moe::testing::workload_batch("uniform", 8, 1, 4, 1);
  EXPECT_EQ(ec(8, 2)->missing_input(b), "");
  b.full_logits = false;
  EXPECT_NE(ec(8, 2)->missing_input(b).find("full router logits"), std::string::npos);
}

TEST(ExpertChoice, PipelineWithoutCapacityLoadsEveryExpertExactlyC) {
  RunConfig c;
  c.workload = "zipf";
  c.workload_args["zipf"] = {{"s", "1.0"}};
  c.routers = {"expert_choice"};
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = 2;
  c.tokens_per_rank = 100;
  c.seq_len = 50;
  c.ep_size = 4;
  c.nodes = 2;
  c.hidden = 32;
  c.capacity_factor = 0;
  c.progress = "off";
  ASSERT_TRUE(resolve_and_validate(c, 1).empty());
  const auto out = run_pipeline(c, Comm::self(), RunOptions{true, false});
  const int64_t C = expected_capacity(400, 2.0, 16);  // 50
  ASSERT_EQ(out.records[0].size(), 4u);
  for (const auto& m : out.records[0]) {
    EXPECT_EQ(m.dropped_assignments, 0);
    for (int64_t load : m.expert_load) EXPECT_EQ(load, C);
    EXPECT_EQ(m.figures[0], static_cast<double>(C));
    EXPECT_GT(m.active_experts_hist[0], 0) << "tokens with no expert";
  }
}

// Matched compute by default: c defaults to the run's top_k, so expert choice beside top-6 routers
// gives each token 6 experts on average (C = ceil(T * 6 / E)); c=2 (EC-CF2) stays a knob.
TEST(ExpertChoice, DefaultCIsTheRunsTopK) {
  const int32_t E = 32;
  const TokenBatch b = moe::testing::workload_batch("zipf", E, 4, 256, 3, {{"s", "1.2"}});
  for (int32_t k : {2, 6}) {
    auto r = ec(E, k);
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    EXPECT_EQ(r->figures()[0], static_cast<double>(expected_capacity(plan.num_tokens, k, E)))
        << "k=" << k;
    EXPECT_NEAR(static_cast<double>(plan.assignments()) / static_cast<double>(plan.num_tokens), k,
                0.05 * k)
        << "k=" << k;
  }
  auto cf2 = ec(E, 6, {{"c", "2"}});
  RoutingPlan plan;
  cf2->route(b, Comm::self(), plan);
  EXPECT_EQ(cf2->figures()[0], static_cast<double>(expected_capacity(plan.num_tokens, 2.0, E)));
}
