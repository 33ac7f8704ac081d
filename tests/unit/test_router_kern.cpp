// kern router (ROUTERS.md §3): selection, weights, skip_zero, figures, knobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {

// Gaussian logits with a per-token shift: a third of the tokens are pushed down so that fewer than
// k of their logits are positive (some none at all). `ties` rounds to a coarse grid.
TokenBatch batch(int64_t tokens, int32_t experts, uint64_t seed, bool ties = false) {
  TokenBatch b;
  b.num_tokens = tokens;
  b.num_experts = experts;
  b.global_tokens = tokens;
  b.tokens_per_rank = tokens;
  b.logits.resize(static_cast<size_t>(tokens * experts));
  const uint64_t key = rng::key(seed);
  for (int64_t t = 0; t < tokens; ++t) {
    const double shift = t % 3 == 0 ? -2.5 - 0.01 * static_cast<double>(t % 50) : 0.0;
    for (int32_t e = 0; e < experts; ++e) {
      double z = rng::normal(key, static_cast<uint64_t>(t * experts + e)) + shift;
      if (ties) z = std::round(z * 4) / 4;
      b.logits[static_cast<size_t>(t * experts + e)] = static_cast<float>(z);
    }
  }
  return b;
}

std::unique_ptr<Router> make(const std::string& name, int32_t E, int32_t k, std::map<std::string, std::string> args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  return make_router(name, s, args);
}

int32_t positives(const float* z, int32_t E) {
  int32_t p = 0;
  for (int32_t e = 0; e < E; ++e) p += z[e] > 0;
  return p;
}

// r in double: gamma * ReLU(z / max(||z||, eps)) (normalize_first) or gamma * ReLU(z) / max(||ReLU(z)||, eps).
std::vector<double> reference_r(const float* z, int32_t E, double gamma, double eps, bool activate_first) {
  double ss = 0;
  for (int32_t e = 0; e < E; ++e) {
    const double v = activate_first ? std::max(0.0, static_cast<double>(z[e])) : static_cast<double>(z[e]);
    ss += v * v;
  }
  std::vector<double> r(E);
  for (int32_t e = 0; e < E; ++e) r[e] = gamma * std::max(0.0, static_cast<double>(z[e])) / std::max(std::sqrt(ss), eps);
  return r;
}

}  // namespace

TEST(Kern, SameSelectionAsSoftmaxTopKWhenKLogitsArePositive) {
  for (bool ties : {false, true})
    for (auto [E, k] : {std::pair{64, 6}, {256, 8}, {13, 3}, {16, 10}}) {
      auto kern = make("kern", E, k);
      auto soft = make("softmax_topk", E, k);
      const auto b = batch(403, E, 9 + E, ties);
      RoutingPlan pk, ps;
      kern->route(b, Comm::self(), pk);
      soft->route(b, Comm::self(), ps);
      ASSERT_EQ(pk.assignments(), b.num_tokens * k);
      int64_t compared = 0, fewer = 0;
      for (int64_t t = 0; t < b.num_tokens; ++t) {
        const float* z = b.logits.data() + t * E;
        const int32_t p = positives(z, E);
        if (p < k) {
          ++fewer;
          // The positive logits first (softmax order), then the lowest-index non-positive experts.
          for (int32_t j = 0; j < p; ++j) ASSERT_EQ(pk.expert[t * k + j], ps.expert[t * k + j]);
          int32_t e = 0;
          for (int32_t j = p; j < k; ++j, ++e) {
            while (z[e] > 0) ++e;
            ASSERT_EQ(pk.expert[t * k + j], e) << "t=" << t << " j=" << j;
            ASSERT_EQ(pk.weight[t * k + j], 0.0f);
          }
          continue;
        }
        ++compared;
        for (int32_t j = 0; j < k; ++j) ASSERT_EQ(pk.expert[t * k + j], ps.expert[t * k + j]) << "E=" << E << " t=" << t << " j=" << j;
      }
      EXPECT_GT(compared, 30);
      EXPECT_GT(fewer, 10) << "the batch should have tokens with fewer than k positive logits";
    }
}

TEST(Kern, WeightsAreNormalisedReluOfLogits) {
  for (bool activate_first : {false, true})
    for (double gamma : {1.0, 0.37}) {
      const int32_t E = 64, k = 6;
      auto r = make("kern", E, k, {{"gamma", std::to_string(gamma)}, {"order", activate_first ? "activate_first" : "normalize_first"}});
      const auto b = batch(300, E, 21);
      RoutingPlan plan;
      r->route(b, Comm::self(), plan);
      for (int64_t t = 0; t < b.num_tokens; ++t) {
        const auto want = reference_r(b.logits.data() + t * E, E, gamma, 1e-6, activate_first);
        for (int32_t j = 0; j < k; ++j) {
          const double w = want[plan.expert[t * k + j]];
          ASSERT_NEAR(plan.weight[t * k + j], w, 1e-6 * w + 1e-30) << "t=" << t << " j=" << j;
          if (j > 0) {
            ASSERT_LE(plan.weight[t * k + j], plan.weight[t * k + j - 1]);
          }
        }
      }
    }
}

TEST(Kern, SumOfSquaresOverAllExperts) {
  const int32_t E = 24;
  const double gamma = 1.7;
  auto b = batch(240, E, 33);
  for (int64_t t = 0; t < b.num_tokens; t += 4)  // every 4th token: all logits positive
    for (int32_t e = 0; e < E; ++e) b.logits[t * E + e] = std::fabs(b.logits[t * E + e]) + 0.01f;
  for (int32_t e = 0; e < E; ++e) b.logits[1 * E + e] = -std::fabs(b.logits[1 * E + e]);  // token 1: none positive
  for (bool activate_first : {false, true}) {
    auto r = make("kern", E, E, {{"gamma", "1.7"}, {"order", activate_first ? "activate_first" : "normalize_first"}});  // k = E: every r
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      const float* z = b.logits.data() + t * E;
      double sq = 0, all = 0, pos = 0;
      for (int32_t j = 0; j < E; ++j) sq += static_cast<double>(plan.weight[t * E + j]) * plan.weight[t * E + j];
      for (int32_t e = 0; e < E; ++e) {
        all += static_cast<double>(z[e]) * z[e];
        pos += z[e] > 0 ? static_cast<double>(z[e]) * z[e] : 0.0;
      }
      const int32_t p = positives(z, E);
      if (p == 0) {
        ASSERT_EQ(sq, 0.0) << "t=" << t;
      } else if (activate_first || p == E) {
        ASSERT_NEAR(sq, gamma * gamma, 1e-5) << "t=" << t;  // unit norm times gamma
      } else {
        ASSERT_NEAR(sq, gamma * gamma * pos / all, 1e-5) << "t=" << t;
        ASSERT_LT(sq, gamma * gamma - 1e-4) << "t=" << t;  // normalise first: the negative part is cut
      }
    }
  }
}

TEST(Kern, EpsBoundsTheNorm) {
  const int32_t E = 8, k = 2;
  auto r = make("kern", E, k, {{"eps", "0.001"}});
  TokenBatch b;
  b.num_tokens = 1;
  b.num_experts = E;
  b.logits = {1e-5f, 2e-5f, 0, 0, 0, 0, 0, -1e-5f};  // ||z|| ~ 2.4e-5 < eps
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  EXPECT_EQ(plan.expert[0], 1);
  EXPECT_EQ(plan.expert[1], 0);
  EXPECT_NEAR(plan.weight[0], 2e-5 / 1e-3, 1e-8);
  EXPECT_NEAR(plan.weight[1], 1e-5 / 1e-3, 1e-8);
}

TEST(Kern, SkipZeroDropsExactlyTheZeroWeightPicks) {
  const int32_t E = 32, k = 4;
  auto keep = make("kern", E, k);
  auto skip = make("kern", E, k, {{"skip_zero", "true"}});
  const auto b = batch(500, E, 77);
  RoutingPlan full, sparse;
  keep->route(b, Comm::self(), full);
  skip->route(b, Comm::self(), sparse);
  int64_t free_tokens = 0, zero_picks = 0;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const int32_t p = positives(b.logits.data() + t * E, E);
    const int64_t want = std::min(p, k);
    ASSERT_EQ(sparse.count(t), want) << "t=" << t;
    free_tokens += p < k;
    zero_picks += k - want;
    for (int64_t j = 0; j < want; ++j) {
      ASSERT_EQ(sparse.expert[sparse.offsets[t] + j], full.expert[t * k + j]);
      ASSERT_EQ(sparse.weight[sparse.offsets[t] + j], full.weight[t * k + j]);
    }
  }
  for (float w : sparse.weight) ASSERT_GT(w, 0.0f);
  EXPECT_GT(free_tokens, 50);
  EXPECT_LT(sparse.assignments(), full.assignments());
  EXPECT_EQ(full.assignments() - sparse.assignments(), zero_picks);
  // The figures are the same with and without skipping (counted before skipping).
  const double T = static_cast<double>(b.num_tokens);
  for (const auto* r : {keep.get(), skip.get()}) {
    ASSERT_EQ(r->figure_names(), (std::vector<std::string>{"free_sparsity", "zero_weight_assignments"}));
    EXPECT_DOUBLE_EQ(r->figures()[0], static_cast<double>(free_tokens) / T);
    EXPECT_DOUBLE_EQ(r->figures()[1], static_cast<double>(zero_picks) / T);
  }
}

TEST(Kern, KnobValidation) {
  const auto bad = [](std::map<std::string, std::string> args, const std::string& key) {
    try {
      make("kern", 16, 2, args);
      ADD_FAILURE() << "accepted " << key;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  bad({{"gamma", "0"}}, "gamma");
  bad({{"gamma", "-1"}}, "gamma");
  bad({{"eps", "0"}}, "eps");
  bad({{"order", "relu_first"}}, "order");
  bad({{"skip_zero", "sometimes"}}, "skip_zero");
  bad({{"renormalize", "true"}}, "renormalize");
  EXPECT_NO_THROW(make("kern", 16, 2, {{"gamma", "2"}, {"eps", "1e-9"}, {"order", "activate_first"}, {"skip_zero", "on"}}));
}

TEST(Kern, NeedsFullLogits) {
  auto r = make("kern", 16, 2);
  TokenBatch b = batch(8, 16, 1);
  EXPECT_EQ(r->missing_input(b), "");
  b.full_logits = false;
  EXPECT_NE(r->missing_input(b), "");
}
