// Expert-Token Resonance (harness/routing/etr.cpp, ROUTERS.md §7) on one process: TCR is top-l of
// the softmax affinity, ECR keeps each expert's most affine candidates up to C, the capacity
// follows Remark 7 (or the capacity_ratio override), and the figures agree with a brute-force
// recount.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {

std::unique_ptr<Router> make_etr(int32_t E, int32_t k,
                                 std::map<std::string, std::string> args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  return make_router("etr", s, args);
}

// Skewed logits (expert e gets +skew*e/E) so that experts overflow their capacity.
TokenBatch skewed_batch(int64_t tokens, int32_t experts, uint64_t seed, double skew) {
  TokenBatch b;
  b.num_tokens = tokens;
  b.num_experts = experts;
  b.global_tokens = tokens;
  b.tokens_per_rank = tokens;
  b.logits.resize(static_cast<size_t>(tokens * experts));
  b.sequence.assign(static_cast<size_t>(tokens), 0);
  b.position.resize(static_cast<size_t>(tokens));
  std::iota(b.position.begin(), b.position.end(), 0);
  const uint64_t key = rng::key(seed);
  for (int64_t t = 0; t < tokens; ++t)
    for (int32_t e = 0; e < experts; ++e)
      b.logits[t * experts + e] =
          static_cast<float>(1.5 * rng::normal(key, t * experts + e) + skew * e / experts);
  return b;
}

std::map<std::string, double> figures_of(const Router& r) {
  std::map<std::string, double> out;
  const auto names = r.figure_names();
  const auto values = r.figures();
  EXPECT_EQ(names.size(), values.size());
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) out[names[i]] = values[i];
  return out;
}

// softmax(z)_e in double.
double prob(const TokenBatch& b, int64_t t, int32_t e) {
  const float* z = b.logits.data() + t * b.num_experts;
  const double m = *std::max_element(z, z + b.num_experts);
  double sum = 0;
  for (int32_t i = 0; i < b.num_experts; ++i) sum += std::exp(z[i] - m);
  return std::exp(z[e] - m) / sum;
}

std::vector<int32_t> top_l(const TokenBatch& b, int64_t t, int32_t l) {
  const float* z = b.logits.data() + t * b.num_experts;
  std::vector<int32_t> idx(b.num_experts);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t x, int32_t y) { return z[x] > z[y]; });
  idx.resize(l);
  return idx;
}

struct Recount {
  std::vector<int64_t> demand, load;
  int64_t dropped = 0, fully_dropped = 0;
  double rank_sum = 0, choice_sum = 0;
};

// Checks the plan against the definition of TCR + ECR with capacity C and recounts the figures.
Recount check_plan(const TokenBatch& b, const RoutingPlan& plan, int32_t l, int64_t C,
                   const std::string& what) {
  const int32_t E = b.num_experts;
  Recount rc;
  rc.demand.assign(E, 0);
  rc.load.assign(E, 0);
  // Per expert: (affinity, token, kept, TCR position) of every candidate.
  struct Cand {
    double p;
    int64_t t;
    bool kept;
    int32_t j;
  };
  std::vector<std::vector<Cand>> cands(E);
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const auto want = top_l(b, t, l);
    // The plan keeps a subsequence of the TCR list, in TCR order.
    size_t next = 0;
    int32_t kept_here = 0;
    for (int32_t j = 0; j < l; ++j) {
      const bool kept = next < static_cast<size_t>(plan.count(t)) &&
                        plan.expert[plan.offsets[t] + next] == want[j];
      if (kept) ++next;
      kept_here += kept;
      cands[want[j]].push_back({prob(b, t, want[j]), t, kept, j});
    }
    EXPECT_EQ(next, static_cast<size_t>(plan.count(t)))
        << what << ": token " << t << " has experts outside its TCR top-l";
    rc.fully_dropped += kept_here == 0;
  }
  for (int32_t e = 0; e < E; ++e) {
    auto& c = cands[e];
    rc.demand[e] = static_cast<int64_t>(c.size());
    std::stable_sort(c.begin(), c.end(), [](const Cand& x, const Cand& y) { return x.p > y.p; });
    double min_kept = INFINITY, max_dropped = -INFINITY;
    for (size_t i = 0; i < c.size(); ++i) {
      if (c[i].kept) {
        ++rc.load[e];
        min_kept = std::min(min_kept, c[i].p);
      } else {
        ++rc.dropped;
        max_dropped = std::max(max_dropped, c[i].p);
        rc.rank_sum += static_cast<double>(i + 1);
        rc.choice_sum += c[i].j + 1;
      }
    }
    EXPECT_LE(rc.load[e], C) << what << ": expert " << e << " over capacity";
    EXPECT_EQ(rc.load[e], std::min<int64_t>(C, rc.demand[e]))
        << what << ": expert " << e << " must keep min(C, candidates)";
    // ECR keeps the most affine candidates (up to float rounding of the affinity).
    if (max_dropped > -INFINITY) {
      EXPECT_GE(min_kept, max_dropped - 1e-5 * max_dropped)
          << what << ": expert " << e << " dropped a more affine token";
    }
  }
  return rc;
}

}  // namespace

TEST(Etr, EcrKeepsTheMostAffineTokensUpToCapacity) {
  const int32_t E = 16, l = 2;
  const auto b = skewed_batch(3000, E, 7, 3.0);
  for (const char* ratio : {"1", "0.6"}) {
    auto r = make_etr(E, l, {{"capacity_ratio", ratio}});
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    auto f = figures_of(*r);
    const int64_t c_base = static_cast<int64_t>(std::ceil(1.1 * l * 3000 / E - 1e-9));
    EXPECT_EQ(f["c_base"], c_base);
    EXPECT_EQ(f["c_etr"], std::ceil(std::stod(ratio) * c_base - 1e-9));
    const auto rc =
        check_plan(b, plan, l, static_cast<int64_t>(f["c_etr"]), std::string("ratio ") + ratio);
    ASSERT_GT(rc.dropped, 0) << "the skewed batch should overflow some experts";
    EXPECT_EQ(f["ecr_active"], 1.0);
    EXPECT_DOUBLE_EQ(f["ecr_drop_rate"], static_cast<double>(rc.dropped) / (3000.0 * l));
    EXPECT_DOUBLE_EQ(f["dropped_affinity_rank_mean"],
                     rc.rank_sum / static_cast<double>(rc.dropped));
    EXPECT_DOUBLE_EQ(f["dropped_choice_mean"], rc.choice_sum / static_cast<double>(rc.dropped));
    EXPECT_DOUBLE_EQ(f["token_drop_rate"], static_cast<double>(rc.fully_dropped) / 3000.0);
    EXPECT_EQ(f["max_expert_load"],
              static_cast<double>(*std::max_element(rc.load.begin(), rc.load.end())));
    EXPECT_LE(f["max_expert_load"], f["c_etr"]);
    // Weights: the token's softmax probabilities renormalised over its l TCR choices.
    for (int64_t t = 0; t < 50; ++t) {
      const auto want = top_l(b, t, l);
      double norm = 0;
      for (int32_t e : want) norm += prob(b, t, e);
      for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a)
        ASSERT_NEAR(plan.weight[a], prob(b, t, plan.expert[a]) / norm, 1e-5);
    }
  }
}

TEST(Etr, RemarkSevenCapacityAtTheDefaultShape) {
  // Default shape: E = 64, l = top_k = 6, 8 EP ranks x 4096 tokens.
  const int32_t E = 64, k = 6;
  const int64_t T = 8 * 4096;
  const auto b = skewed_batch(T, E, 3, 0.0);
  auto r = make_etr(E, k);
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  auto f = figures_of(*r);
  const double c_base = std::ceil(1.1 * k * T / E - 1e-9);
  const double x = 0.0757 * 0.0757;
  const double c_min = std::exp(4096 * x / (2 - x)) / E;
  EXPECT_EQ(f["c_base"], c_base);
  EXPECT_NEAR(f["c_min"], c_min, 1e-9 * c_min);
  EXPECT_EQ(f["c_etr"], std::min(c_base, std::ceil(c_min)));
  EXPECT_NEAR(f["c_ratio"], 0.6, 0.01)
      << "the default delta_max is chosen for C_ETR/C_base ~ 0.6 here";
  const auto rc = check_plan(b, plan, k, static_cast<int64_t>(f["c_etr"]), "default shape");
  std::printf(
      "[etr default shape E=64 l=6 T=32768] C_base=%g C_ETR=%g C_ETR/C_base=%.4f "
      "ecr_drop_rate=%.4f "
      "dropped_affinity_rank_mean=%.1f dropped_choice_mean=%.3f token_drop_rate=%.4f\n",
      f["c_base"], f["c_etr"], f["c_ratio"], f["ecr_drop_rate"], f["dropped_affinity_rank_mean"],
      f["dropped_choice_mean"], f["token_drop_rate"]);
  RecordProperty("c_ratio", std::to_string(f["c_ratio"]));
  RecordProperty("ecr_drop_rate", std::to_string(f["ecr_drop_rate"]));
  EXPECT_GT(f["ecr_drop_rate"], 0.0) << "C = 0.6 C_base must drop on balanced logits";
  EXPECT_DOUBLE_EQ(f["ecr_drop_rate"],
                   static_cast<double>(rc.dropped) / (static_cast<double>(T) * k));

  // Clamps: a tiny delta_max falls to c_floor, a large one to C_base.
  auto lo = make_etr(E, k, {{"delta_max", "0.001"}, {"c_floor", "7"}});
  lo->route(b, Comm::self(), plan);
  EXPECT_EQ(figures_of(*lo)["c_etr"], 7);
  check_plan(b, plan, k, 7, "c_floor");
  auto hi = make_etr(E, k, {{"delta_max", "0.5"}});
  hi->route(b, Comm::self(), plan);
  EXPECT_EQ(figures_of(*hi)["c_etr"], c_base);
}

TEST(Etr, CapacityRatioSweepIsMonotone) {
  const int32_t E = 32, l = 4;
  const auto b = skewed_batch(4000, E, 11, 1.0);
  double prev_c = INFINITY, prev_drop = -1;
  for (const char* ratio : {"1", "0.8", "0.6", "0.4"}) {
    auto r = make_etr(E, l, {{"capacity_ratio", ratio}});
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    auto f = figures_of(*r);
    std::printf(
        "[etr sweep E=32 l=4 T=4000] capacity_ratio=%s C=%g C/C_base=%.3f ecr_drop_rate=%.4f "
        "dropped_affinity_rank_mean=%.1f\n",
        ratio, f["c_etr"], f["c_ratio"], f["ecr_drop_rate"], f["dropped_affinity_rank_mean"]);
    EXPECT_LT(f["c_etr"], prev_c) << ratio;
    EXPECT_GT(f["ecr_drop_rate"], prev_drop) << ratio << ": smaller C must drop more";
    EXPECT_NEAR(f["c_ratio"], std::stod(ratio), 0.01);
    check_plan(b, plan, l, static_cast<int64_t>(f["c_etr"]), ratio);
    prev_c = f["c_etr"];
    prev_drop = f["ecr_drop_rate"];
  }
}

TEST(Etr, SwitchStepRunsTcrOnlyBeforeIt) {
  const int32_t E = 16, l = 2;
  auto b = skewed_batch(2000, E, 5, 3.0);
  auto r = make_etr(E, l, {{"capacity_ratio", "0.5"}, {"switch_step", "2"}});
  RoutingPlan plan;
  for (int32_t step = 0; step < 4; ++step) {
    b.step = step;
    r->route(b, Comm::self(), plan);
    auto f = figures_of(*r);
    if (step < 2) {
      EXPECT_EQ(f["ecr_active"], 0.0);
      EXPECT_EQ(plan.assignments(), 2000 * l) << "TCR only: nothing dropped";
      EXPECT_EQ(f["ecr_drop_rate"], 0.0);
      EXPECT_TRUE(std::isnan(f["dropped_affinity_rank_mean"]));
      EXPECT_GT(f["max_expert_load"], f["c_etr"]) << "the skewed batch overflows C without ECR";
    } else {
      EXPECT_EQ(f["ecr_active"], 1.0);
      EXPECT_GT(f["ecr_drop_rate"], 0.0);
      check_plan(b, plan, l, static_cast<int64_t>(f["c_etr"]), "after the switch");
    }
  }
}

TEST(Etr, KnobsAndInputs) {
  EXPECT_THROW(make_etr(8, 2, {{"l", "0"}}), InputError);
  EXPECT_THROW(make_etr(8, 2, {{"l", "9"}}), InputError);
  EXPECT_THROW(make_etr(8, 2, {{"delta_max", "1.5"}}), InputError);
  EXPECT_THROW(make_etr(8, 2, {{"capacity_ratio", "-0.5"}}), InputError);
  EXPECT_THROW(make_etr(8, 2, {{"c_floor", "0"}}), InputError);
  EXPECT_THROW(make_etr(8, 2, {{"switch_step", "-1"}}), InputError);
  EXPECT_THROW(make_etr(8, 2, {{"capacity", "3"}}), InputError);
  // l differs from top_k: TCR takes l experts.
  const auto b = skewed_batch(500, 8, 2, 0.0);
  auto r = make_etr(8, 2, {{"l", "1"}, {"capacity_ratio", "1"}});
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  for (int64_t t = 0; t < b.num_tokens; ++t) ASSERT_LE(plan.count(t), 1);
  check_plan(b, plan, 1, static_cast<int64_t>(figures_of(*r)["c_etr"]), "l=1");
  auto missing = b;
  missing.full_logits = false;
  EXPECT_NE(r->missing_input(missing), "");
  EXPECT_EQ(r->missing_input(b), "");
}
