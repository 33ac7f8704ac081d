// ReMoE replayed as ReLU(z - theta_l) (ROUTERS.md §4): the controller settles at the target
// sparsity, the quantile mode activates exactly k*T pairs, tokens with no expert occur and are
// counted, the plan's order and weights, and the knobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {

std::unique_ptr<Router> remoe(int32_t E, int32_t k, std::map<std::string, std::string> args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  return make_router("remoe", s, args);
}

TokenBatch gaussian_batch(int64_t T, int32_t E, uint64_t seed, double mean = 0.0) {
  TokenBatch b;
  b.num_tokens = T;
  b.num_experts = E;
  b.global_tokens = T;
  b.tokens_per_rank = T;
  b.logits.resize(static_cast<size_t>(T * E));
  const uint64_t key = rng::key(seed);
  for (size_t i = 0; i < b.logits.size(); ++i)
    b.logits[i] = static_cast<float>(mean + rng::normal(key, i));
  return b;
}

size_t figure(const Router& r, const std::string& name) {
  const auto names = r.figure_names();
  return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
}

RunConfig pipeline_config(int32_t steps, std::map<std::string, std::string> args = {}) {
  RunConfig c;
  c.workload = "uniform";
  c.routers = {"remoe"};
  c.router_args["remoe"] = std::move(args);
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = steps;
  c.tokens_per_rank = 512;
  c.seq_len = 128;
  c.ep_size = 1;
  c.hidden = 32;
  c.capacity_factor = 0;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, 1);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}

}  // namespace

// Uniform N(0, 1) logits, E = 16, k = 2: S* = 0.875, reached at theta ~ 1.15, i.e. ~23 steps of
// eta = 0.05 std from theta0 = 0. Stated numbers: the first step is dense (S in [0.45, 0.55]); from
// step 30 to 59, |S_l - S*| < 0.02 at every layer and step (one eta step moves S by ~0.01 there).
TEST(ReMoE, ControllerConvergesToTargetSparsity) {
  const auto out = run_pipeline(pipeline_config(60, {{"warm_start", "none"}}), Comm::self(),
                                RunOptions{true, false});
  const auto& names = out.figure_names[0];
  const auto at = [&](const std::string& n) {
    return static_cast<size_t>(std::find(names.begin(), names.end(), n) - names.begin());
  };
  const size_t fs = at("sparsity"), ft = at("theta"), fm = at("mean_active_experts"),
               fz = at("zero_expert_tokens");
  ASSERT_LT(fz, names.size());
  const auto& rec = out.records[0];
  ASSERT_EQ(rec.size(), 120u);
  const double target = 1.0 - 2.0 / 16.0;
  for (int32_t layer = 0; layer < 2; ++layer) {
    const auto& first = rec[static_cast<size_t>(layer)];
    EXPECT_EQ(first.figures[ft], 0.0);
    EXPECT_GT(first.figures[fs], 0.45);
    EXPECT_LT(first.figures[fs], 0.55);
    int32_t first_close = -1;
    for (int32_t step = 0; step < 60; ++step) {
      const auto& m = rec[static_cast<size_t>(step * 2 + layer)];
      // The figures agree with the pipeline's own counts.
      EXPECT_DOUBLE_EQ(m.figures[fm], m.mean_active_experts);
      EXPECT_NEAR(m.figures[fs], 1.0 - m.mean_active_experts / 16.0, 1e-12);
      EXPECT_DOUBLE_EQ(m.figures[fz], static_cast<double>(m.active_experts_hist[0]) / 512.0);
      if (first_close < 0 && std::abs(m.figures[fs] - target) < 0.02) first_close = step;
      if (step >= 30) {
        EXPECT_LT(std::abs(m.figures[fs] - target), 0.02) << "layer " << layer << " step " << step;
      }
    }
    EXPECT_GE(first_close, 15) << "a step of 0.05 std cannot reach theta ~ 1.15 much sooner";
    EXPECT_LE(first_close, 30);
    EXPECT_GT(rec[static_cast<size_t>(59 * 2 + layer)].figures[ft], 1.0);
    EXPECT_LT(rec[static_cast<size_t>(59 * 2 + layer)].figures[ft], 1.3);
  }
}

TEST(ReMoE, ThetaMovesByEtaTowardTheTarget) {
  const int32_t E = 16, k = 2;
  auto r = remoe(E, k, {{"eta_scale", "0.1"}, {"theta0", "-0.5"}});
  auto b = gaussian_batch(400, E, 3, 0.3);  // mean 0.3: the std must not include the mean
  double sum = 0, sumsq = 0;
  for (float z : b.logits) {
    sum += z;
    sumsq += static_cast<double>(z) * z;
  }
  const double n = static_cast<double>(b.logits.size());
  const double std = std::sqrt(sumsq / n - (sum / n) * (sum / n));
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  EXPECT_EQ(r->figures()[figure(*r, "theta")], -0.5);
  r->end_step(Comm::self());  // dense (S < S*): theta rises by eta
  r->route(b, Comm::self(), plan);
  EXPECT_NEAR(r->figures()[figure(*r, "theta")], -0.5 + 0.1 * std, 1e-12);
  // eta stays the one of the first step even when later logits are wider.
  for (float& z : b.logits) z *= 3.0f;
  r->end_step(Comm::self());
  r->route(b, Comm::self(), plan);
  EXPECT_NEAR(r->figures()[figure(*r, "theta")], -0.5 + 0.2 * std, 1e-12);
  // Too sparse (S > S*): theta falls.
  auto sparse = remoe(E, k, {{"theta0", "8"}});
  b = gaussian_batch(400, E, 4);
  sparse->route(b, Comm::self(), plan);
  EXPECT_EQ(sparse->figures()[figure(*sparse, "sparsity")], 1.0);
  sparse->end_step(Comm::self());
  sparse->route(b, Comm::self(), plan);
  EXPECT_LT(sparse->figures()[figure(*sparse, "theta")], 8.0);
}

TEST(ReMoE, PlanIsReluOfShiftedLogitsBestFirst) {
  const int32_t E = 24, k = 3;
  auto b = gaussian_batch(300, E, 5);
  for (int64_t t = 0; t < b.num_tokens; t += 7)  // ties: lower index first
    for (int32_t e = 0; e + 1 < E; e += 3) b.logits[t * E + e + 1] = b.logits[t * E + e];
  auto r = remoe(E, k, {{"theta0", "0.4"}});
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  int64_t active = 0;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const float* z = b.logits.data() + t * E;
    std::vector<int32_t> want;
    for (int32_t e = 0; e < E; ++e)
      if (z[e] > 0.4) want.push_back(e);
    std::stable_sort(want.begin(), want.end(), [&](int32_t x, int32_t y) { return z[x] > z[y]; });
    ASSERT_EQ(plan.count(t), static_cast<int64_t>(want.size()));
    for (size_t q = 0; q < want.size(); ++q) {
      ASSERT_EQ(plan.expert[plan.offsets[t] + static_cast<int64_t>(q)], want[q]) << "t=" << t;
      ASSERT_FLOAT_EQ(plan.weight[plan.offsets[t] + static_cast<int64_t>(q)],
                      static_cast<float>(z[want[q]] - 0.4));
    }
    active += static_cast<int64_t>(want.size());
  }
  const auto f = r->figures();
  EXPECT_DOUBLE_EQ(f[figure(*r, "mean_active_experts")], static_cast<double>(active) / 300.0);
  EXPECT_DOUBLE_EQ(f[figure(*r, "sparsity")], 1.0 - static_cast<double>(active) / (300.0 * E));
}

TEST(ReMoE, TokensWithNoExpertOccurAndAreCounted) {
  const int32_t E = 8, k = 2;
  auto b = gaussian_batch(200, E, 7);
  int64_t zero = 0;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    if (t % 5 == 0)  // every fifth token: all logits negative
      for (int32_t e = 0; e < E; ++e) b.logits[t * E + e] = -std::abs(b.logits[t * E + e]) - 0.01f;
    bool any = false;
    for (int32_t e = 0; e < E; ++e) any = any || b.logits[t * E + e] > 0;
    zero += !any;
  }
  ASSERT_GE(zero, 40);
  auto r = remoe(E, k, {{"warm_start", "none"}});
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  int64_t empty = 0;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    if (t % 5 == 0) {
      EXPECT_EQ(plan.count(t), 0) << "t=" << t;
    }
    empty += plan.count(t) == 0;
  }
  EXPECT_EQ(empty, zero);
  EXPECT_DOUBLE_EQ(r->figures()[figure(*r, "zero_expert_tokens")],
                   static_cast<double>(zero) / 200.0);
  // The quantile mode can leave tokens without an expert too: a token whose logits are all far
  // below everyone else's gets none.
  for (int32_t e = 0; e < E; ++e) b.logits[1 * E + e] = -50.0f - static_cast<float>(e);
  auto q = remoe(E, k, {{"mode", "quantile"}});
  q->route(b, Comm::self(), plan);
  EXPECT_EQ(plan.count(1), 0);
  EXPECT_GT(q->figures()[figure(*q, "zero_expert_tokens")], 0.0);
}

TEST(ReMoE, QuantileModeActivatesExactlyKTPairs) {
  for (bool ties : {false, true})
    for (auto [E, k] : {std::pair{16, 2}, {64, 6}, {8, 8}}) {
      auto b = gaussian_batch(257, E, 11 + static_cast<uint64_t>(E));
      if (ties)
        for (float& z : b.logits) z = std::round(z * 2.0f);  // heavy ties at the boundary
      auto r = remoe(E, k, {{"mode", "quantile"}});
      RoutingPlan plan;
      for (int step = 0; step < 3; ++step) {
        r->route(b, Comm::self(), plan);
        ASSERT_EQ(plan.assignments(), static_cast<int64_t>(k) * 257)
            << "E=" << E << " ties=" << ties;
        const double theta = r->figures()[figure(*r, "theta")];
        // Selected pairs are those above theta, then ties at theta to the first (token, expert).
        std::vector<uint8_t> sel(b.logits.size(), 0);
        for (int64_t t = 0; t < b.num_tokens; ++t)
          for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
            sel[static_cast<size_t>(t * E + plan.expert[a])] = 1;
            ASSERT_GE(plan.weight[a], 0.0f);
          }
        bool tie_seen_unselected = false;
        for (size_t i = 0; i < sel.size(); ++i) {
          if (b.logits[i] > theta) {
            ASSERT_TRUE(sel[i]) << i;
          }
          if (b.logits[i] < theta) {
            ASSERT_FALSE(sel[i]) << i;
          }
          if (b.logits[i] == theta) {
            if (sel[i]) {
              ASSERT_FALSE(tie_seen_unselected) << "ties go to the globally first pair";
            }
            if (!sel[i]) tie_seen_unselected = true;
          }
        }
        EXPECT_NEAR(r->figures()[figure(*r, "sparsity")], 1.0 - static_cast<double>(k) / E, 1e-15);
        r->end_step(Comm::self());
      }
    }
}

TEST(ReMoE, KnobValidation) {
  EXPECT_THROW(remoe(16, 2, {{"mode", "pid"}}), InputError);
  EXPECT_THROW(remoe(16, 2, {{"eta_scale", "0"}}), InputError);
  EXPECT_THROW(remoe(16, 2, {{"eta_scale", "-0.1"}}), InputError);
  EXPECT_THROW(remoe(16, 2, {{"theta0", "low"}}), InputError);
  EXPECT_THROW(remoe(16, 2, {{"lambda", "1"}}), InputError);
  EXPECT_NO_THROW(remoe(16, 2, {{"mode", "quantile"}, {"eta_scale", "0.2"}, {"theta0", "-1"}}));
  auto b = gaussian_batch(4, 16, 1);
  b.full_logits = false;
  EXPECT_NE(remoe(16, 2)->missing_input(b), "");
}

// The default warm start: theta_l of the first step is the group-wide quantile threshold, so the
// first step already has exactly k*T active pairs (2 experts per token), and the sign controller
// then oscillates around k (one eta step moves the mean by ~0.17 experts here, at theta ~ 1.15:
// pdf(1.15) x 16 x 0.05), averaging k within 5%.
TEST(ReMoE, WarmStartBeginsAtTheTargetAndStaysThere) {
  const auto out = run_pipeline(pipeline_config(12), Comm::self(), RunOptions{true, false});
  const auto& names = out.figure_names[0];
  const size_t fm = static_cast<size_t>(
      std::find(names.begin(), names.end(), "mean_active_experts") - names.begin());
  ASSERT_LT(fm, names.size());
  const auto& rec = out.records[0];
  ASSERT_EQ(rec.size(), 24u);
  for (int32_t layer = 0; layer < 2; ++layer) {
    EXPECT_DOUBLE_EQ(rec[static_cast<size_t>(layer)].figures[fm], 2.0) << "layer " << layer;
    double sum = 0;
    for (int32_t step = 0; step < 12; ++step) {
      const double m = rec[static_cast<size_t>(step * 2 + layer)].figures[fm];
      EXPECT_NEAR(m, 2.0, 0.45) << "layer " << layer << " step " << step;
      sum += m;
    }
    EXPECT_NEAR(sum / 12, 2.0, 0.1) << "layer " << layer;
  }
  // The cold start (warm_start=none) is dense at step 0: about E/2 = 8 experts per token.
  const auto cold = run_pipeline(pipeline_config(1, {{"warm_start", "none"}}), Comm::self(),
                                 RunOptions{true, false});
  EXPECT_GT(cold.records[0][0].figures[fm], 6.0);
  // theta0 alone implies the cold start; with warm_start=quantile it is a contradiction.
  EXPECT_NO_THROW(remoe(16, 2, {{"theta0", "0.5"}}));
  EXPECT_THROW(remoe(16, 2, {{"theta0", "0.5"}, {"warm_start", "quantile"}}), InputError);
  EXPECT_THROW(remoe(16, 2, {{"warm_start", "hot"}}), InputError);
}
