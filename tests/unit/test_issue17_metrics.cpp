// Issue 17, second half: balancedness, destinations per token, per-rank and per-expert bytes,
// padding, bandwidth without self-traffic; placement files, limited re-placement, transfer
// matrices.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "backends/mpi/bench_a2a.hpp"
#include "harness/core/error.hpp"
#include "harness/metrics/metrics.hpp"
#include "harness/placement/planner.hpp"
#include "harness/traffic/traffic.hpp"

using namespace moe;

namespace {

// 2 nodes x 2 ranks, E = 8 contiguous (experts 2r, 2r+1 on rank r), one token per source rank:
// token 0 (rank 0) -> experts 0,2,3,6; token 1 (rank 1) -> experts 4,5,7 with 7 dropped.
struct Fixture {
  Topology topo;
  Placement placement = Placement::from_ranks({0, 0, 1, 1, 2, 2, 3, 3}, 4);
  RoutingPlan plan;
  std::vector<uint8_t> kept{1, 1, 1, 1, 1, 1, 0};
  TokenBatch layout;
  Fixture() {
    topo.nodes = 2;
    topo.ranks_per_node = 2;
    plan.reset(2, 8, 7);
    plan.expert = {0, 2, 3, 6, 4, 5, 7};
    plan.weight.assign(7, 0.1f);
    plan.offsets = {0, 4, 7};
    layout.num_tokens = 2;
    layout.tokens_per_rank = 1;
  }
  TrafficMatrix run(Dedup dedup, DispatchDetail* detail) {
    TrafficMatrix m;
    m.reset(4);
    if (detail) detail->reset(4, 2, 8);
    account_dispatch(plan, kept, layout, placement, topo, TrafficSpec{dedup, 100, 8}, m, detail);
    return m;
  }
};

std::string tmp_path(const std::string& name) {
  std::filesystem::create_directories(MOEBENCH_TEST_TMP);
  return std::string(MOEBENCH_TEST_TMP) + "/" + name;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

}  // namespace

TEST(Issue17Metrics, DispatchDetailCountsDestinationsNotRelays) {
  for (Dedup dedup : {Dedup::token_expert, Dedup::token_rank, Dedup::token_node}) {
    Fixture f;
    DispatchDetail d;
    const TrafficMatrix with = f.run(dedup, &d);
    const TrafficMatrix without = f.run(dedup, nullptr);
    EXPECT_EQ(with.tokens, without.tokens) << "the detail must not change the matrix";
    EXPECT_EQ(with.bytes, without.bytes);
    // Token 0 reaches ranks {0, 1, 3} on nodes {0, 1}; token 1 ranks {2} on node {1}.
    EXPECT_EQ(d.ranks_per_token_hist, (std::vector<int64_t>{0, 1, 0, 1, 0}));
    EXPECT_EQ(d.nodes_per_token_hist, (std::vector<int64_t>{0, 1, 1}));
    EXPECT_EQ(d.rank_assignments, (std::vector<int64_t>{1, 2, 2, 1}));
    // One copy per kept assignment (108 B) by link class of (source, serving rank).
    std::vector<int64_t> want(8 * 3, 0);
    want[0 * 3 + 0] = 108;                                      // expert 0: rank 0 -> 0, self
    want[2 * 3 + 1] = want[3 * 3 + 1] = 108;                    // rank 0 -> 1: intra
    want[6 * 3 + 2] = want[4 * 3 + 2] = want[5 * 3 + 2] = 108;  // -> ranks 3, 2: other node
    EXPECT_EQ(d.expert_bytes, want);
  }
}

TEST(Issue17Metrics, RankBytesAddUpToTheLinkClasses) {
  Fixture f;
  const TrafficMatrix m = f.run(Dedup::token_node, nullptr);
  std::vector<int64_t> send, recv;
  rank_bytes_by_class(m, f.topo, send, recv);
  const auto total = bytes_by_class(m, f.topo);
  for (int c = 0; c < 3; ++c) {
    int64_t s = 0, r = 0;
    for (int rank = 0; rank < 4; ++rank)
      s += send[static_cast<size_t>(rank * 3 + c)], r += recv[static_cast<size_t>(rank * 3 + c)];
    EXPECT_EQ(s, total[static_cast<size_t>(c)]);
    EXPECT_EQ(r, total[static_cast<size_t>(c)]);
  }
  // Rank 0 sends one self copy; its row minus the diagonal is its intra + inter.
  EXPECT_EQ(send[0], m.byt(0, 0));
  EXPECT_EQ(send[1] + send[2], m.byt(0, 1) + m.byt(0, 2) + m.byt(0, 3));
}

TEST(Issue17Metrics, BalancednessIsMeanOverMax) {
  EXPECT_DOUBLE_EQ(mean_over_max({2, 2, 2}), 1.0);
  EXPECT_DOUBLE_EQ(mean_over_max({0, 0}), 1.0);
  EXPECT_DOUBLE_EQ(mean_over_max({1, 2, 3, 6}), 3.0 / 6.0);
  const std::vector<int64_t> v{5, 1, 9, 3};
  EXPECT_DOUBLE_EQ(mean_over_max(v), 1.0 / max_over_mean(v));
}

TEST(Issue17Metrics, DetailMetricsAndNonSelfBandwidth) {
  Fixture f;
  DispatchDetail d;
  const TrafficMatrix dispatch = f.run(Dedup::token_expert, &d);
  TrafficMatrix combine;
  combine_from_dispatch(dispatch, 100, combine);
  StepLayerMetrics m;
  fill_traffic_metrics(dispatch, combine, f.topo, m);
  m.model_dispatch_s = 1e-6;
  fill_detail_metrics(d, m);
  EXPECT_DOUBLE_EQ(m.gpu_balancedness, 1.5 / 2.0);
  EXPECT_DOUBLE_EQ(m.mean_ranks_per_token, (1 * 1 + 3 * 1) / 2.0);
  EXPECT_DOUBLE_EQ(m.mean_nodes_per_token, (1 * 1 + 2 * 1) / 2.0);
  const double nonself = static_cast<double>(m.dispatch_bytes_intra + m.dispatch_bytes_inter);
  EXPECT_GT(m.dispatch_bytes_local, 0);
  EXPECT_DOUBLE_EQ(m.nonself_algbw_GBps, nonself / 4 / 1e-6 / 1e9);
  ASSERT_EQ(m.rank_send_bytes.size(), 12u);
}

TEST(Issue17Metrics, PaddingToCapacity) {
  EXPECT_EQ(padding_bytes(10, 8, 1, 70, 100), (80 - 70) * 100);
  EXPECT_EQ(padding_bytes(10, 8, 2, 70, 100), (160 - 70) * 100);
  EXPECT_EQ(padding_bytes(0, 8, 1, 70, 100), 0) << "unlimited capacity pads nothing";
}

TEST(Issue17Metrics, SummaryBalancednessGainPerGB) {
  SummaryAccumulator acc("r");
  StepLayerMetrics a, b;
  a.gpu_balancedness = 0.5;
  a.expert_balancedness = 0.25;
  b.gpu_balancedness = 0.9;
  b.expert_balancedness = 0.75;
  b.replaced_copies = 2;
  b.replacement_bytes = 2'000'000'000;
  b.balancedness_gain = 0.3;
  acc.add(a);
  acc.add(b);
  const RouterSummary s = acc.result();
  EXPECT_DOUBLE_EQ(s.mean_gpu_balancedness, 0.7);
  EXPECT_DOUBLE_EQ(s.min_gpu_balancedness, 0.5);
  EXPECT_DOUBLE_EQ(s.mean_expert_balancedness, 0.5);
  EXPECT_DOUBLE_EQ(s.balancedness_gain_per_GB(), 0.15);
  EXPECT_TRUE(std::isnan(SummaryAccumulator("x").result().balancedness_gain_per_GB()));
}

TEST(Issue17Placement, BalancednessSplitsReplicatedLoad) {
  Placement p;
  p.slots_per_rank = 2;
  p.expert_of_slot = {0, 1, 0, 2};  // expert 0 on ranks 0 and 1
  p.index(3);
  // loads 4, 1, 2: rank 0 = 2 + 1 = 3, rank 1 = 2 + 2 = 4.
  EXPECT_DOUBLE_EQ(placement_balancedness(p, {4, 1, 2}), 3.5 / 4.0);
  EXPECT_DOUBLE_EQ(placement_balancedness(p, {0, 0, 0}), 1.0);
}

TEST(Issue17Placement, LimitedMovesKeepTheMostValuableOnes) {
  // 4 ranks x 2 slots, 8 experts; experts 0 and 1 (both on rank 0) are hot.
  const int32_t E = 8;
  const std::vector<double> load{40, 40, 5, 5, 5, 5, 5, 5};
  const Placement current = Placement::from_ranks({0, 0, 1, 1, 2, 2, 3, 3}, 4);
  Placement target;
  target.slots_per_rank = 2;
  target.expert_of_slot = {0, 2, 1, 3, 4, 6, 5, 7};  // the hot experts apart
  target.index(E);
  const int64_t needed = moved_copies(current, target, E);
  ASSERT_GT(needed, 1);
  // Every expert has one copy: no single-copy move is legal, one exchange (2 copies) is.
  const Placement none = limit_moves(current, target, load, 1, E);
  EXPECT_EQ(none.expert_of_slot, current.expert_of_slot)
      << "a 1-copy budget cannot move an expert's only copy";
  const Placement two = limit_moves(current, target, load, 2, E);
  EXPECT_EQ(moved_copies(current, two, E), 2);
  EXPECT_GT(placement_balancedness(two, load), placement_balancedness(current, load))
      << "the move kept must help";
  for (int32_t e = 0; e < E; ++e)
    EXPECT_GE(two.copies(e), 1) << "expert " << e << " lost its last copy";
  // The best exchange takes a hot expert off rank 0 (for a cold one).
  const std::vector<int32_t> rank0(two.expert_of_slot.begin(), two.expert_of_slot.begin() + 2);
  EXPECT_EQ(std::count_if(rank0.begin(), rank0.end(), [](int32_t e) { return e == 0 || e == 1; }),
            1);
  // With a spare copy (slot 7 holds a second copy of expert 6), one copy can move: the hot expert 0
  // gets a second copy where the spare was.
  Placement spare;
  spare.slots_per_rank = 2;
  spare.expert_of_slot = {0, 1, 2, 3, 4, 5, 6, 6};
  spare.index(7);
  Placement spare_target;
  spare_target.slots_per_rank = 2;
  spare_target.expert_of_slot = {0, 1, 2, 3, 4, 5, 6, 0};
  spare_target.index(7);
  const std::vector<double> load7{40, 10, 5, 5, 5, 5, 5};
  const Placement one = limit_moves(spare, spare_target, load7, 1, 7);
  EXPECT_EQ(one.expert_of_slot, spare_target.expert_of_slot);
  EXPECT_GT(placement_balancedness(one, load7), placement_balancedness(spare, load7));
  const Placement all = limit_moves(current, target, load, needed, E);
  EXPECT_EQ(all.expert_of_slot, target.expert_of_slot) << "enough moves: the target itself";
}

TEST(Issue17Placement, PlannerLimitsEachReplacement) {
  PlannerSpec spec;
  spec.placement = "load_balanced";
  spec.setup.num_experts = 16;
  spec.setup.topology.nodes = 1;
  spec.setup.topology.ranks_per_node = 4;
  spec.loads = PlacementLoads::ema;
  spec.layers = 1;
  // The equal-load start deals experts round robin: 0, 4, 8, 12 share rank 0, and are the hot ones.
  std::vector<std::vector<int64_t>> demand{
      {900, 10, 10, 10, 800, 10, 10, 10, 700, 10, 10, 10, 600, 10, 10, 10}};
  PlacementPlanner free_planner(spec);
  free_planner.end_step(0, demand);
  spec.max_moves = 2;
  PlacementPlanner limited(spec);
  limited.end_step(0, demand);
  ASSERT_GT(free_planner.moved_copies(0), 2);
  EXPECT_EQ(limited.moved_copies(0), 2);
  const std::vector<double> load(demand[0].begin(), demand[0].end());
  EXPECT_GT(placement_balancedness(limited.placement(0, demand[0]), load),
            placement_balancedness(limited.previous(0), load));
}

TEST(Issue17Placement, ReadsSglangAndMoebenchPlacementFiles) {
  const std::string sg = tmp_path("p_sglang.json");
  write_file(sg, "{\"physical_to_logical_map\": [[3, 2, 1, 0, 3, 1], [0, 1, 2, 3, 0, 0]]}");
  const auto p = read_placement_file(sg, 4, 3, 2);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].slots_per_rank, 2);
  EXPECT_EQ(p[0].copies(3), 2);
  EXPECT_EQ(p[0].ranks_of(3)[1], 2);
  EXPECT_EQ(p[1].copies(0), 3);
  const std::string one = tmp_path("p_one.json");
  write_file(one,
             "{\"format\": \"moebench-placement\", \"ep_size\": 2, \"experts\": 4, "
             "\"physical_to_logical_map\": [[0, 1, 2, 3]]}");
  const auto q = read_placement_file(one, 4, 2, 3);
  ASSERT_EQ(q.size(), 3u) << "one row applies to every layer";
  EXPECT_EQ(q[2].rank_of_expert, (std::vector<int32_t>{0, 0, 1, 1}));
}

TEST(Issue17Placement, PlacementFileErrorsNameTheProblem) {
  auto expect = [](const std::string& text, const std::string& name, const std::string& needle,
                   int32_t E = 4, int32_t R = 2) {
    const std::string path = tmp_path(name);
    write_file(path, text);
    try {
      read_placement_file(path, E, R, 1);
      ADD_FAILURE() << "no error for " << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  expect("{\"physical_to_logical_map\": [[0, 1, 2, 2]]}", "e1.json", "expert 3 has no slot");
  expect("{\"physical_to_logical_map\": [[0, 1, 2]]}", "e2.json",
         "not a positive multiple of the 2 EP ranks");
  expect("{\"physical_to_logical_map\": [[0, 1, 2, 9]]}", "e3.json", "'9' is not an expert id");
  expect("{\"logical_count\": [[1, 2, 3, 4]]}", "e4.json", "logical_count");
  expect("{\"physical_to_logical_map\": [[0, 1, 2, 3]], \"ep_size\": 4}", "e5.json",
         "ep_size = 4, but this run has 2");
  expect("{\"physical_to_logical_map\": [[0, 1, 2, 3]", "e6.json", "malformed JSON");
  expect("{}", "e7.pt", ".pt (torch.save) files are not read");
  expect("{\"physical_to_logical_map\": [[0, 1, 2, 3], [0, 1, 2, 3]]}", "e8.json",
         "has 2 layers, the run has 1");
}

TEST(Issue17Matrix, ReadsTransferMatrices) {
  const std::string txt = tmp_path("m.txt");
  write_file(txt, "# bytes\n1 2 3\n4\t5 6\n\n7 8 9\n");
  EXPECT_EQ(read_transfer_matrix(txt),
            (std::vector<std::vector<int64_t>>{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}));
  const std::string csv = tmp_path("m.csv");
  write_file(csv, "1,2\r\n3,4\r\n");
  EXPECT_EQ(read_transfer_matrix(csv), (std::vector<std::vector<int64_t>>{{1, 2}, {3, 4}}));
  auto expect = [](const std::string& text, const std::string& needle) {
    const std::string path = tmp_path("bad.txt");
    write_file(path, text);
    try {
      read_transfer_matrix(path);
      ADD_FAILURE() << "no error for " << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect("1 2\n3 x\n", "line 2, column 2: 'x' is not a byte count");
  expect("1 2\n3 -4\n", "'-4' is not a byte count");
  expect("1 2\n3\n", "line 2: 1 values, expected 2");
  expect("1 2\n3 4\n5 6\n", "3 rows but 2 columns");
  expect("# nothing\n", "no rows");
  EXPECT_THROW(read_transfer_matrix(tmp_path("missing.txt")), InputError);
}
