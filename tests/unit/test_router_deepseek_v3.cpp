// deepseek_v3 router (ROUTERS.md §2): group limit, loss-free bias, combine weights, knobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {

// Logits on a 1/64 grid in [-6, 6]: distinct logits are far enough apart that the float sigmoid
// of the router and the double sigmoid of the references order them the same way, and equal
// logits (frequent) exercise the tie rules.
TokenBatch grid_batch(int64_t tokens, int32_t experts, uint64_t seed, double std_dev = 2.0) {
  TokenBatch b;
  b.num_tokens = tokens;
  b.num_experts = experts;
  b.global_tokens = tokens;
  b.tokens_per_rank = tokens;
  b.logits.resize(static_cast<size_t>(tokens * experts));
  const uint64_t key = rng::key(seed);
  for (size_t i = 0; i < b.logits.size(); ++i) {
    const double z = std::clamp(std_dev * rng::normal(key, i), -6.0, 6.0);
    b.logits[i] = static_cast<float>(std::round(z * 64.0) / 64.0);
  }
  return b;
}

std::unique_ptr<Router> make(const std::string& name, int32_t E, int32_t k,
                             std::map<std::string, std::string> args = {}, int32_t nodes = 1) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 2;
  s.topology.nodes = nodes;
  s.topology.ranks_per_node = 1;
  return make_router(name, s, args);
}

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

size_t figure(const Router& r, const std::string& name) {
  const auto names = r.figure_names();
  const auto it = std::find(names.begin(), names.end(), name);
  EXPECT_NE(it, names.end()) << name;
  return static_cast<size_t>(it - names.begin());
}

// Reference group-limited selection in double, with bias b: indices best first, ties to the lower
// index (stable sort); also the unmasked top-k score sum minus the masked one.
std::vector<int32_t> reference_select(const float* z, int32_t E, int32_t k, int32_t G, int32_t M,
                                      const std::vector<double>& b, double* removed,
                                      int32_t group_n = 2) {
  const int32_t gs = E / G;
  std::vector<double> sp(E);
  for (int32_t e = 0; e < E; ++e) sp[e] = sigmoid(z[e]) + b[e];
  std::vector<double> gscore(G);
  for (int32_t g = 0; g < G; ++g) {
    std::vector<double> v(sp.begin() + g * gs, sp.begin() + (g + 1) * gs);
    std::sort(v.begin(), v.end(), std::greater<>());
    gscore[g] = 0;
    for (int32_t j = 0; j < std::min(group_n, gs); ++j) gscore[g] += v[j];
  }
  std::vector<int32_t> gorder(G);
  std::iota(gorder.begin(), gorder.end(), 0);
  std::stable_sort(gorder.begin(), gorder.end(),
                   [&](int32_t a, int32_t c) { return gscore[a] > gscore[c]; });
  std::vector<bool> keep(G, false);
  for (int32_t j = 0; j < std::min(M, G); ++j) keep[gorder[j]] = true;
  std::vector<int32_t> all(E), kept;
  std::iota(all.begin(), all.end(), 0);
  std::stable_sort(all.begin(), all.end(), [&](int32_t a, int32_t c) { return sp[a] > sp[c]; });
  for (int32_t e : all)
    if (keep[e / gs]) kept.push_back(e);
  kept.resize(k);
  double free_sum = 0, kept_sum = 0;
  for (int32_t j = 0; j < k; ++j) {
    free_sum += sp[all[j]];
    kept_sum += sp[kept[j]];
  }
  *removed = free_sum - kept_sum;
  return kept;
}

RunConfig pipeline_config(const std::string& router_args_gamma, int32_t groups, int32_t steps) {
  RunConfig c;
  c.workload = "zipf";
  c.workload_args["zipf"] = {{"s", "1.0"}};
  c.routers = {"deepseek_v3"};
  c.router_args["deepseek_v3"] = {{"gamma", router_args_gamma}, {"groups", std::to_string(groups)}};
  c.experts = 32;
  c.top_k = 4;
  c.layers = 2;
  c.steps = steps;
  c.tokens_per_rank = 512;
  c.seq_len = 64;
  c.ep_size = 4;
  c.nodes = 2;
  c.hidden = 32;
  c.capacity_factor = 0;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, 1);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}

}  // namespace

TEST(DeepseekV3, GroupLimitMatchesReferenceAndHoldsAtMostMGroups) {
  for (auto [E, k, G, M] :
       {std::tuple{64, 8, 8, 3}, {64, 6, 8, 4}, {32, 4, 4, 1}, {16, 3, 16, 5}, {24, 5, 3, 2}}) {
    auto r = make("deepseek_v3", E, k,
                  {{"groups", std::to_string(G)}, {"topk_group", std::to_string(M)}});
    const auto b = grid_batch(301, E, 7 + E + M);
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    ASSERT_EQ(plan.assignments(), b.num_tokens * k);
    const std::vector<double> zero(E, 0.0);
    const int32_t gs = E / G;
    double groups_sum = 0, removed_sum = 0;
    std::vector<int64_t> counts(E, 0);
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      const float* z = b.logits.data() + t * E;
      double removed = 0;
      const auto want = reference_select(z, E, k, G, M, zero, &removed);
      removed_sum += removed;
      std::set<int32_t> groups;
      double ssum = 0;
      for (int32_t j = 0; j < k; ++j) ssum += sigmoid(z[want[j]]);
      for (int32_t j = 0; j < k; ++j) {
        const int32_t e = plan.expert[t * k + j];
        ASSERT_EQ(e, want[j]) << "E=" << E << " G=" << G << " M=" << M << " t=" << t << " j=" << j;
        groups.insert(e / gs);
        ++counts[e];
        ASSERT_NEAR(plan.weight[t * k + j], 2.5 * sigmoid(z[e]) / ssum, 2e-6);
      }
      ASSERT_LE(static_cast<int32_t>(groups.size()), M) << "t=" << t;
      groups_sum += static_cast<double>(groups.size());
    }
    const auto f = r->figures();
    const double T = static_cast<double>(b.num_tokens);
    EXPECT_NEAR(f[figure(*r, "groups_per_token_mean")], groups_sum / T, 1e-12);
    EXPECT_NEAR(f[figure(*r, "score_mass_removed")], removed_sum / T, 1e-6);
    if (gs > 1) {  // (with single-expert groups and M >= k the mask keeps the top-k anyway)
      EXPECT_GT(f[figure(*r, "score_mass_removed")], 0.0)
          << "the mask should cost something on random logits";
    }
    const double mean = static_cast<double>(T * k) / E;
    EXPECT_NEAR(
        f[figure(*r, "max_vio")],
        (static_cast<double>(*std::max_element(counts.begin(), counts.end())) - mean) / mean,
        1e-12);
    EXPECT_EQ(f[figure(*r, "bias_abs_mean")], 0.0);
  }
}

TEST(DeepseekV3, LimitOffWhenTopkGroupCoversAllGroups) {
  const int32_t E = 32, k = 4;
  auto r = make("deepseek_v3", E, k, {{"groups", "4"}, {"topk_group", "4"}});
  const auto b = grid_batch(200, E, 3);
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  EXPECT_EQ(r->figures()[figure(*r, "score_mass_removed")], 0.0);
  // groups_per_token_mean still counts the groups (nodes) a token reaches without the limit.
  EXPECT_GT(r->figures()[figure(*r, "groups_per_token_mean")], 1.0);
}

TEST(DeepseekV3, BiasFollowsSignRuleSteersSelectionButNotWeights) {
  const int32_t E = 32, k = 4;
  const double gamma = 0.05;
  auto r = make("deepseek_v3", E, k, {{"gamma", "0.05"}, {"groups", "1"}});
  auto b = grid_batch(400, E, 11);
  for (int64_t t = 0; t < b.num_tokens; ++t)  // skew: low-index experts are popular
    for (int32_t e = 0; e < E; ++e) b.logits[t * E + e] += static_cast<float>(-e / 16.0);
  b.layer = 1;
  RoutingPlan first, second;
  r->route(b, Comm::self(), first);
  std::vector<int64_t> c(E, 0);
  for (int32_t e : first.expert) ++c[e];
  const int64_t total = std::accumulate(c.begin(), c.end(), int64_t{0});
  std::vector<double> bias(E);
  int32_t moved = 0;
  for (int32_t e = 0; e < E; ++e) {
    const int64_t d = total - static_cast<int64_t>(E) * c[e];  // sign(c_mean - c_e)
    bias[e] =
        static_cast<double>(static_cast<float>(gamma)) * static_cast<double>((d > 0) - (d < 0));
    moved += d != 0;
  }
  ASSERT_GT(moved, 0);
  const double vio_before = r->figures()[figure(*r, "max_vio")];
  r->end_step(Comm::self());
  r->route(b, Comm::self(), second);
  EXPECT_NEAR(r->figures()[figure(*r, "bias_abs_mean")], gamma * moved / E, 1e-8);
  EXPECT_LT(r->figures()[figure(*r, "max_vio")], vio_before)
      << "one bias step should already even out the skew";
  EXPECT_NE(first.expert, second.expert) << "the bias should change some selections";
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const float* z = b.logits.data() + t * E;
    std::vector<bool> chosen(E, false);
    double ssum = 0;
    for (int32_t j = 0; j < k; ++j) {
      chosen[second.expert[t * k + j]] = true;
      ssum += sigmoid(z[second.expert[t * k + j]]);
    }
    // The selection is the top-k of s + b (up to float rounding), best first.
    double worst_chosen = 1e9, best_other = -1e9;
    for (int32_t j = 0; j < k; ++j) {
      const int32_t e = second.expert[t * k + j];
      const double sp = sigmoid(z[e]) + bias[e];
      if (j > 0) {
        const int32_t prev = second.expert[t * k + j - 1];
        ASSERT_GE(sigmoid(z[prev]) + bias[prev], sp - 1e-6) << "t=" << t;
      }
      worst_chosen = std::min(worst_chosen, sp);
    }
    for (int32_t e = 0; e < E; ++e)
      if (!chosen[e]) best_other = std::max(best_other, sigmoid(z[e]) + bias[e]);
    ASSERT_GE(worst_chosen, best_other - 1e-6) << "t=" << t;
    // The weights use the unbiased s (a biased formula would be off by ~gamma).
    for (int32_t j = 0; j < k; ++j)
      ASSERT_NEAR(second.weight[t * k + j], 2.5 * sigmoid(z[second.expert[t * k + j]]) / ssum, 2e-6)
          << "t=" << t;
  }
  // Layer 0 was never routed: its bias is untouched.
  b.layer = 0;
  r->route(b, Comm::self(), second);
  EXPECT_EQ(r->figures()[figure(*r, "bias_abs_mean")], 0.0);
  EXPECT_EQ(first.expert, second.expert);
}

TEST(DeepseekV3, WithoutBiasAndLimitEqualsSigmoidTopK) {
  for (auto args :
       {std::map<std::string, std::string>{{"gamma", "0"}, {"groups", "4"}, {"topk_group", "4"}},
        std::map<std::string, std::string>{{"gamma", "0"}, {"groups", "8"}, {"topk_group", "9"}},
        std::map<std::string, std::string>{{"gamma", "0"}}}) {
    const int32_t E = 64, k = 6;
    auto dsv3 = make("deepseek_v3", E, k, args);
    auto sig = make("sigmoid_topk", E, k, {{"renormalize", "true"}, {"scaling_factor", "2.5"}});
    for (int step = 0; step < 3; ++step) {
      const auto b = grid_batch(257, E, 100 + static_cast<uint64_t>(step), 1.5);
      RoutingPlan p1, p2;
      dsv3->route(b, Comm::self(), p1);
      sig->route(b, Comm::self(), p2);
      ASSERT_EQ(p1.offsets, p2.offsets);
      ASSERT_EQ(p1.expert, p2.expert) << "step " << step;
      for (size_t a = 0; a < p1.weight.size(); ++a) ASSERT_NEAR(p1.weight[a], p2.weight[a], 2e-6);
      EXPECT_EQ(dsv3->figures()[figure(*dsv3, "bias_abs_mean")], 0.0);
      dsv3->end_step(Comm::self());
    }
  }
}

TEST(DeepseekV3, MaxVioFallsOverStepsOnZipf) {
  for (int32_t groups : {1, 2}) {  // 2 groups of 16 with the default topk_group = 1
    const auto cfg = pipeline_config("0.05", groups, 20);
    const auto out = run_pipeline(cfg, Comm::self(), RunOptions{true, false});
    const auto& names = out.figure_names[0];
    const size_t vio =
        static_cast<size_t>(std::find(names.begin(), names.end(), "max_vio") - names.begin());
    const size_t babs =
        static_cast<size_t>(std::find(names.begin(), names.end(), "bias_abs_mean") - names.begin());
    ASSERT_LT(vio, names.size());
    const auto& rec = out.records[0];
    ASSERT_EQ(rec.size(), 40u);
    for (int32_t layer = 0; layer < 2; ++layer) {
      const double early = rec[static_cast<size_t>(layer)].figures[vio];
      double late = 0;
      for (int32_t s = 15; s < 20; ++s)
        late += rec[static_cast<size_t>(s * 2 + layer)].figures[vio] / 5;
      EXPECT_GT(early, 1.0) << "zipf(1) should start skewed";
      EXPECT_LT(late, 0.4 * early)
          << "groups=" << groups << " layer " << layer << ": early " << early << " late " << late;
      EXPECT_EQ(rec[static_cast<size_t>(layer)].figures[babs], 0.0);
      EXPECT_GT(rec[static_cast<size_t>(19 * 2 + layer)].figures[babs], 0.05);
    }
  }
  // gamma = 0: no correction, the skew stays.
  const auto out = run_pipeline(pipeline_config("0", 1, 6), Comm::self(), RunOptions{true, false});
  const auto& rec = out.records[0];
  for (const auto& m : rec) {
    EXPECT_GT(m.figures[0], 1.0);
    EXPECT_EQ(m.figures[1], 0.0);
  }
}

TEST(DeepseekV3, KnobValidation) {
  const auto bad = [](std::map<std::string, std::string> args, const std::string& key,
                      int32_t E = 32, int32_t k = 4) {
    try {
      make("deepseek_v3", E, k, args);
      ADD_FAILURE() << "accepted " << key;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  bad({{"gamma", "-0.001"}}, "gamma");
  bad({{"gamma", "fast"}}, "gamma");
  bad({{"groups", "3"}}, "groups");
  bad({{"groups", "0"}}, "groups");
  bad({{"groups", "64"}}, "groups");
  bad({{"groups", "8"}, {"topk_group", "0"}}, "topk_group");
  bad({{"groups", "8"}, {"topk_group", "1"}}, "topk_group", 32, 6);  // 1 group of 4 cannot hold 6
  bad({{"routed_scaling_factor", "0"}}, "routed_scaling_factor");
  bad({{"bias", "1"}}, "bias");
  // Defaults: groups = nodes when they divide E, topk_group raised to hold k.
  EXPECT_NO_THROW(make("deepseek_v3", 16, 6, {}, 16));
  EXPECT_NO_THROW(make("deepseek_v3", 30, 4, {}, 4));  // 4 does not divide 30: one group
  EXPECT_NO_THROW(make("deepseek_v3", 32, 6, {{"groups", "8"}, {"topk_group", "8"}}));
}

TEST(DeepseekV3, DefaultGroupsFollowTheNodes) {
  const int32_t E = 32, k = 4;
  auto r = make("deepseek_v3", E, k, {}, 4);  // 4 groups of 8, keep 2
  const auto b = grid_batch(300, E, 5);
  RoutingPlan plan;
  r->route(b, Comm::self(), plan);
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    std::set<int32_t> g;
    for (int32_t j = 0; j < k; ++j) g.insert(plan.expert[t * k + j] / 8);
    ASSERT_LE(g.size(), 2u);
  }
  EXPECT_GT(r->figures()[figure(*r, "score_mass_removed")], 0.0);
}

TEST(DeepseekV3, NeedsFullLogits) {
  auto r = make("deepseek_v3", 16, 2);
  TokenBatch b = grid_batch(8, 16, 1);
  EXPECT_EQ(r->missing_input(b), "");
  b.full_logits = false;
  EXPECT_NE(r->missing_input(b), "");
}

// group_score=topk_per_group (Megatron-Core's group_limited_topk): a group's score sums its
// k / M largest s'. E = 32 in G = 4 groups of 8, M = 1, k = 4: the group score is the top-4 sum
// (the default top2 differs), and the selection equals the double-precision reference.
TEST(DeepseekV3, GroupScoreTopkPerGroupMatchesItsReference) {
  const int32_t E = 32, k = 4, G = 4, M = 1;
  const auto b = grid_batch(2000, E, 11);
  const std::vector<double> zero(E, 0.0);
  int64_t differ = 0;
  for (const char* mode : {"top2", "topk_per_group"}) {
    auto r = make("deepseek_v3", E, k,
                  {{"groups", "4"}, {"topk_group", "1"}, {"gamma", "0"}, {"group_score", mode}});
    RoutingPlan plan;
    r->route(b, Comm::self(), plan);
    const int32_t n = std::string(mode) == "top2" ? 2 : k / M;
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      double removed = 0;
      const auto want = reference_select(b.logits.data() + t * E, E, k, G, M, zero, &removed, n);
      const std::vector<int32_t> got(plan.expert.begin() + plan.offsets[t],
                                     plan.expert.begin() + plan.offsets[t + 1]);
      ASSERT_EQ(got, want) << mode << " token " << t;
      if (n != 2) {
        double r2 = 0;
        differ += reference_select(b.logits.data() + t * E, E, k, G, M, zero, &r2, 2) != want;
      }
    }
  }
  EXPECT_GT(differ, 20) << "the two group scores should choose different groups for some tokens";
  // k / M must be in [1, experts per group].
  EXPECT_THROW(make("deepseek_v3", E, 2,
                    {{"groups", "4"}, {"topk_group", "3"}, {"group_score", "topk_per_group"}}),
               InputError);
  EXPECT_THROW(make("deepseek_v3", E, k, {{"group_score", "top3"}}), InputError);
}

// bias_counts=kept (Megatron-Core) updates the bias from the loads the capacity stage kept;
// selected (default) from the selections. A first batch sends every token to experts 0 and 1; the
// kept loads say experts 5 and 6 were starved. After the update, a batch of equal logits picks the
// experts the bias favours: {2, 3} (selected: 0 and 1 are over the mean, the rest under, ties to
// the lower index) or {5, 6} (kept: only 5 and 6 under the mean).
TEST(DeepseekV3, BiasCountsSelectedOrKept) {
  const int32_t E = 8, k = 2;
  TokenBatch skew;
  skew.num_tokens = 16;
  skew.num_experts = E;
  skew.global_tokens = 16;
  skew.tokens_per_rank = 16;
  skew.logits.assign(static_cast<size_t>(16 * E), -5.0f);
  for (int64_t t = 0; t < 16; ++t) skew.logits[t * E + 0] = skew.logits[t * E + 1] = 5.0f;
  TokenBatch flat = skew;
  std::fill(flat.logits.begin(), flat.logits.end(), 0.0f);
  for (const char* mode : {"selected", "kept"}) {
    auto r = make("deepseek_v3", E, k, {{"gamma", "1"}, {"groups", "1"}, {"bias_counts", mode}});
    RoutingPlan plan;
    r->route(skew, Comm::self(), plan);
    r->observe_kept(0, {10, 10, 10, 10, 10, 0, 0, 10});
    r->end_step(Comm::self());
    r->route(flat, Comm::self(), plan);
    const std::vector<int32_t> want =
        std::string(mode) == "kept" ? std::vector<int32_t>{5, 6} : std::vector<int32_t>{2, 3};
    for (int64_t t = 0; t < flat.num_tokens; ++t)
      ASSERT_EQ(std::vector<int32_t>(plan.expert.begin() + plan.offsets[t],
                                     plan.expert.begin() + plan.offsets[t + 1]),
                want)
          << mode;
  }
  EXPECT_THROW(make("deepseek_v3", E, k, {{"bias_counts", "dropped"}}), InputError);
}
