#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "backends/backend.hpp"
#include "harness/core/args.hpp"
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/metrics/metrics.hpp"
#include "harness/placement/placement.hpp"
#include "harness/routing/router.hpp"
#include "workloads/workload.hpp"

using namespace moe;

TEST(Rng, CounterBasedAndInRange) {
  const uint64_t k = rng::key(7, 1, 2, 3);
  EXPECT_EQ(rng::bits(k, 42), rng::bits(k, 42));
  EXPECT_NE(rng::bits(k, 42), rng::bits(k, 43));
  EXPECT_NE(rng::key(7, 1, 2, 3), rng::key(7, 1, 3, 2));
  double sum = 0, sumsq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = rng::uniform(k, i);
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    const double z = rng::normal(k, i);
    sum += z;
    sumsq += z * z;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sumsq / n, 1.0, 0.02);
}

TEST(Registry, EveryExpectedNameIsRegistered) {
  // Static registrars in OBJECT libraries must survive linking.
  for (const char* name : {"softmax_topk", "sigmoid_topk"}) EXPECT_NE(RouterRegistry::instance().find(name), nullptr) << name;
  for (const char* name : {"uniform", "zipf", "domain_shift"}) EXPECT_NE(WorkloadRegistry::instance().find(name), nullptr) << name;
  for (const char* name : {"contiguous", "round_robin"}) EXPECT_NE(PlacementRegistry::instance().find(name), nullptr) << name;
  EXPECT_NE(BackendRegistry::instance().find("sim"), nullptr);
  for (const auto& [name, entry] : RouterRegistry::instance().entries()) EXPECT_FALSE(entry.description.empty()) << name;
}

TEST(ComponentArgs, TypedValuesAndUnknownKeys) {
  ComponentArgs a("router-arg", "x", {{"alpha", "0.5"}, {"flag", "false"}, {"n", "3"}});
  EXPECT_DOUBLE_EQ(a.get_double("alpha", 1.0), 0.5);
  EXPECT_FALSE(a.get_bool("flag", true));
  EXPECT_EQ(a.get_int("n", 0), 3);
  EXPECT_EQ(a.get_int("missing", 9), 9);
  EXPECT_NO_THROW(a.reject_unknown());
  ComponentArgs b("router-arg", "x", {{"typo", "1"}});
  b.get_double("alpha", 1.0);
  try {
    b.reject_unknown();
    FAIL() << "unknown key accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("x.typo"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("alpha"), std::string::npos) << e.what();
  }
  ComponentArgs c("router-arg", "x", {{"alpha", "abc"}});
  EXPECT_THROW(c.get_double("alpha", 1.0), InputError);
  ComponentArgs d("router-arg", "x", {{"flag", "maybe"}});
  EXPECT_THROW(d.get_bool("flag", true), InputError);
}

TEST(Metrics, ImbalanceAndCv) {
  EXPECT_DOUBLE_EQ(max_over_mean({1, 1, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(max_over_mean({4, 0, 0, 0}), 4.0);
  EXPECT_DOUBLE_EQ(max_over_mean({0, 0}), 0.0);
  EXPECT_DOUBLE_EQ(coefficient_of_variation({2, 2, 2}), 0.0);
  EXPECT_NEAR(coefficient_of_variation({1, 3}), 0.5, 1e-12);  // std 1, mean 2
}

TEST(Placement, ContiguousAndRoundRobin) {
  Topology t;
  t.nodes = 2;
  t.ranks_per_node = 2;
  const auto c = make_placement("contiguous", {8, t, 0});
  EXPECT_EQ(c.rank_of_expert, (std::vector<int32_t>{0, 0, 1, 1, 2, 2, 3, 3}));
  const auto r = make_placement("round_robin", {8, t, 0});
  EXPECT_EQ(r.rank_of_expert, (std::vector<int32_t>{0, 1, 2, 3, 0, 1, 2, 3}));
  const auto few = make_placement("contiguous", {2, t, 0});  // fewer experts than ranks
  EXPECT_EQ(few.rank_of_expert, (std::vector<int32_t>{0, 2}));
  EXPECT_THROW(make_placement("nope", {8, t, 0}), InputError);
}
