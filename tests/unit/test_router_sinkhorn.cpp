// sinkhorn (ROUTERS.md §8, Megatron's) on one process: balance on a skewed workload against
// softmax_topk on the same logits, iterations and convergence, agreement with a double-precision
// reference written here (unshifted exp(z), as Megatron), weights, determinism, knobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/core/error.hpp"
#include "harness/routing/router.hpp"
#include "tests/unit/router_fixtures.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

std::vector<int64_t> loads(const RoutingPlan& p) {
  std::vector<int64_t> l(p.num_experts, 0);
  for (int32_t e : p.expert) ++l[e];
  return l;
}

double max_over_mean(const RoutingPlan& p) {
  const auto l = loads(p);
  return static_cast<double>(*std::max_element(l.begin(), l.end())) * p.num_experts / static_cast<double>(p.expert.size());
}

// Megatron's sinkhorn in double on exp(z) (no row shift), run to a tight tolerance: d1.
std::vector<double> reference_d1(const TokenBatch& b) {
  const int64_t T = b.num_tokens;
  const int32_t E = b.num_experts;
  std::vector<double> cost(b.logits.size()), d0(T), d1(E, 1.0);
  for (size_t i = 0; i < cost.size(); ++i) cost[i] = std::exp(static_cast<double>(b.logits[i]));
  for (int it = 0; it < 5000; ++it) {
    for (int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (int32_t e = 0; e < E; ++e) s += cost[t * E + e] * d1[e];
      d0[t] = (1.0 / static_cast<double>(T)) / (s + 1e-8);
    }
    double change = 0;
    for (int32_t e = 0; e < E; ++e) {
      double s = 0;
      for (int64_t t = 0; t < T; ++t) s += cost[t * E + e] * d0[t];
      const double nd = (1.0 / E) / (s + 1e-8);
      change += std::abs(nd - d1[e]);
      d1[e] = nd;
    }
    if (change / E < 1e-12) break;
  }
  return d1;
}

}  // namespace

TEST(Sinkhorn, BalancesASkewedWorkloadFarBetterThanSoftmaxTopK) {
  for (int32_t k : {1, 2, 6})
    for (const char* s : {"0.5", "1.0"}) {
      const int32_t E = 32;
      const TokenBatch b = moe::testing::workload_batch("zipf", E, 4, 1024, 5 + k, {{"s", s}});
      RoutingPlan ps, pt;
      auto sk = moe::testing::test_router("sinkhorn", E, k);
      moe::testing::test_router("softmax_topk", E, k)->route(b, Comm::self(), pt);
      sk->route(b, Comm::self(), ps);
      const double bal_sk = max_over_mean(ps), bal_top = max_over_mean(pt);
      const auto f = sk->figures();
      ASSERT_EQ(sk->figure_names(), (std::vector<std::string>{"iterations", "balance", "converged"}));
      EXPECT_DOUBLE_EQ(f[1], bal_sk) << "balance figure = max/mean of the selection counts";
      EXPECT_EQ(f[2], 1.0) << "converged at the default tol, k=" << k << " s=" << s;
      EXPECT_GE(f[0], 2.0);
      EXPECT_LT(f[0], 100.0);
      // Documented tolerance (sinkhorn.cpp): the balanced matrix cancels the expert popularity, the rest
      // is the sampling noise of a top-k; at T*k/E >= 128 max/mean <= 1.25. softmax_topk: 1.9 to 8.
      EXPECT_LE(bal_sk, 1.25) << "k=" << k << " s=" << s << " softmax_topk " << bal_top;
      EXPECT_LT(bal_sk - 1.0, 0.25 * (bal_top - 1.0)) << "k=" << k << " s=" << s << ": sinkhorn " << bal_sk << " vs softmax_topk " << bal_top;
    }
}

TEST(Sinkhorn, SelectionMatchesADoublePrecisionReference) {
  const int32_t E = 16;
  for (int32_t k : {1, 3}) {
    const TokenBatch b = moe::testing::workload_batch("zipf", E, 2, 300, 11, {{"s", "0.8"}});
    auto sk = moe::testing::test_router("sinkhorn", E, k, {{"tol", "1e-9"}, {"max_iters", "2000"}});
    RoutingPlan p;
    sk->route(b, Comm::self(), p);
    ASSERT_EQ(sk->figures()[2], 1.0);
    const auto d1 = reference_d1(b);
    int64_t differ = 0;
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      std::vector<int32_t> idx(E);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int32_t x, int32_t y) {
        return std::exp(static_cast<double>(b.row(t)[x])) * d1[x] > std::exp(static_cast<double>(b.row(t)[y])) * d1[y];
      });
      differ += !std::equal(idx.begin(), idx.begin() + k, p.expert.begin() + t * k);
    }
    // Only near-ties may differ (float costs); a wrong update rule changes far more.
    EXPECT_LE(differ, b.num_tokens / 200) << "k=" << k;
  }
}

TEST(Sinkhorn, IterationCapAndConvergenceFlag) {
  const int32_t E = 32;
  const TokenBatch b = moe::testing::workload_batch("zipf", E, 2, 512, 3, {{"s", "1.0"}});
  auto one = moe::testing::test_router("sinkhorn", E, 2, {{"max_iters", "1"}});
  auto loose = moe::testing::test_router("sinkhorn", E, 2, {{"tol", "1e-2"}});
  auto tight = moe::testing::test_router("sinkhorn", E, 2, {{"tol", "1e-7"}, {"max_iters", "1000"}});
  RoutingPlan p;
  one->route(b, Comm::self(), p);
  EXPECT_EQ(one->figures()[0], 1.0);
  EXPECT_EQ(one->figures()[2], 0.0) << "one iteration from d1 = 1 does not converge on a skewed workload";
  loose->route(b, Comm::self(), p);
  tight->route(b, Comm::self(), p);
  EXPECT_EQ(loose->figures()[2], 1.0);
  EXPECT_EQ(tight->figures()[2], 1.0);
  EXPECT_LT(loose->figures()[0], tight->figures()[0]);
}

TEST(Sinkhorn, WeightsFromTheOriginalLogits) {
  const int32_t E = 16;
  const TokenBatch b = moe::testing::workload_batch("zipf", E, 1, 200, 8);
  for (int32_t k : {1, 4}) {
    RoutingPlan p;
    moe::testing::test_router("sinkhorn", E, k)->route(b, Comm::self(), p);
    ASSERT_EQ(p.assignments(), b.num_tokens * k);
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      const auto z = b.row(t);
      const double m = *std::max_element(z.begin(), z.end());
      double sum = 0;
      for (float x : z) sum += std::exp(x - m);
      for (int32_t j = 0; j < k; ++j) {
        const int32_t e = p.expert[t * k + j];
        const double want = k == 1 ? 1.0 / (1.0 + std::exp(-static_cast<double>(z[e]))) : std::exp(z[e] - m) / sum;
        ASSERT_NEAR(p.weight[t * k + j], want, 1e-6 * std::max(want, 1e-3)) << "k=" << k << " t=" << t;
        for (int32_t i = 0; i < j; ++i) ASSERT_NE(p.expert[t * k + i], e);
      }
    }
  }
}

TEST(Sinkhorn, DeterministicAndStateless) {
  const int32_t E = 64;
  const TokenBatch b = moe::testing::workload_batch("zipf", E, 4, 256, 21);
  auto r = moe::testing::test_router("sinkhorn", E, 6);
  RoutingPlan p1, p2;
  r->route(b, Comm::self(), p1);
  const auto f1 = r->figures();
  r->route(b, Comm::self(), p2);
  EXPECT_EQ(p1.expert, p2.expert);
  EXPECT_EQ(p1.weight, p2.weight);
  EXPECT_EQ(f1, r->figures());
}

TEST(Sinkhorn, KnobsAreValidatedAndInputsChecked) {
  EXPECT_THROW(moe::testing::test_router("sinkhorn", 8, 2, {{"tol", "0"}}), InputError);
  EXPECT_THROW(moe::testing::test_router("sinkhorn", 8, 2, {{"tol", "-1e-4"}}), InputError);
  EXPECT_THROW(moe::testing::test_router("sinkhorn", 8, 2, {{"max_iters", "0"}}), InputError);
  EXPECT_THROW(moe::testing::test_router("sinkhorn", 8, 2, {{"iters", "5"}}), InputError);
  TokenBatch b = moe::testing::workload_batch("uniform", 8, 1, 4, 1);
  b.full_logits = false;
  EXPECT_NE(moe::testing::test_router("sinkhorn", 8, 2)->missing_input(b).find("full router logits"), std::string::npos);
}
