// Multi-rank properties of the whole pipeline, run as mpiexec -n 1/2/4 by ctest:
//  (a) the distributed run gives exactly the counts and matrices of a one-process run of the same
//      EP group (every rank recomputes the reference alone on MPI_COMM_SELF);
//  (b) conservation of assignments and tokens;
//  (c) the parallel results file reads back with the documented datasets and values.
#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "analysis/results_reader.hpp"
#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"
#include "harness/report/h5.hpp"

using namespace moe;

namespace {

RunConfig config(const std::string& workload, const std::string& policy, const std::string& dedup,
                 const std::string& placement, int world_size) {
  RunConfig c;
  c.workload = workload;
  c.experts = 32;
  c.top_k = 4;
  c.layers = 2;
  c.steps = 2;
  c.tokens_per_rank = 300;
  c.seq_len = 128;
  c.ep_size = 8;  // 8 EP ranks on 1, 2 or 4 processes: virtual ranks on each
  c.nodes = 2;
  c.hidden = 128;
  c.capacity_factor = 1.0;
  c.drop_policy = policy;
  c.dedup = dedup;
  c.placement = placement;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << problems.front();
  return c;
}

void expect_same(const RunOutput& got, const RunOutput& want, const std::string& what) {
  ASSERT_EQ(got.records.size(), want.records.size());
  for (size_t r = 0; r < got.records.size(); ++r)
    for (size_t i = 0; i < got.records[r].size(); ++i) {
      const auto& g = got.records[r][i];
      const auto& w = want.records[r][i];
      ASSERT_EQ(g.expert_demand, w.expert_demand) << what << " record " << i;
      ASSERT_EQ(g.expert_load, w.expert_load) << what << " record " << i;
      ASSERT_EQ(g.active_experts_hist, w.active_experts_hist) << what;
      ASSERT_EQ(g.dropped_assignments, w.dropped_assignments) << what;
      ASSERT_EQ(g.dropped_tokens, w.dropped_tokens) << what;
      ASSERT_EQ(g.rank_recv_tokens, w.rank_recv_tokens) << what;
      ASSERT_EQ(got.matrices[r][i].tokens, want.matrices[r][i].tokens) << what;
      ASSERT_EQ(got.matrices[r][i].bytes, want.matrices[r][i].bytes) << what;
      ASSERT_DOUBLE_EQ(g.model_dispatch_s, w.model_dispatch_s) << what;
    }
}

}  // namespace

TEST(Distributed, IdenticalToOneProcessForEverySplit) {
  const Comm world = Comm::world();
  for (const char* workload : {"uniform", "zipf", "domain_shift"})
    for (const char* policy : {"position", "token_order", "probability"})
      for (const char* dedup : {"token_expert", "token_node"}) {
        const std::string what = std::string(workload) + "/" + policy + "/" + dedup;
        const auto cfg = config(workload, policy, dedup, "contiguous", world.size());
        const auto dist = run_pipeline(cfg, world, RunOptions{true, false});
        auto alone_cfg = config(workload, policy, dedup, "contiguous", 1);
        const auto alone = run_pipeline(alone_cfg, Comm::self(), RunOptions{true, false});
        expect_same(dist, alone, what);
        EXPECT_GT(dist.records[0][0].dropped_assignments, 0)
            << what << ": the test should exercise capacity";
      }
  const auto cfg = config("zipf", "position", "token_rank", "round_robin", world.size());
  expect_same(run_pipeline(cfg, world, RunOptions{true, false}),
              run_pipeline(config("zipf", "position", "token_rank", "round_robin", 1), Comm::self(),
                           RunOptions{true, false}),
              "round_robin/token_rank");
}

// --capacity-scope local is per EP rank (Megatron-Core drops on each rank's own tokens), whatever
// the number of processes: 8 EP ranks of 300 tokens each have C = ceil(1.0 * 4 * 300 / 32) = 38
// on 1, 2 and 4 processes, and the drops are identical.
TEST(Distributed, LocalCapacityIsPerEPRankOnAnyProcessCount) {
  const Comm world = Comm::world();
  for (const char* policy : {"choice_first", "token_order", "probability"}) {
    auto cfg = config("zipf", policy, "token_expert", "contiguous", world.size());
    cfg.capacity_scope = "local";
    auto alone_cfg = config("zipf", policy, "token_expert", "contiguous", 1);
    alone_cfg.capacity_scope = "local";
    const auto dist = run_pipeline(cfg, world, RunOptions{true, false});
    const auto alone = run_pipeline(alone_cfg, Comm::self(), RunOptions{true, false});
    expect_same(dist, alone, std::string("local/") + policy);
    for (const auto& m : dist.records[0]) {
      EXPECT_EQ(m.capacity, 38) << policy;
      EXPECT_GT(m.dropped_assignments, 0) << policy;
    }
    // Global capacity over the 2400 tokens (C = 300) drops less than 8 capacities of 38 do.
    auto global_cfg = config("zipf", policy, "token_expert", "contiguous", world.size());
    const auto global = run_pipeline(global_cfg, world, RunOptions{true, false});
    EXPECT_LT(global.records[0][0].dropped_assignments, dist.records[0][0].dropped_assignments)
        << policy;
  }
}

TEST(Distributed, ConservationOfAssignments) {
  const Comm world = Comm::world();
  for (double cf : {0.0, 0.8, 1.25}) {
    auto cfg = config("zipf", "position", "token_expert", "contiguous", world.size());
    cfg.capacity_factor = cf;
    const auto out = run_pipeline(cfg, world, RunOptions{true, false});
    for (size_t r = 0; r < out.records.size(); ++r)
      for (size_t i = 0; i < out.records[r].size(); ++i) {
        const auto& m = out.records[r][i];
        const int64_t T = m.tokens, k = cfg.top_k;
        EXPECT_EQ(T, 8 * 300);
        const int64_t demand =
            std::accumulate(m.expert_demand.begin(), m.expert_demand.end(), int64_t{0});
        const int64_t load =
            std::accumulate(m.expert_load.begin(), m.expert_load.end(), int64_t{0});
        EXPECT_EQ(demand, T * k);
        EXPECT_EQ(load, T * k - m.dropped_assignments);
        const auto& tok = out.matrices[r][i].tokens;
        EXPECT_EQ(std::accumulate(tok.begin(), tok.end(), int64_t{0}),
                  load);  // per (token, expert) copies
        EXPECT_EQ(
            std::accumulate(m.active_experts_hist.begin(), m.active_experts_hist.end(), int64_t{0}),
            T);
        if (cf > 0) {
          for (auto l : m.expert_load) EXPECT_LE(l, m.capacity);
        } else {
          EXPECT_EQ(m.dropped_assignments, 0);
        }
      }
  }
}

TEST(Distributed, ResultsFileReadsBackWithEveryRanksRows) {
  const Comm world = Comm::world();
  const auto dir = std::filesystem::path(MOEBENCH_TEST_TMP);
  const std::string path = (dir / ("np" + std::to_string(world.size()) + ".h5")).string();
  if (world.root()) {
    std::filesystem::create_directories(dir);
    std::filesystem::remove(path);
  }
  world.barrier();
  auto cfg = config("domain_shift", "position", "token_expert", "contiguous", world.size());
  cfg.out = path;
  const auto out = run_pipeline(cfg, world, RunOptions{true, false});
  if (!world.root()) return;
  const auto file = read_results(path);
  EXPECT_EQ(file.status, "complete");
  EXPECT_EQ(file.world_size, world.size());
  EXPECT_EQ(file.ep_size, 8);
  h5::Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  for (size_t r = 0; r < cfg.routers.size(); ++r) {
    const std::string g = "/runs/" + cfg.routers[r] + "/";
    std::vector<hsize_t> dims;
    const auto disp = h5::read_int64(f, g + "dispatch_tokens", &dims);
    ASSERT_EQ(dims, (std::vector<hsize_t>{2, 2, 8, 8}));
    const auto recv = h5::read_int64(f, g + "rank_recv_tokens", &dims);
    ASSERT_EQ(dims, (std::vector<hsize_t>{2, 2, 8}));
    const auto load = h5::read_int64(f, g + "expert_load", &dims);
    ASSERT_EQ(dims, (std::vector<hsize_t>{2, 2, 32}));
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(std::vector<int64_t>(disp.begin() + static_cast<long>(i * 64),
                                     disp.begin() + static_cast<long>((i + 1) * 64)),
                out.matrices[r][i].tokens);
      EXPECT_EQ(std::vector<int64_t>(recv.begin() + static_cast<long>(i * 8),
                                     recv.begin() + static_cast<long>((i + 1) * 8)),
                out.records[r][i].rank_recv_tokens);
      EXPECT_EQ(std::vector<int64_t>(load.begin() + static_cast<long>(i * 32),
                                     load.begin() + static_cast<long>((i + 1) * 32)),
                out.records[r][i].expert_load);
    }
  }
}
