// Load-aware placement with replicas and re-placement: identical loads, matrices and placements on
// any process count (each compared with one process hosting every EP rank), for every replica
// selection policy.
#include <gtest/gtest.h>

#include "harness/config/run_config.hpp"
#include "harness/core/comm.hpp"
#include "harness/driver/driver.hpp"

using namespace moe;

namespace {
RunConfig placement_config(const std::string& placement, const std::string& loads, const std::string& select, int world_size) {
  RunConfig c;
  c.workload = "zipf";
  c.routers = {"softmax_topk", "deepseek_v3"};
  c.experts = 32;
  c.top_k = 4;
  c.layers = 2;
  c.steps = 4;
  c.tokens_per_rank = 64;
  c.ep_size = 8;
  c.nodes = 2;
  c.hidden = 32;
  c.placement = placement;
  c.placement_loads = loads;
  c.redundant_experts = 8;
  c.replica_select = select;
  c.replace_every = 2;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}
}  // namespace

TEST(PlacementDistributed, IdenticalOnAnySplit) {
  const Comm world = Comm::world();
  for (const char* placement : {"eplb", "load_balanced"})
    for (const char* loads : {"oracle", "warmup", "ema"})
      for (const char* select : {"locality", "round_robin", "random", "token_hash"}) {
        const std::string what = std::string(placement) + "/" + loads + "/" + select;
        const auto dist = run_pipeline(placement_config(placement, loads, select, world.size()), world, RunOptions{true, false});
        const auto alone = run_pipeline(placement_config(placement, loads, select, 1), Comm::self(), RunOptions{true, false});
        int64_t moved = 0;
        for (size_t ri = 0; ri < dist.routers.size(); ++ri)
          for (size_t i = 0; i < dist.records[ri].size(); ++i) {
            const auto& g = dist.records[ri][i];
            const auto& w = alone.records[ri][i];
            ASSERT_EQ(g.expert_load, w.expert_load) << what;
            ASSERT_EQ(g.expert_of_slot, w.expert_of_slot) << what << " record " << i;
            ASSERT_EQ(g.replaced_copies, w.replaced_copies) << what << " record " << i;
            ASSERT_EQ(dist.matrices[ri][i].tokens, alone.matrices[ri][i].tokens) << what << " record " << i;
            ASSERT_EQ(g.replication_factor, 40.0 / 32.0) << what;
            moved += g.replaced_copies;
          }
        EXPECT_GT(moved, 0) << what << ": the skewed loads should move copies";
      }
}

// Chunkable routers (token-local ones, and deepseek_v3 with its group-wide figures) on large
// batches are generated and routed in chunks of ranks: the same records, figures, matrices and
// placements as routing the whole batch at once, step after step (deepseek_v3's bias learns).
TEST(ChunkedPipeline, SameAsWholeBatch) {
  const Comm world = Comm::world();
  for (const char* workload : {"zipf", "source_ragged"}) {
    RunConfig c = placement_config("eplb", "ema", "locality", world.size());
    c.routers = {"softmax_topk", "sigmoid_topk", "deepseek_v3", "deepseek_v3@limited"};
    c.router_args["deepseek_v3@limited"] = {{"groups", "8"}, {"topk_group", "2"}};
    c.workload = workload;
    RunOptions whole{true, false};
    RunOptions chunks{true, false};
    chunks.chunk_tokens = 100;  // about one 64-token rank per chunk
    const auto a = run_pipeline(c, world, whole);
    const auto b = run_pipeline(c, world, chunks);
    for (size_t ri = 0; ri < a.routers.size(); ++ri)
      for (size_t i = 0; i < a.records[ri].size(); ++i) {
        ASSERT_EQ(a.records[ri][i].expert_load, b.records[ri][i].expert_load) << workload << " record " << i;
        ASSERT_EQ(a.records[ri][i].kept_assignments, b.records[ri][i].kept_assignments) << workload;
        ASSERT_EQ(a.matrices[ri][i].bytes, b.matrices[ri][i].bytes) << workload << " record " << i;
        ASSERT_EQ(a.records[ri][i].expert_of_slot, b.records[ri][i].expert_of_slot) << workload;
        ASSERT_EQ(a.records[ri][i].figures, b.records[ri][i].figures) << workload << " " << a.routers[ri] << " record " << i;
      }
  }
}
