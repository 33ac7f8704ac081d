// LapSum soft top-k router (ROUTERS.md §6): the solver against an independent bisection, its limits
// (hard top-k as alpha -> 0, k/E as alpha grows), and the router's plan, figures and knobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/routing/lapsum.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {

// Reference: 60 bisection steps on L(beta) = sum_j F(beta - s_j) = E - k with s_j = r_j / alpha
// (the scaling the solver documents), F from std::exp. Returns beta.
double bisect_beta(const float* r, int32_t E, double k, double alpha) {
  std::vector<double> s(static_cast<size_t>(E));
  const double inv = 1.0 / alpha;
  for (int32_t j = 0; j < E; ++j) s[j] = static_cast<double>(r[j]) * inv;
  const double lo0 = *std::min_element(s.begin(), s.end()) - 60.0,
               hi0 = *std::max_element(s.begin(), s.end()) + 60.0;
  double lo = lo0, hi = hi0;
  const double w = E - k;
  for (int it = 0; it < 60; ++it) {
    const double mid = 0.5 * (lo + hi);
    double L = 0;
    for (double sj : s) L += lapsum::laplace_cdf(mid - sj);
    (L < w ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

std::vector<double> reference_p(const float* r, int32_t E, double alpha, double beta) {
  std::vector<double> p(static_cast<size_t>(E));
  for (int32_t j = 0; j < E; ++j)
    p[j] = lapsum::laplace_cdf(static_cast<double>(r[j]) * (1.0 / alpha) - beta);
  return p;
}

// Rows of several kinds: Gaussian logits of a given scale, rounded ones (many ties), constant rows,
// and rows with huge ranges.
std::vector<float> make_row(int32_t E, int kind, uint64_t seed, int64_t row) {
  std::vector<float> r(static_cast<size_t>(E));
  const uint64_t key = rng::key(seed, static_cast<uint64_t>(kind));
  for (int32_t j = 0; j < E; ++j) {
    const double z = rng::normal(key, static_cast<uint64_t>(row * E + j));
    switch (kind) {
      case 0:
        r[j] = static_cast<float>(z);
        break;
      case 1:
        r[j] = static_cast<float>(std::round(2.0 * z));
        break;  // ties
      case 2:
        r[j] = 1.25f;
        break;  // all equal
      case 3:
        r[j] = static_cast<float>(300.0 * z);
        break;  // large range
      case 4:
        r[j] = static_cast<float>(j % 2 ? 5000.0 + z : -5000.0 + z);
        break;  // two far clusters
      default:
        r[j] = static_cast<float>(1e-3 * z);
        break;  // nearly equal
    }
  }
  return r;
}

std::unique_ptr<Router> lapsum_router(int32_t E, int32_t k, int32_t layers,
                                      std::map<std::string, std::string> args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = layers;
  return make_router("lapsum", s, args);
}

TokenBatch gaussian_batch(int64_t T, int32_t E, uint64_t seed, double scale = 1.0) {
  TokenBatch b;
  b.num_tokens = T;
  b.num_experts = E;
  b.global_tokens = T;
  b.tokens_per_rank = T;
  b.logits.resize(static_cast<size_t>(T * E));
  const uint64_t key = rng::key(seed);
  for (size_t i = 0; i < b.logits.size(); ++i)
    b.logits[i] = static_cast<float>(scale * rng::normal(key, i));
  return b;
}

}  // namespace

TEST(LapSum, WeightsInUnitIntervalAndSumToK) {
  lapsum::Workspace ws;
  for (int32_t E : {2, 7, 64, 256})
    for (double k : {0.3, 1.0, 2.5, 6.0, 0.9 * E})
      for (double alpha : {0.05, 0.5, 3.0}) {
        if (!(k < E)) continue;
        for (int64_t row = 0; row < 40; ++row) {
          const auto r = make_row(E, 0, 11, row);
          std::vector<double> p(static_cast<size_t>(E));
          lapsum::soft_topk(r.data(), E, k, alpha, ws, p.data());
          double sum = 0;
          for (double x : p) {
            // Strictly inside (0, 1) while the scaled logits stay moderate; with alpha = 0.05 the
            // extreme p are 1 - e^-60 / 2, which is 1 in double, and e^-60 / 2.
            if (alpha >= 0.5) {
              ASSERT_GT(x, 0.0) << "E=" << E << " k=" << k << " alpha=" << alpha;
              ASSERT_LT(x, 1.0) << "E=" << E << " k=" << k << " alpha=" << alpha;
            } else {
              ASSERT_GE(x, 0.0);
              ASSERT_LE(x, 1.0);
            }
            sum += x;
          }
          ASSERT_NEAR(sum, k, 1e-9)
              << "E=" << E << " k=" << k << " alpha=" << alpha << " row " << row;
          // p increases with the logit.
          for (int32_t i = 0; i < E; ++i)
            for (int32_t j = 0; j < E; ++j)
              if (r[i] < r[j]) {
                ASSERT_LE(p[i], p[j]);
              }
        }
      }
}

TEST(LapSum, ClosedFormMatchesBisection) {
  lapsum::Workspace ws;
  int64_t rows = 0, conditioned_rows = 0, knot_rows = 0, common_rows = 0;
  for (int32_t E : {1, 2, 3, 8, 64, 256})
    for (int kind = 0; kind < 6; ++kind)
      for (double alpha : {0.01, 0.5, 7.0})
        for (double kf : {0.1, 0.5, 0.77, 0.999}) {
          const double k = kf * E;
          if (!(k > 0 && k < E)) continue;
          for (int64_t row = 0; row < 8; ++row, ++rows) {
            const auto r = make_row(E, kind, 29, row);
            const std::string what = "E=" + std::to_string(E) + " kind=" + std::to_string(kind) +
                                     " alpha=" + std::to_string(alpha) + " k=" + std::to_string(k);
            const double want = bisect_beta(r.data(), E, k, alpha);
            // beta itself is compared where L is not flat at the root (L' = sum e^-|beta - s_j| /
            // 2): between far-apart knots L equals E - k to the last bit over a wide range, and the
            // bisection cannot locate the root there, while the p agree regardless.
            double slope = 0;
            for (int32_t j = 0; j < E; ++j)
              slope += 0.5 * std::exp(-std::abs(want - static_cast<double>(r[j]) / alpha));
            const bool conditioned = slope > 1e-4;
            const double tol = 1e-9 * std::max(1.0, std::abs(want));
            const double sorted = lapsum::threshold_sorted(r.data(), E, k, alpha, ws);
            if (conditioned) {
              ASSERT_NEAR(sorted, want, tol) << what;
            }
            const auto pref = reference_p(r.data(), E, alpha, want);
            for (lapsum::Method method :
                 {lapsum::Method::common_shift, lapsum::Method::knot_shift}) {
              const std::string how =
                  what + (method == lapsum::Method::knot_shift ? " knot_shift" : " common_shift");
              std::vector<double> p(static_cast<size_t>(E));
              const lapsum::Walk w = lapsum::soft_topk(r.data(), E, k, alpha, ws, p.data(), method);
              ASSERT_GT(w.passes, 0) << how << " (the walk must settle on finite rows)";
              ASSERT_LE(w.passes, E + 2) << how;
              ASSERT_FALSE(w.fallback) << how;
              // The common shift hands rows spanning more than 690 scale units to the knot shift.
              double lo = r[0], hi = r[0];
              for (float x : r) {
                lo = std::min<double>(lo, x);
                hi = std::max<double>(hi, x);
              }
              const double spread = (hi - lo) / alpha;
              if (method == lapsum::Method::common_shift && spread < 680) {
                ASSERT_EQ(w.method, lapsum::Method::common_shift) << how;
              }
              if (spread > 700) {
                ASSERT_EQ(w.method, lapsum::Method::knot_shift) << how;
              }
              ++(w.method == lapsum::Method::knot_shift ? knot_rows : common_rows);
              if (conditioned) {
                ASSERT_NEAR(w.beta, want, tol) << how;
              }
              // The forms of the closed form agree closely everywhere.
              ASSERT_NEAR(w.beta, sorted, 1e-12 * std::max(1.0, std::abs(sorted))) << how;
              double sum = 0;
              for (int32_t j = 0; j < E; ++j) {
                ASSERT_NEAR(p[j], pref[j], 1e-9) << how << " expert " << j;
                sum += p[j];
              }
              ASSERT_NEAR(sum, k, 1e-9 * E) << how;
            }
            conditioned_rows += conditioned;
          }
        }
  EXPECT_GT(rows, 1000);
  EXPECT_GT(conditioned_rows, rows / 2);
  EXPECT_GT(knot_rows, 100);  // both walks were exercised
  EXPECT_GT(common_rows, 1000);
}

TEST(LapSum, HardTopKAsAlphaGoesToZero) {
  // Distinct logits at least 0.1 apart: with alpha = 1e-3 the gaps are 100 scale units.
  lapsum::Workspace ws;
  for (auto [E, k] : {std::pair{8, 1}, {64, 6}, {256, 8}, {16, 15}}) {
    for (int64_t row = 0; row < 20; ++row) {
      std::vector<float> r(static_cast<size_t>(E));
      std::vector<int32_t> perm(static_cast<size_t>(E));
      std::iota(perm.begin(), perm.end(), 0);
      const uint64_t key = rng::key(5, static_cast<uint64_t>(E), static_cast<uint64_t>(row));
      for (int32_t j = E - 1; j > 0; --j)
        std::swap(perm[j],
                  perm[rng::below(key, static_cast<uint64_t>(j), static_cast<uint64_t>(j + 1))]);
      for (int32_t j = 0; j < E; ++j) r[j] = 0.1f * static_cast<float>(perm[j]) - 3.0f;
      std::vector<double> p(static_cast<size_t>(E));
      lapsum::soft_topk(r.data(), E, k, 1e-3, ws, p.data());
      for (int32_t j = 0; j < E; ++j) {
        if (perm[j] >= E - k)
          ASSERT_GT(p[j], 1.0 - 1e-12)
              << "E=" << E << " k=" << k << " expert " << j << " is in the top k";
        else
          ASSERT_LT(p[j], 1e-12) << "E=" << E << " k=" << k << " expert " << j
                                 << " is not in the top k";
      }
    }
  }
  // The router with tau = 0.5 then selects exactly softmax_topk's experts, in the same order.
  const int32_t E = 64, k = 6;
  TokenBatch b;
  b.num_tokens = 300;
  b.num_experts = E;
  b.global_tokens = b.tokens_per_rank = 300;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    std::vector<int32_t> perm(static_cast<size_t>(E));
    std::iota(perm.begin(), perm.end(), 0);
    const uint64_t key = rng::key(6, static_cast<uint64_t>(t));
    for (int32_t j = E - 1; j > 0; --j)
      std::swap(perm[j],
                perm[rng::below(key, static_cast<uint64_t>(j), static_cast<uint64_t>(j + 1))]);
    for (int32_t j = 0; j < E; ++j) b.logits.push_back(0.05f * static_cast<float>(perm[j]));
  }
  RoutingPlan hard, soft;
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  make_router("softmax_topk", s, {})->route(b, Comm::self(), hard);
  lapsum_router(E, k, 1, {{"alpha", "1e-3"}, {"tau", "0.5"}})->route(b, Comm::self(), soft);
  EXPECT_EQ(soft.offsets, hard.offsets);
  EXPECT_EQ(soft.expert, hard.expert);
  for (float w : soft.weight) ASSERT_NEAR(w, 1.0f, 1e-6f);
}

TEST(LapSum, EveryWeightTendsToKOverEAsAlphaGrows) {
  lapsum::Workspace ws;
  const int32_t E = 64;
  const double k = 6;
  for (int64_t row = 0; row < 20; ++row) {
    const auto r = make_row(E, 0, 41, row);
    double prev = 1.0;
    for (double alpha : {1.0, 10.0, 100.0, 1e4, 1e6}) {
      std::vector<double> p(static_cast<size_t>(E));
      lapsum::soft_topk(r.data(), E, k, alpha, ws, p.data());
      double dev = 0;
      for (double x : p) dev = std::max(dev, std::abs(x - k / E));
      ASSERT_LE(dev, prev) << "alpha=" << alpha;  // closer to k/E as alpha grows
      prev = dev;
    }
    EXPECT_LT(prev, 1e-5);
  }
}

TEST(LapSum, PlanKeepsWeightsAboveTauBestFirstAndFigures) {
  const int32_t E = 32, k = 4;
  auto b = gaussian_batch(500, E, 3);
  for (int64_t t = 0; t < b.num_tokens;
       t += 9)  // ties: equal logits must keep the lower index first
    for (int32_t e = 0; e < E; e += 2) b.logits[t * E + e + 1] = b.logits[t * E + e];
  for (double tau : {0.0, 0.01, 0.2}) {
    auto r = lapsum_router(E, k, 1, {{"alpha", "0.7"}, {"tau", std::to_string(tau)}});
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    lapsum::Workspace ws;
    double mass = 0;
    int64_t kept = 0;
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      const float* z = b.logits.data() + t * E;
      const double beta = bisect_beta(z, E, k, 0.7);
      const auto p = reference_p(z, E, 0.7, beta);
      std::vector<int32_t> want;
      for (int32_t e = 0; e < E; ++e) {
        if (p[e] >= tau && p[e] > 0)
          want.push_back(e);
        else
          mass += p[e];
      }
      std::stable_sort(want.begin(), want.end(), [&](int32_t x, int32_t y) { return z[x] > z[y]; });
      ASSERT_EQ(plan.count(t), static_cast<int64_t>(want.size())) << "tau=" << tau << " t=" << t;
      for (size_t q = 0; q < want.size(); ++q) {
        ASSERT_EQ(plan.expert[plan.offsets[t] + static_cast<int64_t>(q)], want[q])
            << "tau=" << tau << " t=" << t;
        ASSERT_NEAR(plan.weight[plan.offsets[t] + static_cast<int64_t>(q)], p[want[q]], 1e-6);
      }
      kept += static_cast<int64_t>(want.size());
    }
    const auto names = r->figure_names();
    const auto fig = r->figures();
    ASSERT_EQ(names,
              (std::vector<std::string>{"k_layer", "mean_active_experts", "mass_truncated"}));
    EXPECT_EQ(fig[0], k);
    EXPECT_DOUBLE_EQ(fig[1], static_cast<double>(kept) / static_cast<double>(b.num_tokens));
    EXPECT_NEAR(fig[2], mass / static_cast<double>(b.num_tokens), 1e-9);
    if (tau == 0.0) {
      EXPECT_EQ(fig[2], 0.0);
    }
    if (tau == 0.2) {
      EXPECT_GT(fig[2], 0.0);
    }
  }
}

TEST(LapSum, KProfiles) {
  const int32_t E = 16, k = 2, L = 4;
  auto b = gaussian_batch(64, E, 9);
  auto k_of = [&](std::unique_ptr<Router> r) {
    std::vector<double> ks;
    RoutingPlan plan;
    for (int32_t l = 0; l < L; ++l) {
      b.layer = l;
      r->route(b, Comm::self(), plan);
      ks.push_back(r->figures()[0]);
    }
    return ks;
  };
  EXPECT_EQ(k_of(lapsum_router(E, k, L)), (std::vector<double>{2, 2, 2, 2}));
  const auto rising = k_of(lapsum_router(E, k, L, {{"k_profile", "rising"}}));
  EXPECT_NEAR(std::accumulate(rising.begin(), rising.end(), 0.0), L * k, 1e-12);
  for (int32_t l = 0; l < L; ++l) EXPECT_NEAR(rising[l], 2.0 * k * (l + 1) / (L + 1), 1e-12);
  EXPECT_EQ(k_of(lapsum_router(E, k, L, {{"k_profile", "1,1.5,2.5,3"}})),
            (std::vector<double>{1, 1.5, 2.5, 3}));
  // The mean number of experts follows k_l when alpha is small against the logit gaps.
  auto r =
      lapsum_router(E, k, L, {{"k_profile", "0.5,1.5,2.5,3.5"}, {"alpha", "0.01"}, {"tau", "0.5"}});
  RoutingPlan plan;
  double prev = -1;
  for (int32_t l = 0; l < L; ++l) {
    b.layer = l;
    r->route(b, Comm::self(), plan);
    EXPECT_GT(r->figures()[1], prev);
    prev = r->figures()[1];
  }
  EXPECT_THROW(lapsum_router(E, k, L, {{"k_profile", "1,1,1,1"}}), InputError);  // sum 4 != 8
  EXPECT_THROW(lapsum_router(E, k, L, {{"k_profile", "2,2,4"}}),
               InputError);  // 3 values for 4 layers
  EXPECT_THROW(lapsum_router(E, k, L, {{"k_profile", "2,2,x,2"}}), InputError);
  EXPECT_THROW(lapsum_router(E, k, L, {{"k_profile", "-1,3,3,3"}}), InputError);  // k_l must be > 0
  EXPECT_THROW(lapsum_router(E, k, L, {{"k_profile", "16,-8,0,0"}}), InputError);
  EXPECT_THROW(lapsum_router(E, k, L, {{"k_profile", "falling"}}), InputError);
  EXPECT_THROW(lapsum_router(E, k, L, {{"alpha", "0"}}), InputError);
  EXPECT_THROW(lapsum_router(E, k, L, {{"alpha", "-1"}}), InputError);
  EXPECT_THROW(lapsum_router(E, k, L, {{"tau", "1"}}), InputError);
  EXPECT_THROW(lapsum_router(E, k, L, {{"tau", "-0.1"}}), InputError);
  EXPECT_THROW(lapsum_router(E, E, L), InputError);  // k = E leaves nothing to choose
  EXPECT_THROW(lapsum_router(E, k, L, {{"beta", "1"}}), InputError);
  EXPECT_NO_THROW(lapsum_router(E, k, L, {{"k_profile", " 1, 1.5 ,2.5,3"}}));
}

TEST(LapSum, RefusesNonFiniteLogitsAndTopKTraces) {
  auto b = gaussian_batch(16, 8, 1);
  b.logits[3 * 8 + 2] = INFINITY;
  RoutingPlan plan;
  EXPECT_THROW(lapsum_router(8, 2, 1)->route(b, Comm::self(), plan), Error);
  b.full_logits = false;
  EXPECT_NE(lapsum_router(8, 2, 1)->missing_input(b), "");
}
