// lapsum under mpiexec -n 1, 2, 4: with a rising k profile and a low truncation threshold, the
// distributed run gives bit-identical loads, histograms, figures (the truncated mass is summed per
// EP rank in rank order) and matrices to one process hosting all 8 EP ranks.
#include <gtest/gtest.h>

#include <string>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"

using namespace moe;

namespace {
RunConfig config(int world_size) {
  RunConfig c;
  c.workload = "zipf";
  c.routers = {"lapsum", "lapsum@rising"};
  c.router_args["lapsum@rising"] = {{"k_profile", "rising"}, {"tau", "0.001"}, {"alpha", "0.2"}};
  c.experts = 16;
  c.top_k = 2;
  c.layers = 3;
  c.steps = 2;
  c.tokens_per_rank = 100;
  c.seq_len = 50;
  c.ep_size = 8;
  c.nodes = 2;
  c.hidden = 32;
  c.capacity_factor = 1.25;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}
}  // namespace

TEST(LapSumMpi, IdenticalOnAnySplitWithRisingProfile) {
  const Comm world = Comm::world();
  const auto dist = run_pipeline(config(world.size()), world, RunOptions{true, false});
  const auto alone = run_pipeline(config(1), Comm::self(), RunOptions{true, false});
  for (size_t r = 0; r < 2; ++r) {
    ASSERT_EQ(dist.records[r].size(), 6u);
    for (size_t i = 0; i < dist.records[r].size(); ++i) {
      const auto& g = dist.records[r][i];
      const auto& w = alone.records[r][i];
      const std::string what = "router " + std::to_string(r) + " record " + std::to_string(i);
      ASSERT_EQ(g.expert_demand, w.expert_demand) << what;
      ASSERT_EQ(g.active_experts_hist, w.active_experts_hist) << what;
      ASSERT_EQ(dist.matrices[r][i].bytes, alone.matrices[r][i].bytes) << what;
      ASSERT_EQ(g.figures, w.figures) << what;
      EXPECT_GT(g.figures[2], 0.0) << what << ": some mass is truncated";
    }
  }
  // Rising profile: k_l = 2k(l+1)/(L+1) = 1, 2, 3 and the number of experts rises with depth.
  for (int32_t l = 0; l < 3; ++l)
    EXPECT_DOUBLE_EQ(dist.records[1][static_cast<size_t>(l)].figures[0], 1.0 + l);
  EXPECT_LT(dist.records[1][0].figures[1], dist.records[1][2].figures[1]);  // before capacity
}
