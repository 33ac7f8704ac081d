#include <gtest/gtest.h>

#include "harness/capacity/capacity.hpp"
#include "harness/core/error.hpp"

using namespace moe;

namespace {
// Plan from per-token lists of (expert, weight).
RoutingPlan make_plan(int32_t E,
                      const std::vector<std::vector<std::pair<int32_t, float>>>& tokens) {
  RoutingPlan p;
  p.reset(static_cast<int64_t>(tokens.size()), E, 0);
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (auto [e, w] : tokens[t]) {
      p.expert.push_back(e);
      p.weight.push_back(w);
    }
    p.offsets[t + 1] = static_cast<int64_t>(p.expert.size());
  }
  return p;
}
}  // namespace

TEST(Capacity, Formula) {
  EXPECT_EQ(expert_capacity(0.0, 2, 100, 4), 0);   // unlimited
  EXPECT_EQ(expert_capacity(1.0, 2, 100, 4), 50);  // exactly 50
  EXPECT_EQ(expert_capacity(1.25, 6, 16384, 64), 1920);
  EXPECT_EQ(expert_capacity(1.1, 1, 10, 4), 3);   // ceil(2.75)
  EXPECT_EQ(expert_capacity(0.01, 1, 10, 4), 1);  // at least one slot
}

TEST(Capacity, PositionKeepsFirstChoicesBeforeSecondChoices) {
  // 4 tokens, k=2, E=2, CF such that C = ceil(0.5*2*4/2) = 2.
  // Expert 0 is the 1st choice of tokens 2,3 and the 2nd choice of tokens 0,1.
  auto plan = make_plan(
      2, {{{1, .6f}, {0, .4f}}, {{1, .6f}, {0, .4f}}, {{0, .9f}, {1, .1f}}, {{0, .9f}, {1, .1f}}});
  CapacityResult r;
  apply_capacity(plan, {0.5, 2, "position"}, 4, Comm::self(), r);
  EXPECT_EQ(r.capacity, 2);
  // Expert 0 keeps tokens 2,3 (first choices) and drops tokens 0,1; expert 1 likewise keeps 0,1.
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 0, 1, 0, 1, 0, 1, 0}));
  EXPECT_EQ(r.expert_demand, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(r.expert_load, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(r.dropped_assignments, 4);
  EXPECT_EQ(r.dropped_tokens, 0);
}

TEST(Capacity, PositionTokenOrderAndFullyDroppedTokens) {
  // k=1, 5 tokens all to expert 0, C = ceil(1.0*1*5/2) = 3: tokens 3 and 4 are fully dropped.
  auto plan = make_plan(2, {{{0, 1}}, {{0, 1}}, {{0, 1}}, {{0, 1}}, {{0, 1}}});
  CapacityResult r;
  apply_capacity(plan, {1.0, 1, "position"}, 5, Comm::self(), r);
  EXPECT_EQ(r.capacity, 3);
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 1, 0, 0}));
  EXPECT_EQ(r.dropped_tokens, 2);
}

TEST(Capacity, ProbabilityKeepsHighestWeightsTiesToLowerToken) {
  // k=1 to expert 0 with weights; C = ceil(0.8*1*5/2) = 2.
  auto plan = make_plan(2, {{{0, .2f}}, {{0, .7f}}, {{0, .5f}}, {{0, .5f}}, {{0, .1f}}});
  CapacityResult r;
  apply_capacity(plan, {0.8, 1, "probability"}, 5, Comm::self(), r);
  EXPECT_EQ(r.capacity, 2);
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{0, 1, 1, 0, 0}));  // .7 then the first .5
  EXPECT_EQ(r.expert_load, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(r.dropped_tokens, 3);
}

TEST(Capacity, UnlimitedKeepsAll) {
  auto plan = make_plan(3, {{{0, 1}, {1, 1}}, {{0, 1}, {2, 1}}, {{0, 1}, {1, 1}}});
  for (const char* policy : {"position", "probability"}) {
    CapacityResult r;
    apply_capacity(plan, {0.0, 2, policy}, 3, Comm::self(), r);
    EXPECT_EQ(r.capacity, 0);
    EXPECT_EQ(r.dropped_assignments, 0);
    EXPECT_EQ(r.expert_load, (std::vector<int64_t>{3, 2, 1}));
  }
}

TEST(Capacity, VariableCountTokensAndEmptyTokens) {
  // Token 1 has no expert (e.g. ReLU routing): never counted as dropped.
  auto plan = make_plan(2, {{{0, 1}, {1, 1}}, {}, {{0, 1}}});
  CapacityResult r;
  apply_capacity(plan, {0.5, 1, "position"}, 3, Comm::self(), r);  // C = ceil(0.75) = 1
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 0}));
  EXPECT_EQ(r.dropped_tokens, 1);
}

TEST(Capacity, FrameworkRoundingIsMegatronsFloatCeil) {
  // CF = 1.1, T = 3200, E = 16, k = 2: T k / E = 400 exactly; 400 * 1.1 = 440.00000000000006 in
  // double, so Megatron-Core's ceil gives 441 where the exact product gives 440.
  EXPECT_EQ(expert_capacity(1.1, 2, 3200, 16, CapacityRounding::exact), 440);
  EXPECT_EQ(expert_capacity(1.1, 2, 3200, 16, CapacityRounding::framework), 441);
  // Where the double product is exact the two agree.
  EXPECT_EQ(expert_capacity(1.25, 6, 16384, 64, CapacityRounding::framework), 1920);
  EXPECT_EQ(expert_capacity(1.0, 2, 100, 4, CapacityRounding::framework), 50);
  EXPECT_EQ(expert_capacity(0.0, 2, 100, 4, CapacityRounding::framework), 0);
  EXPECT_EQ(parse_capacity_rounding("framework"), CapacityRounding::framework);
  EXPECT_THROW(parse_capacity_rounding("floor"), InputError);
}

TEST(Capacity, TokenOrderKeepsTokensInOrderWhateverTheirChoiceRank) {
  // The case of PositionKeepsFirstChoicesBeforeSecondChoices under Megatron-Core's "position":
  // expert 0 keeps tokens 0 and 1 (their second choice) and drops tokens 2 and 3 (first choices).
  auto plan = make_plan(
      2, {{{1, .6f}, {0, .4f}}, {{1, .6f}, {0, .4f}}, {{0, .9f}, {1, .1f}}, {{0, .9f}, {1, .1f}}});
  CapacityResult r;
  apply_capacity(plan, {0.5, 2, "token_order"}, 4, Comm::self(), r);
  EXPECT_EQ(r.capacity, 2);
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(r.expert_demand, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(r.expert_load, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(r.dropped_tokens, 2);  // tokens 2 and 3 lose both choices
  EXPECT_EQ(parse_drop_policy("position"), DropPolicy::choice_first);
  EXPECT_THROW(parse_drop_policy("random"), InputError);
}

TEST(Capacity, PerRankCapacityEqualsEachRankAlone) {
  // 3 EP ranks of 5, 3 and 4 tokens (ragged, as traces split): each rank's drops equal
  // apply_capacity on that rank's tokens alone, with its own C.
  std::vector<std::vector<std::pair<int32_t, float>>> toks;
  for (int t = 0; t < 12; ++t)
    toks.push_back({{t % 3 == 0 ? 1 : 0, 0.1f * static_cast<float>(t % 5)},
                    {2, 0.05f * static_cast<float>(t % 7)}});
  const auto plan = make_plan(3, toks);
  TokenBatch layout;
  layout.num_tokens = 12;
  layout.num_experts = 3;
  layout.rank_offsets = {0, 5, 8, 12};
  for (const char* policy : {"choice_first", "token_order", "probability"}) {
    CapacityResult all;
    apply_capacity_per_rank(plan, {0.6, 2, policy}, layout, all);
    std::vector<uint8_t> want;
    std::vector<int64_t> load(3, 0);
    int64_t maxC = 0;
    for (size_t i = 0; i + 1 < layout.rank_offsets.size(); ++i) {
      const auto sub = make_plan(
          3, {toks.begin() + layout.rank_offsets[i], toks.begin() + layout.rank_offsets[i + 1]});
      CapacityResult one;
      apply_capacity(sub, {0.6, 2, policy}, sub.num_tokens, Comm::self(), one);
      want.insert(want.end(), one.kept.begin(), one.kept.end());
      for (int e = 0; e < 3; ++e) load[e] += one.expert_load[e];
      maxC = std::max(maxC, one.capacity);
    }
    EXPECT_EQ(all.kept, want) << policy;
    EXPECT_EQ(all.expert_load, load) << policy;
    EXPECT_EQ(all.capacity, maxC) << policy;  // ceil(0.6*2*5/3) = 2
    EXPECT_EQ(all.capacity, 2) << policy;
    EXPECT_GT(all.dropped_assignments, 0) << policy;
  }
}
