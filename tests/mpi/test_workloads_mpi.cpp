// Every registered synthetic workload through run_pipeline: the distributed run over 8 EP ranks
// gives bit-identical loads and matrices to one process hosting all 8 (MPI_COMM_SELF), whatever
// the process count of this mpiexec (1, 2, 4). Ragged layouts (source_ragged, lognormal) give the
// processes different token counts; their dispatch rows must show it. New workloads are covered by
// registering. (tests/mpi/test_routers_mpi.cpp runs every router on the original three.)
#include <gtest/gtest.h>

#include <algorithm>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {
RunOptions quiet_history() {
  RunOptions o;
  o.keep_history = true;
  o.console = false;
  return o;
}

RunConfig workload_config(const std::string& workload, int world_size) {
  RunConfig c;
  c.workload = workload;
  c.routers = {"softmax_topk"};
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = 3;
  c.tokens_per_rank = 96;
  c.seq_len = 64;
  c.ep_size = 8;
  c.nodes = 2;
  c.hidden = 32;
  c.capacity_factor = 1.25;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << workload << ": " << (problems.empty() ? "" : problems.front());
  return c;
}
}  // namespace

TEST(WorkloadsDistributed, EveryWorkloadIdenticalOnAnySplit) {
  const Comm world = Comm::world();
  for (const auto& workload : WorkloadRegistry::instance().names()) {
    if (workload == "trace") continue;  // needs a file: test_trace_mpi.cpp
    const auto dist = run_pipeline(workload_config(workload, world.size()), world, quiet_history());
    const auto alone = run_pipeline(workload_config(workload, 1), Comm::self(), quiet_history());
    ASSERT_EQ(dist.records[0].size(), alone.records[0].size()) << workload;
    ASSERT_EQ(dist.records[0].size(), 6u) << workload;
    bool rows_differ = false;
    for (size_t i = 0; i < dist.records[0].size(); ++i) {
      ASSERT_EQ(dist.records[0][i].expert_demand, alone.records[0][i].expert_demand) << workload << " record " << i;
      ASSERT_EQ(dist.records[0][i].expert_load, alone.records[0][i].expert_load) << workload << " record " << i;
      const TrafficMatrix& m = dist.matrices[0][i];
      ASSERT_EQ(m.bytes, alone.matrices[0][i].bytes) << workload << " record " << i;
      ASSERT_EQ(m.tokens, alone.matrices[0][i].tokens) << workload << " record " << i;
      std::vector<int64_t> row(static_cast<size_t>(m.ranks), 0);
      for (int32_t s = 0; s < m.ranks; ++s)
        for (int32_t d = 0; d < m.ranks; ++d) row[s] += m.tok(s, d);
      rows_differ = rows_differ || 10 * *std::max_element(row.begin(), row.end()) > 13 * *std::min_element(row.begin(), row.end());
    }
    if (workload == "source_ragged" || workload == "lognormal") {
      EXPECT_TRUE(rows_differ) << workload << ": ragged layout not used";
    }
  }
}
