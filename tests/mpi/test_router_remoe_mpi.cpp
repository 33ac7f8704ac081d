// remoe under mpiexec -n 1, 2, 4 (every TEST runs on every rank): the quantile mode (a group-wide
// selection of exactly k*T pairs) and the controller with a non-default start give bit-identical
// loads, histograms, figures and matrices to one process hosting all 8 EP ranks.
#include <gtest/gtest.h>

#include <string>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"

using namespace moe;

namespace {
RunConfig config(const std::string& workload, int world_size) {
  RunConfig c;
  c.workload = workload;
  c.routers = {"remoe@q", "remoe@c"};
  c.router_args["remoe@q"] = {{"mode", "quantile"}};
  c.router_args["remoe@c"] = {{"theta0", "0.8"}, {"eta_scale", "0.2"}};
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = 4;
  c.tokens_per_rank = 96;
  c.seq_len = 32;
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

TEST(ReMoEMpi, QuantileAndControllerIdenticalOnAnySplit) {
  const Comm world = Comm::world();
  for (const char* workload : {"uniform", "zipf"}) {
    const auto dist = run_pipeline(config(workload, world.size()), world, RunOptions{true, false});
    const auto alone = run_pipeline(config(workload, 1), Comm::self(), RunOptions{true, false});
    for (size_t r = 0; r < 2; ++r) {
      ASSERT_EQ(dist.records[r].size(), 8u);
      for (size_t i = 0; i < dist.records[r].size(); ++i) {
        const auto& g = dist.records[r][i];
        const auto& w = alone.records[r][i];
        const std::string what =
            std::string(workload) + " router " + std::to_string(r) + " record " + std::to_string(i);
        ASSERT_EQ(g.expert_demand, w.expert_demand) << what;
        ASSERT_EQ(g.expert_load, w.expert_load) << what;
        ASSERT_EQ(g.active_experts_hist, w.active_experts_hist) << what;
        ASSERT_EQ(dist.matrices[r][i].bytes, alone.matrices[r][i].bytes) << what;
        ASSERT_EQ(g.figures, w.figures) << what;
        if (r == 0) {  // quantile: exactly k*T pairs over the group, sparsity exactly 1 - k/E
          EXPECT_EQ(g.demand_assignments, 2 * g.tokens) << what;
          EXPECT_EQ(g.tokens, 8 * 96) << what;
          EXPECT_EQ(g.figures[0], 1.0 - 2.0 / 16.0) << what;
        }
      }
    }
    // The controller moved theta by whole steps of eta between steps.
    EXPECT_NE(dist.records[1][0].figures[1], dist.records[1][6].figures[1]);
  }
}
