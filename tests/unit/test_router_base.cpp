// base (BASE layers, ROUTERS.md §8) on one process: exact balance (including the remainder rule),
// optimality against a brute-force search and a Hungarian-method reference written here, the
// certified gap figure, the round limit, knobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/routing/router.hpp"
#include "tests/unit/router_fixtures.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

std::unique_ptr<Router> base(int32_t E, int32_t k, const std::map<std::string, std::string>& args = {}) {
  return moe::testing::test_router("base", E, k, args);
}

std::string num(double x) {
  std::ostringstream os;
  os.precision(17);
  os << x;
  return os.str();
}

std::vector<int64_t> caps(int64_t T, int32_t E) {
  std::vector<int64_t> c(E, T / E);
  for (int64_t e = 0; e < T % E; ++e) ++c[e];
  return c;
}

double objective(const TokenBatch& b, const RoutingPlan& p) {
  double s = 0;
  for (int64_t t = 0; t < p.num_tokens; ++t) s += b.row(t)[p.expert[p.offsets[t]]];
  return s;
}

double logit_range(const TokenBatch& b) {
  const auto [lo, hi] = std::minmax_element(b.logits.begin(), b.logits.end());
  return static_cast<double>(*hi) - *lo;
}

// Exhaustive search over assignments with the capacities: the optimum of sum z.
double brute_force(const TokenBatch& b) {
  const int32_t E = b.num_experts;
  auto left = caps(b.num_tokens, E);
  double best = -std::numeric_limits<double>::infinity();
  std::function<void(int64_t, double)> go = [&](int64_t t, double acc) {
    if (t == b.num_tokens) {
      best = std::max(best, acc);
      return;
    }
    for (int32_t e = 0; e < E; ++e) {
      if (left[e] == 0) continue;
      --left[e];
      go(t + 1, acc + b.row(t)[e]);
      ++left[e];
    }
  };
  go(0, 0.0);
  return best;
}

// Hungarian method (shortest augmenting paths with potentials, O(n^3)) on T x T: column j is a slot
// of expert slot_expert[j]; maximises sum z by minimising -z. Returns the optimum of sum z.
double hungarian(const TokenBatch& b) {
  const int64_t n = b.num_tokens;
  const auto c = caps(n, b.num_experts);
  std::vector<int32_t> slot_expert;
  for (int32_t e = 0; e < b.num_experts; ++e)
    for (int64_t i = 0; i < c[e]; ++i) slot_expert.push_back(e);
  auto cost = [&](int64_t i, int64_t j) { return -static_cast<double>(b.row(i - 1)[slot_expert[j - 1]]); };
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0), v(n + 1, 0);
  std::vector<int64_t> match(n + 1, 0), way(n + 1, 0);  // match[j] = row in column j
  for (int64_t i = 1; i <= n; ++i) {
    match[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv(n + 1, inf);
    std::vector<uint8_t> used(n + 1, 0);
    do {
      used[j0] = 1;
      const int64_t i0 = match[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur = cost(i0, j) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (used[j]) {
          u[match[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (match[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      match[j0] = match[j1];
      j0 = j1;
    } while (j0);
  }
  double total = 0;
  for (int64_t j = 1; j <= n; ++j) total -= cost(match[j], j);
  return total;
}

// Checks balance, one expert per token, weights; returns the objective.
double check_plan(const TokenBatch& b, const RoutingPlan& p) {
  const int32_t E = b.num_experts;
  EXPECT_EQ(p.num_tokens, b.num_tokens);
  EXPECT_EQ(p.assignments(), b.num_tokens) << "one expert per token";
  std::vector<int64_t> load(E, 0);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    EXPECT_EQ(p.count(t), 1);
    const int32_t e = p.expert[p.offsets[t]];
    ++load[e];
    const double w = 1.0 / (1.0 + std::exp(-static_cast<double>(b.row(t)[e])));
    EXPECT_NEAR(p.weight[p.offsets[t]], w, 1e-6);
  }
  EXPECT_EQ(load, caps(b.num_tokens, E)) << "exactly balanced (remainder to the lower experts)";
  return objective(b, p);
}

}  // namespace

TEST(Base, ExactlyBalancedOnASkewedWorkloadWhateverK) {
  for (int64_t per_rank : {200, 203})
    for (int32_t k : {1, 4}) {
      const int32_t E = 16;
      const TokenBatch b = moe::testing::workload_batch("zipf", E, 4, per_rank, 17, {{"s", "1.2"}});
      auto r = base(E, k);
      RoutingPlan p;
      r->route(b, Comm::self(), p);
      check_plan(b, p);
      const auto f = r->figures();
      ASSERT_EQ(r->figure_names(), (std::vector<std::string>{"rounds", "objective_gap_bound", "mean_price"}));
      EXPECT_GE(f[0], 1.0);
      EXPECT_GE(f[1], -1e-9);
      EXPECT_LE(f[1], static_cast<double>(b.num_tokens) * 1e-4 * logit_range(b) * 1.01) << "gap <= T * eps";
      EXPECT_TRUE(std::isfinite(f[2]));
      EXPECT_GT(f[2], 0.0) << "a skewed workload prices the hot experts";
    }
}

TEST(Base, OptimalWithinTheBoundAgainstBruteForce) {
  for (uint64_t seed = 1; seed <= 12; ++seed)
    for (auto [E, T] : {std::pair<int32_t, int64_t>{4, 8}, {3, 9}, {4, 10}, {3, 7}})
      for (double eps : {1e-4, 1e-2, 1e-6}) {
        const TokenBatch b = moe::testing::workload_batch(seed % 2 ? "zipf" : "uniform", E, 1, T, seed);
        auto r = base(E, 1, {{"epsilon", num(eps)}});
        RoutingPlan p;
        r->route(b, Comm::self(), p);
        const double got = check_plan(b, p);
        const double opt = brute_force(b);
        const double bound = static_cast<double>(T) * eps * logit_range(b);
        const double gap_figure = r->figures()[1];
        const std::string what = "seed " + std::to_string(seed) + " E=" + std::to_string(E) + " T=" + std::to_string(T) +
                                 " eps=" + num(eps);
        EXPECT_LE(got, opt + 1e-5) << what;
        EXPECT_GE(got, opt - bound - 1e-5) << what;
        EXPECT_GE(gap_figure, opt - got - 1e-5) << what << ": the gap figure must bound the true gap";
        EXPECT_LE(gap_figure, bound * 1.01 + 1e-6) << what;
      }
}

TEST(Base, OptimalWithinTheBoundAgainstHungarian) {
  for (auto [E, T, s] : {std::tuple<int32_t, int64_t, const char*>{8, 96, "1.0"}, {8, 100, "1.5"}, {6, 120, "0.3"}}) {
    const TokenBatch b = moe::testing::workload_batch("zipf", E, 4, T / 4, 5, {{"s", s}});
    for (double eps : {1e-4, 1e-7}) {
      auto r = base(E, 2, {{"epsilon", num(eps)}});
      RoutingPlan p;
      r->route(b, Comm::self(), p);
      const double got = check_plan(b, p);
      const double opt = hungarian(b);
      const double bound = static_cast<double>(T) * eps * logit_range(b);
      EXPECT_LE(got, opt + 1e-4) << "T=" << T << " eps=" << eps;
      EXPECT_GE(got, opt - bound - 1e-4) << "T=" << T << " eps=" << eps;
      EXPECT_GE(r->figures()[1], opt - got - 1e-4);
    }
  }
}

TEST(Base, MoreTokensThanFitTheTopChoiceAreMovedToTheirNextBest) {
  // Two experts, four tokens all preferring expert 0 by different margins: the two with the
  // largest margin z0 - z1 keep expert 0 (the optimum of a 2-expert problem).
  TokenBatch b;
  b.num_experts = 2;
  b.num_tokens = 4;
  b.global_tokens = 4;
  b.tokens_per_rank = 4;
  b.logits = {3.0f, 0.0f, 1.0f, 0.5f, 2.0f, -2.0f, 0.2f, 0.1f};  // margins 3, 0.5, 4, 0.1
  RoutingPlan p;
  base(2, 1)->route(b, Comm::self(), p);
  EXPECT_EQ(p.expert, (std::vector<int32_t>{0, 1, 0, 1}));
}

TEST(Base, FewerTokensThanExperts) {
  const TokenBatch b = moe::testing::workload_batch("zipf", 8, 1, 3, 4);
  auto r = base(8, 2);
  RoutingPlan p;
  r->route(b, Comm::self(), p);
  check_plan(b, p);  // experts 0, 1, 2 take one token each
  EXPECT_TRUE(std::isfinite(r->figures()[2]));
}

TEST(Base, RoundLimitFailsClearly) {
  const TokenBatch b = moe::testing::workload_batch("zipf", 16, 2, 200, 9, {{"s", "1.2"}});
  auto r = base(16, 1, {{"max_rounds", "2"}});
  RoutingPlan p;
  try {
    r->route(b, Comm::self(), p);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_rounds=2"), std::string::npos) << e.what();
  }
}

TEST(Base, DeterministicAndStateless) {
  const TokenBatch b = moe::testing::workload_batch("zipf", 64, 4, 256, 21);
  auto r = base(64, 6);
  RoutingPlan p1, p2;
  r->route(b, Comm::self(), p1);
  const auto f1 = r->figures();
  r->route(b, Comm::self(), p2);
  EXPECT_EQ(p1.expert, p2.expert);
  EXPECT_EQ(f1, r->figures());
}

TEST(Base, KnobsAreValidatedAndInputsChecked) {
  EXPECT_THROW(base(8, 1, {{"epsilon", "0"}}), InputError);
  EXPECT_THROW(base(8, 1, {{"epsilon", "2"}}), InputError);
  EXPECT_THROW(base(8, 1, {{"epsilon_scaling", "1"}}), InputError);
  EXPECT_THROW(base(8, 1, {{"max_rounds", "0"}}), InputError);
  EXPECT_THROW(base(8, 1, {{"eps", "0.1"}}), InputError);
  TokenBatch b = moe::testing::workload_batch("uniform", 8, 1, 16, 1);
  b.logits[5] = std::numeric_limits<float>::infinity();
  RoutingPlan p;
  EXPECT_THROW(base(8, 1)->route(b, Comm::self(), p), InputError);
  b.full_logits = false;
  EXPECT_NE(base(8, 1)->missing_input(b).find("full router logits"), std::string::npos);
}
