// Every registered router, with its default knobs, on every synthetic workload: the distributed
// run over 8 EP ranks gives bit-identical loads, figures and matrices to one process hosting all 8
// (MPI_COMM_SELF), whatever the process count of this mpiexec. New routers are covered by
// registering; nothing to add here.
#include <gtest/gtest.h>

#include <cmath>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {
RunConfig router_config(const std::string& router, const std::string& workload, int world_size) {
  RunConfig c;
  c.workload = workload;
  c.routers = {router};
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = 3;  // stateful routers update between steps
  c.tokens_per_rank = 128;
  c.seq_len = 64;
  c.ep_size = 8;
  c.nodes = 2;
  c.hidden = 32;
  c.capacity_factor = 1.25;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << router << ": " << (problems.empty() ? "" : problems.front());
  return c;
}

bool same_double(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }
}  // namespace

TEST(RoutersDistributed, EveryRouterIdenticalOnAnySplit) {
  const Comm world = Comm::world();
  for (const auto& router : RouterRegistry::instance().names())
    for (const char* workload : {"uniform", "zipf", "domain_shift"}) {
      if (router == "recorded") continue;  // needs an assignment trace: test_trace_mpi.cpp
      const std::string what = router + " on " + workload;
      const auto dist = run_pipeline(router_config(router, workload, world.size()), world, RunOptions{true, false});
      const auto alone = run_pipeline(router_config(router, workload, 1), Comm::self(), RunOptions{true, false});
      ASSERT_EQ(dist.records[0].size(), alone.records[0].size()) << what;
      for (size_t i = 0; i < dist.records[0].size(); ++i) {
        const auto& g = dist.records[0][i];
        const auto& w = alone.records[0][i];
        ASSERT_EQ(g.expert_demand, w.expert_demand) << what << " record " << i;
        ASSERT_EQ(g.expert_load, w.expert_load) << what << " record " << i;
        ASSERT_EQ(g.active_experts_hist, w.active_experts_hist) << what << " record " << i;
        ASSERT_EQ(dist.matrices[0][i].bytes, alone.matrices[0][i].bytes) << what << " record " << i;
        ASSERT_EQ(g.figures.size(), w.figures.size()) << what;
        for (size_t f = 0; f < g.figures.size(); ++f)
          ASSERT_TRUE(same_double(g.figures[f], w.figures[f]))
              << what << " figure " << dist.figure_names[0][f] << ": " << g.figures[f] << " vs " << w.figures[f];
      }
    }
}
