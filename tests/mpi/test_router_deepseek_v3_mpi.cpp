// deepseek_v3 with non-default knobs (strong bias, group limit on) over several steps: the
// distributed run gives bit-identical loads, figures and matrices to one process hosting all EP
// ranks, and every process sees the same figures. Runs under mpiexec -n 1, 2, 4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"

using namespace moe;

namespace {
RunConfig config(int world_size, const std::string& workload) {
  RunConfig c;
  c.workload = workload;
  c.routers = {"deepseek_v3", "deepseek_v3@flat"};
  c.router_args["deepseek_v3"] = {{"gamma", "0.02"}, {"groups", "4"}, {"topk_group", "2"}};
  c.router_args["deepseek_v3@flat"] = {{"gamma", "0.01"}, {"groups", "1"}, {"routed_scaling_factor", "1"}};
  c.experts = 32;
  c.top_k = 4;
  c.layers = 2;
  c.steps = 6;
  c.tokens_per_rank = 100;  // not a multiple of 8: exercises the scalar tails
  c.seq_len = 50;
  c.ep_size = 8;
  c.nodes = 4;
  c.hidden = 32;
  c.capacity_factor = 1.0;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}
}  // namespace

TEST(DeepseekV3Mpi, IdenticalOnAnySplitWithBiasAndGroupLimit) {
  const Comm world = Comm::world();
  for (const char* workload : {"zipf", "uniform"}) {
    const auto dist = run_pipeline(config(world.size(), workload), world, RunOptions{true, false});
    const auto alone = run_pipeline(config(1, workload), Comm::self(), RunOptions{true, false});
    ASSERT_EQ(dist.records.size(), 2u);
    for (size_t r = 0; r < 2; ++r) {
      ASSERT_EQ(dist.records[r].size(), 12u);
      double bias_seen = 0;
      for (size_t i = 0; i < dist.records[r].size(); ++i) {
        const auto& g = dist.records[r][i];
        const auto& w = alone.records[r][i];
        ASSERT_EQ(g.expert_demand, w.expert_demand) << workload << " router " << r << " record " << i;
        ASSERT_EQ(g.expert_load, w.expert_load) << workload << " record " << i;
        ASSERT_EQ(dist.matrices[r][i].bytes, alone.matrices[r][i].bytes) << workload << " record " << i;
        ASSERT_EQ(g.figures.size(), 4u);
        for (size_t f = 0; f < g.figures.size(); ++f) {
          ASSERT_EQ(g.figures[f], w.figures[f]) << workload << " figure " << dist.figure_names[r][f] << " record " << i;
          // The same value on every process.
          EXPECT_EQ(world.max(g.figures[f]), -world.max(-g.figures[f]));
        }
        bias_seen = std::max(bias_seen, g.figures[1]);
      }
      EXPECT_GT(bias_seen, 0.0) << "the bias should have moved";
    }
    // The group-limited instance costs score mass; the flat one does not.
    EXPECT_GT(dist.records[0].back().figures[3], 0.0);
    EXPECT_EQ(dist.records[1].back().figures[3], 0.0);
  }
}
