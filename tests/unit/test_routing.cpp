#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/topk.hpp"
#include "harness/routing/topk_rows.hpp"

using namespace moe;

namespace {

TokenBatch random_batch(int64_t tokens, int32_t experts, uint64_t seed, bool with_ties = false) {
  TokenBatch b;
  b.num_tokens = tokens;
  b.num_experts = experts;
  b.global_tokens = tokens;
  b.logits.resize(static_cast<size_t>(tokens * experts));
  const uint64_t k = rng::key(seed);
  for (size_t i = 0; i < b.logits.size(); ++i) {
    double z = 3.0 * rng::normal(k, i);
    if (with_ties) z = std::round(z);  // many equal logits
    b.logits[i] = static_cast<float>(z);
  }
  return b;
}

// Reference: stable sort by value descending (ties: lower index first), softmax in double.
std::vector<int32_t> reference_topk(const float* z, int32_t E, int32_t k) {
  std::vector<int32_t> idx(E);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
  idx.resize(k);
  return idx;
}

std::unique_ptr<Router> router(const std::string& name, int32_t E, int32_t k, std::map<std::string, std::string> args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  return make_router(name, s, args);
}

}  // namespace

TEST(TopK, MatchesStableSortIncludingTies) {
  for (bool ties : {false, true})
    for (auto [E, k] : {std::pair{8, 1}, {8, 8}, {64, 6}, {256, 8}, {5, 3}}) {
      auto b = random_batch(300, E, 11 + E + k, ties);
      std::vector<int32_t> idx(k);
      std::vector<float> val(k);
      for (int64_t t = 0; t < b.num_tokens; ++t) {
        const float* z = b.logits.data() + t * E;
        topk_indices(z, E, k, idx.data(), val.data());
        ASSERT_EQ(idx, reference_topk(z, E, k)) << "E=" << E << " k=" << k << " t=" << t << " ties=" << ties;
      }
    }
}

TEST(TopK, FastExpIsAccurate) {
  for (double x = -87.0; x <= 0.0; x += 0.0137) {
    const float xf = static_cast<float>(x);
    ASSERT_NEAR(exp_nonpositive(xf) / std::exp(static_cast<double>(xf)), 1.0, 3e-7) << x;
  }
  EXPECT_EQ(exp_nonpositive(0.f), 1.0f);
  EXPECT_LT(exp_nonpositive(-200.f), 1e-37f);
}

TEST(SoftmaxTopK, WeightsMatchDoubleReference) {
  for (bool renorm : {true, false}) {
    const int32_t E = 64, k = 6;
    auto r = router("softmax_topk", E, k, {{"renormalize", renorm ? "true" : "false"}});
    auto b = random_batch(500, E, 3);
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    ASSERT_EQ(plan.assignments(), 500 * k);
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      const float* z = b.logits.data() + t * E;
      const auto want = reference_topk(z, E, k);
      double m = *std::max_element(z, z + E), all = 0, sel = 0;
      for (int32_t e = 0; e < E; ++e) all += std::exp(z[e] - m);
      for (int32_t e : want) sel += std::exp(z[e] - m);
      double wsum = 0;
      for (int32_t j = 0; j < k; ++j) {
        ASSERT_EQ(plan.expert[t * k + j], want[j]);
        const double p = std::exp(z[want[j]] - m) / (renorm ? sel : all);
        ASSERT_NEAR(plan.weight[t * k + j], p, 1e-6 * std::max(1.0, p));
        wsum += plan.weight[t * k + j];
      }
      if (renorm) {
        ASSERT_NEAR(wsum, 1.0, 1e-5);
      }
    }
  }
}

TEST(SigmoidTopK, SameSelectionAndSigmoidWeights) {
  const int32_t E = 32, k = 4;
  auto soft = router("softmax_topk", E, k);
  auto sig = router("sigmoid_topk", E, k, {{"renormalize", "false"}, {"scaling_factor", "2.5"}});
  auto b = random_batch(200, E, 5);
  RoutingPlan p1, p2;
  soft->route(b, Comm::self(), p1);
  sig->route(b, Comm::self(), p2);
  EXPECT_EQ(p1.expert, p2.expert);
  for (int64_t a = 0; a < p2.assignments(); ++a) {
    const double z = b.logits[(a / k) * E + p2.expert[a]];
    ASSERT_NEAR(p2.weight[a], 2.5 / (1.0 + std::exp(-z)), 1e-5);
  }
  auto sig_norm = router("sigmoid_topk", E, k);
  sig_norm->route(b, Comm::self(), p2);
  for (int64_t t = 0; t < b.num_tokens; ++t)
    ASSERT_NEAR(std::accumulate(p2.weight.begin() + t * k, p2.weight.begin() + (t + 1) * k, 0.0), 1.0, 1e-5);
}

TEST(Routers, RejectUnknownArgsAndNames) {
  EXPECT_THROW(router("softmax_topk", 8, 2, {{"renormalise", "true"}}), InputError);
  EXPECT_THROW(router("no_such_router", 8, 2), InputError);
  EXPECT_THROW(router("softmax_topk", 8, 2, {{"renormalize", "perhaps"}}), InputError);
}

TEST(TopKRows, SimdPathEqualsScalarWithTiesAndInfinities) {
  for (auto [E, k] : {std::pair{64, 6}, {256, 8}, {13, 3}, {8, 8}, {64, 1}, {40, 12}}) {
    auto b = random_batch(203, E, 17 + E, true);  // rounded logits: many ties
    for (int64_t t = 0; t < b.num_tokens; t += 7)  // some rows with fewer than k finite entries
      for (int32_t e = 1; e < E; ++e) b.logits[t * E + e] = -INFINITY;
    std::vector<int32_t> idx(static_cast<size_t>(b.num_tokens) * k);
    std::vector<float> w(idx.size());
    topk_rows(b.logits.data(), b.num_tokens, E, k, TopKWeights::logits, idx.data(), w.data());
    std::vector<int32_t> want(k);
    std::vector<float> val(k);
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      topk_indices(b.logits.data() + t * E, E, k, want.data(), val.data());
      for (int32_t j = 0; j < k; ++j) {
        ASSERT_EQ(idx[t * k + j], want[j]) << "E=" << E << " k=" << k << " t=" << t << " j=" << j;
        ASSERT_EQ(w[t * k + j], val[j]);
      }
    }
  }
}

TEST(TopKRows, ResultOfARowDoesNotDependOnItsPositionInTheBatch) {
  // Process splits put a token at any offset modulo 8: its experts and weights must be bit-equal.
  const int32_t E = 64, k = 6;
  auto b = random_batch(37, E, 23);
  for (auto mode : {TopKWeights::softmax_topk, TopKWeights::softmax_full}) {
    std::vector<int32_t> all_e(37 * k), part_e(37 * k);
    std::vector<float> all_w(all_e.size()), part_w(all_e.size());
    topk_rows(b.logits.data(), 37, E, k, mode, all_e.data(), all_w.data());
    for (int64_t first : {1, 5, 11}) {  // route rows [first, 37) as their own batch
      topk_rows(b.logits.data() + first * E, 37 - first, E, k, mode, part_e.data(), part_w.data());
      for (int64_t i = 0; i < (37 - first) * k; ++i) {
        ASSERT_EQ(part_e[i], all_e[first * k + i]);
        ASSERT_EQ(part_w[i], all_w[first * k + i]) << "offset " << first << " entry " << i;
      }
    }
  }
}
