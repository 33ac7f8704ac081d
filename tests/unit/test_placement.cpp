// Placements: EPLB and load_balanced on hand-worked cases, invariants of every placement, replica
// selection, re-placement cost.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "harness/core/error.hpp"
#include "harness/placement/placement.hpp"
#include "harness/placement/planner.hpp"
#include "harness/traffic/traffic.hpp"

namespace moe {
namespace {

Topology topo(int32_t nodes, int32_t rpn) {
  Topology t;
  t.nodes = nodes;
  t.ranks_per_node = rpn;
  return t;
}

PlacementSetup setup(int32_t E, const Topology& t, std::vector<double> load, int32_t redundant, int32_t groups = 0) {
  PlacementSetup s;
  s.num_experts = E;
  s.topology = t;
  s.expert_load = std::move(load);
  s.redundant_experts = redundant;
  s.expert_groups = groups;
  return s;
}

TEST(Eplb, HierarchicalReplicatesInsideEachNode) {
  // Groups {0,1} {2,3} on 2 nodes of 1 GPU, 2 redundant copies: node 0 copies its hot expert 0,
  // node 1 its expert 2; inside a GPU copies are ordered heaviest first.
  const Placement p = make_placement("eplb", setup(4, topo(2, 1), {10, 1, 4, 3}, 2, 2));
  EXPECT_EQ(p.slots_per_rank, 3);
  EXPECT_EQ(p.expert_of_slot, (std::vector<int32_t>{0, 0, 1, 3, 2, 2}));
  EXPECT_EQ(p.copies(0), 2);
  EXPECT_EQ(p.copies(1), 1);
  EXPECT_EQ(p.copies(2), 2);
}

TEST(Eplb, GroupsArePackedOntoNodesByLoad) {
  // One expert per group, 2 groups per node: groups 1 (8) and 0 (1) share node 0, 3 (5) and 2 (2)
  // node 1 (heaviest first into the lightest node with room).
  const Placement p = make_placement("eplb", setup(4, topo(2, 1), {1, 8, 2, 5}, 0, 4));
  EXPECT_EQ(p.expert_of_slot, (std::vector<int32_t>{1, 0, 3, 2}));
}

TEST(Eplb, GlobalPolicyWhenGroupsDoNotDivideOverNodesEqualsLoadBalanced) {
  // 3 groups over 2 nodes: global policy. Copies of 0 and 1 (largest load per copy), then greedy
  // packing of 8 copies into 4 GPUs of 2 slots.
  const auto s = setup(6, topo(2, 2), {6, 5, 4, 3, 2, 1}, 2, 3);
  const Placement p = make_placement("eplb", s);
  EXPECT_EQ(p.expert_of_slot, (std::vector<int32_t>{2, 5, 0, 1, 3, 1, 0, 4}));
  EXPECT_EQ(make_placement("load_balanced", s).expert_of_slot, p.expert_of_slot);
}

TEST(Placements, EveryExpertPlacedEverySlotFilled) {
  const Topology t = topo(4, 8);  // 32 ranks
  std::vector<double> load(64);
  for (size_t e = 0; e < load.size(); ++e) load[e] = 1.0 + static_cast<double>((e * 37) % 11);
  for (const std::string name : {"contiguous", "round_robin", "random", "load_balanced", "eplb"}) {
    const bool replicates = placement_strategy(name).replicates;
    const Placement p = make_placement(name, setup(64, t, replicates ? load : std::vector<double>{}, replicates ? 32 : 0));
    ASSERT_EQ(static_cast<int64_t>(p.expert_of_slot.size()), 32LL * p.slots_per_rank) << name;
    for (int32_t e = 0; e < 64; ++e) EXPECT_GE(p.copies(e), 1) << name << " expert " << e;
    if (replicates) {
      EXPECT_EQ(p.slots_per_rank, 3) << name;  // (64 + 32) / 32
      for (int32_t x : p.expert_of_slot) EXPECT_GE(x, 0) << name << ": an empty slot";
      EXPECT_EQ(p.physical_experts(), 96) << name;
    } else {
      EXPECT_EQ(p.physical_experts(), 64) << name;
    }
  }
  // Redundant copies are raised to fill every rank: 256 experts + 32 on 1024 ranks -> 1024 slots.
  const Placement big = make_placement("eplb", setup(256, topo(128, 8), {}, 32));
  EXPECT_EQ(big.slots_per_rank, 1);
  EXPECT_EQ(big.physical_experts(), 1024);
  EXPECT_THROW(make_placement("contiguous", setup(8, topo(1, 4), {}, 4)), InputError);  // does not replicate
}

TEST(Placements, LoadBalancedEvensOutTheRanks) {
  const Topology t = topo(1, 4);
  const std::vector<double> load{40, 30, 20, 10, 10, 5, 5, 0};
  const Placement p = make_placement("load_balanced", setup(8, t, load, 0));
  std::vector<double> per_rank(4, 0);
  for (size_t s = 0; s < p.expert_of_slot.size(); ++s) per_rank[s / p.slots_per_rank] += load[p.expert_of_slot[s]];
  // contiguous would give 70, 30, 15, 5; greedy largest-first, 2 slots per rank: 40 | 30 | 20 | 10,
  // then 10 -> rank 3 (20, full), 5 -> rank 2 (25, full), 5 -> rank 1 (35, full), 0 -> rank 0
  EXPECT_EQ(per_rank, (std::vector<double>{40, 35, 25, 20}));
}

TEST(ReplicaSelect, LocalityNeverLeavesTheNodeWhenACopyIsThere) {
  const Topology t = topo(2, 2);
  Placement p;  // expert 0 on ranks 1 (node 0) and 2 (node 1); expert 1 only on rank 3
  p.slots_per_rank = 1;
  p.expert_of_slot = {-1, 0, 0, 1};
  p.index(2);
  RoutingPlan plan;
  const int64_t T = 40;  // 10 tokens per rank, each to experts 0 and 1
  plan.reset(T, 2, 2 * T);
  for (int64_t i = 0; i < T; ++i) {
    plan.expert.insert(plan.expert.end(), {0, 1});
    plan.weight.insert(plan.weight.end(), {0.5f, 0.5f});
    plan.offsets[i + 1] = 2 * (i + 1);
  }
  TokenBatch layout;
  layout.num_tokens = T;
  layout.tokens_per_rank = 10;
  for (ReplicaSelect sel : {ReplicaSelect::locality, ReplicaSelect::round_robin, ReplicaSelect::random, ReplicaSelect::token_hash}) {
    TrafficMatrix m;
    m.reset(4);
    TrafficSpec spec;
    spec.payload_bytes = 1;
    spec.replica_select = sel;
    account_dispatch(plan, {}, layout, p, t, spec, m);
    int64_t expert0_copies = 0;
    for (int32_t s = 0; s < 4; ++s) expert0_copies += m.tok(s, 1) + m.tok(s, 2);
    EXPECT_EQ(expert0_copies, T);  // every token reaches one copy of expert 0
    if (sel == ReplicaSelect::locality) {
      // ranks 0, 1 use the copy on rank 1; ranks 2, 3 the copy on rank 2; never across nodes
      EXPECT_EQ(m.tok(0, 1), 10);
      EXPECT_EQ(m.tok(1, 1), 10);
      EXPECT_EQ(m.tok(2, 2), 10);
      EXPECT_EQ(m.tok(3, 2), 10);
      EXPECT_EQ(m.tok(0, 2) + m.tok(1, 2) + m.tok(2, 1) + m.tok(3, 1), 0);
    } else {
      EXPECT_GT(m.tok(0, 2) + m.tok(1, 2), 0) << "the other policies spread over both copies";
    }
  }
}

TEST(Planner, MovedCopiesAndSchedules) {
  const Topology t = topo(1, 4);
  Placement a = Placement::from_ranks({0, 1, 2, 3}, 4), b = Placement::from_ranks({1, 0, 2, 3}, 4);
  EXPECT_EQ(moved_copies(a, a, 4), 0);
  EXPECT_EQ(moved_copies(a, b, 4), 2);
  PlannerSpec ps;
  ps.placement = "load_balanced";
  ps.setup = setup(8, t, {}, 0);
  ps.layers = 1;
  ps.loads = PlacementLoads::ema;
  ps.replace_every = 2;
  PlacementPlanner planner(ps);
  const std::vector<int64_t> skewed{100, 90, 80, 70, 1, 1, 1, 1};
  const Placement first = planner.placement(0, skewed);
  planner.end_step(0, {skewed});
  EXPECT_EQ(planner.placement(0, skewed).expert_of_slot, first.expert_of_slot) << "ema re-places after 2 steps only";
  planner.end_step(1, {skewed});
  EXPECT_NE(planner.placement(0, skewed).expert_of_slot, first.expert_of_slot);
  EXPECT_GT(planner.moved_copies(0), 0);
  planner.end_step(2, {skewed});
  EXPECT_EQ(planner.moved_copies(0), 0);
  ps.placement = "contiguous";
  EXPECT_THROW(PlacementPlanner{ps}, InputError);  // contiguous uses no loads
}

}  // namespace
}  // namespace moe
