// kern with skip_zero on a workload where many tokens have fewer than k positive logits: the
// distributed run gives bit-identical loads, histograms, figures and matrices to one process
// hosting all EP ranks. Runs under mpiexec -n 1, 2, 4.
#include <gtest/gtest.h>

#include <string>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"

using namespace moe;

namespace {
RunConfig config(int world_size) {
  RunConfig c;
  c.workload = "zipf";
  c.workload_args["zipf"] = {{"s", "3"}};  // most experts far below 0: few positive logits per token
  c.routers = {"kern", "kern@skip"};
  c.router_args["kern@skip"] = {{"skip_zero", "true"}, {"order", "activate_first"}};
  c.experts = 16;
  c.top_k = 4;
  c.layers = 2;
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

TEST(KernMpi, IdenticalOnAnySplitWithSkipZero) {
  const Comm world = Comm::world();
  const auto dist = run_pipeline(config(world.size()), world, RunOptions{true, false});
  const auto alone = run_pipeline(config(1), Comm::self(), RunOptions{true, false});
  for (size_t r = 0; r < 2; ++r)
    for (size_t i = 0; i < dist.records[r].size(); ++i) {
      const auto& g = dist.records[r][i];
      const auto& w = alone.records[r][i];
      ASSERT_EQ(g.expert_demand, w.expert_demand) << "router " << r << " record " << i;
      ASSERT_EQ(g.active_experts_hist, w.active_experts_hist) << "router " << r << " record " << i;
      ASSERT_EQ(dist.matrices[r][i].tokens, alone.matrices[r][i].tokens) << "router " << r << " record " << i;
      ASSERT_EQ(g.figures, w.figures) << "router " << r << " record " << i;
      EXPECT_GT(g.figures[0], 0.2) << "free sparsity should be common on zipf(3)";
    }
  // skip_zero sends fewer copies than keeping the zero-weight picks; the figures agree.
  for (size_t i = 0; i < dist.records[0].size(); ++i) {
    EXPECT_LT(dist.records[1][i].demand_assignments, dist.records[0][i].demand_assignments);
    EXPECT_EQ(dist.records[0][i].demand_assignments - dist.records[1][i].demand_assignments,
              static_cast<int64_t>(dist.records[0][i].figures[1] * static_cast<double>(dist.records[0][i].tokens) + 0.5));
    EXPECT_EQ(dist.records[0][i].figures, dist.records[1][i].figures);
  }
}
