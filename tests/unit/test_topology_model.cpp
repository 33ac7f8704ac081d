// The topology-aware all-to-all model (backends/README.md): NIC sharing, node fabric, node-forwarded
// and hierarchical exchanges, the balanced lower bound; and the topology files that feed it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "backends/sim/cost_model.hpp"
#include "harness/config/run_config.hpp"
#include "harness/traffic/traffic.hpp"

using namespace moe;

namespace {

// 2 nodes x 2 ranks, 100 B/s and 1 s inside a node, 10 B/s and 2 s per NIC.
Topology small() {
  Topology t;
  t.nodes = 2;
  t.ranks_per_node = 2;
  t.intra = Link{100.0, 1.0};
  t.inter = Link{10.0, 2.0};
  return t;
}

RunConfig parse(std::vector<std::string> args) {
  args.insert(args.begin(), "run");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return parse_run_config(static_cast<int>(argv.size()), argv.data());
}

std::string joined(const std::vector<std::string>& p) {
  std::string s;
  for (const auto& x : p) s += x + "\n";
  return s;
}

}  // namespace

TEST(TopologyModel, NicSharingAddsTheSharersBytes) {
  Topology t = small();
  TrafficMatrix m;
  m.reset(4);
  m.byt(0, 2) = 50;
  m.byt(1, 3) = 30;
  // One NIC per rank: rank 0's 50 bytes alone, 2 + 50/10.
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 7.0);
  // One NIC per node: ranks 0 and 1 share 10 B/s, 2 + 80/10, the same for both.
  t.nics_per_node = 1;
  const auto shared = model_alltoall(m, t);
  EXPECT_DOUBLE_EQ(shared.seconds, 10.0);
  EXPECT_EQ(shared.bottleneck_rank, 0);
  EXPECT_EQ(shared.bottleneck_link, LinkClass::inter);
  // 2 NICs: one per rank again (backwards compatible with files that do not say).
  t.nics_per_node = 2;
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 7.0);
  // 4 NICs for 2 ranks: 20 B/s per rank, 2 + 50/20.
  t.nics_per_node = 4;
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 4.5);
}

TEST(TopologyModel, SharedNodeFabricLimitsIntraNodeTraffic) {
  Topology t;
  t.nodes = 1;
  t.ranks_per_node = 4;
  t.intra = Link{100.0, 0.5};
  TrafficMatrix m;
  m.reset(4);
  m.byt(0, 1) = 100;
  m.byt(2, 3) = 100;
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 1.5);  // each pair on its own links
  t.intra_node_bandwidth_Bps = 150.0;                    // both pairs through one 150 B/s fabric
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 0.5 + 200.0 / 150.0);
  // The bound sees the fabric too: 200 bytes over one node's 150 B/s.
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).lower_bound_s, 0.5 + 200.0 / 150.0);
}

TEST(TopologyModel, SharedLinksWithSharedNicAddTheClasses) {
  Topology t = small();
  t.shared_links = true;
  t.nics_per_node = 1;
  TrafficMatrix m;
  m.reset(4);
  m.byt(0, 1) = 100;  // rank 0 intra: 1 + 1
  m.byt(0, 2) = 20;   // NIC of node 0: 20 + 40 bytes
  m.byt(1, 3) = 40;
  // rank 0: (1 + 100/100) + (2 + 60/10) = 10; rank 1: intra recv 2 + NIC 8 = 10 as well.
  const auto r = model_alltoall(m, t);
  EXPECT_DOUBLE_EQ(r.seconds, 10.0);
  EXPECT_EQ(r.bottleneck_rank, 0);
  EXPECT_EQ(r.bottleneck_link, LinkClass::inter);
  // Bound with shared links: min latency + I/R/B_i + X/K/B_e = 1 + 100/4/100 + 60/2/10 = 4.25,
  // against the classes alone: 1 + 0.25 and 2 + 3 = 5.
  EXPECT_DOUBLE_EQ(r.lower_bound_s, 5.0);
}

TEST(TopologyModel, NodeForwardedDispatchPricesBothHopsAndThePipelineFill) {
  const Topology t = small();
  // Rank 0 sends one token (100 bytes) to ranks 2 and 3 of node 1. Forwarded: one network copy to
  // the rail-aligned relay 2 (local index 0, like rank 0), which forwards it to 3 over NVLink.
  TrafficMatrix fwd;
  fwd.reset(4);
  fwd.byt(0, 2) = 100;
  fwd.byt(2, 3) = 100;
  // Network hop 2 + 100/10 = 12 on ranks 0 and 2; NVLink hop 1 + 1 = 2; pipelined, plus the NVLink
  // hop's latency (the last chunk still has to be forwarded).
  const auto f = model_alltoall(fwd, t, A2aModel::node_forwarded);
  EXPECT_DOUBLE_EQ(f.seconds, 13.0);
  EXPECT_EQ(f.bottleneck_rank, 0);
  EXPECT_EQ(f.bottleneck_link, LinkClass::inter);
  EXPECT_DOUBLE_EQ(model_alltoall(fwd, t, A2aModel::flat).seconds, 12.0);
  // The same token without forwarding crosses the network twice from rank 0: 2 + 200/10.
  TrafficMatrix direct;
  direct.reset(4);
  direct.byt(0, 2) = 100;
  direct.byt(0, 3) = 100;
  EXPECT_DOUBLE_EQ(model_alltoall(direct, t).seconds, 22.0);
  // Only one class carries bytes: nothing to pipeline.
  TrafficMatrix one;
  one.reset(4);
  one.byt(0, 2) = 100;
  EXPECT_DOUBLE_EQ(model_alltoall(one, t, A2aModel::node_forwarded).seconds, 12.0);
}

TEST(TopologyModel, NodeForwardedMatrixFromTheTrafficAccounting) {
  // token_node accounting feeds the model: one token of rank 1 to experts on ranks 2 and 3.
  Topology t = small();
  TokenBatch batch;
  batch.num_tokens = 4;
  batch.num_experts = 4;
  batch.tokens_per_rank = 1;
  RoutingPlan plan;
  plan.reset(4, 4, 8);
  plan.offsets = {0, 0, 2, 2, 2};  // token 1 (rank 1) -> experts 2, 3
  plan.expert = {2, 3};
  plan.weight = {0.5f, 0.5f};
  Placement placement;
  placement.rank_of_expert = {0, 1, 2, 3};
  TrafficSpec spec{Dedup::token_node, 92, 4};
  TrafficMatrix m;
  m.reset(4);
  account_dispatch(plan, {}, batch, placement, t, spec, m);
  // Relay is rank 3 (node 1, local index 1 like rank 1): 1 -> 3 carries the payload and both
  // experts' metadata, 3 -> 2 the payload and one expert's.
  ASSERT_EQ(m.byt(1, 3), 100);
  ASSERT_EQ(m.byt(3, 2), 96);
  const auto r = model_alltoall(m, t, a2a_model_for("alltoallv", "token_node"));
  EXPECT_DOUBLE_EQ(r.seconds, 2.0 + 100.0 / 10.0 + 1.0);
}

TEST(TopologyModel, HierarchicalFourPhasesByHand) {
  const Topology t = small();
  TrafficMatrix m;
  m.reset(4);
  m.byt(0, 1) = 100;  // same node 0
  m.byt(3, 2) = 50;   // same node 1
  m.byt(1, 2) = 40;   // node 0 -> node 1
  m.byt(1, 3) = 20;
  m.byt(0, 3) = 60;
  // 1. same-node: rank 0 -> 1, 1 + 100/100 = 2 (node 1: 1.5)
  // 2. gather at leader 0: rank 1's 60 off-node bytes, 1 + 0.6 = 1.6
  // 3. leaders: node 0 sends 120 bytes over its 2 NICs (20 B/s), 2 + 6 = 8
  // 4. scatter at node 1: rank 3 receives 80, 1 + 0.8 = 1.8
  const auto h = model_alltoall(m, t, A2aModel::hierarchical);
  EXPECT_DOUBLE_EQ(h.seconds, 2.0 + 1.6 + 8.0 + 1.8);
  EXPECT_EQ(h.bottleneck_rank, 0);
  EXPECT_EQ(h.bottleneck_link, LinkClass::inter);
  // Flat: rank 3 receives 80 bytes on its NIC, 2 + 8.
  const auto f = model_alltoall(m, t, A2aModel::flat);
  EXPECT_DOUBLE_EQ(f.seconds, 10.0);
  EXPECT_EQ(f.bottleneck_rank, 3);
  // Bound: I = 150 over 4 links, X = 120 over 4 NICs: max(1 + 0.375, 2 + 3) = 5, for both.
  EXPECT_DOUBLE_EQ(h.lower_bound_s, 5.0);
  EXPECT_DOUBLE_EQ(f.lower_bound_s, 5.0);
  EXPECT_EQ(a2a_model_for("hierarchical", "token_node"), A2aModel::hierarchical);
  EXPECT_EQ(a2a_model_for("pairwise", "token_rank"), A2aModel::flat);
}

TEST(TopologyModel, HierarchicalOnOneNodeIsTheIntraExchange) {
  Topology t;
  t.nodes = 1;
  t.ranks_per_node = 4;
  t.intra = Link{100.0, 1.0};
  TrafficMatrix m;
  m.reset(4);
  m.byt(0, 1) = 100;
  m.byt(2, 1) = 100;
  EXPECT_DOUBLE_EQ(model_alltoall(m, t, A2aModel::hierarchical).seconds, model_alltoall(m, t).seconds);
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 3.0);
}

TEST(TopologyModel, LowerBoundEqualsTheModelWhenPerfectlyBalanced) {
  for (int nics : {0, 8, 2}) {
    for (double fabric : {0.0, 1e12}) {
      Topology t;
      t.nodes = 4;
      t.ranks_per_node = 8;
      t.intra = Link{450e9, 3e-6};
      t.inter = Link{50e9, 6e-6};
      t.nics_per_node = nics;
      t.intra_node_bandwidth_Bps = fabric;
      TrafficMatrix m;
      m.reset(32);
      for (int32_t s = 0; s < 32; ++s)
        for (int32_t d = 0; d < 32; ++d) m.byt(s, d) = 1 << 20;
      const auto r = model_alltoall(m, t);
      EXPECT_GT(r.seconds, 0);
      EXPECT_NEAR(r.lower_bound_s, r.seconds, 1e-12 * r.seconds) << "nics " << nics << " fabric " << fabric;
      // Imbalance: one hot destination, the same total bytes; the bound stays, the model grows.
      TrafficMatrix hot;
      hot.reset(32);
      for (int32_t s = 0; s < 32; ++s)
        for (int32_t d = 0; d < 32; ++d) hot.byt(s, d) = (d == 5 || d == 13) ? (1 << 20) * 16 : 0;
      const auto h = model_alltoall(hot, t);
      EXPECT_LE(h.lower_bound_s, h.seconds);
      EXPECT_GT(h.seconds, 2 * h.lower_bound_s);
    }
  }
}

TEST(TopologyModel, LowerBoundNeverExceedsAnyAlgorithm) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    Topology t;
    t.ranks_per_node = static_cast<int32_t>(1 + rng() % 8);
    t.nodes = static_cast<int32_t>(1 + rng() % 5);
    t.intra = Link{static_cast<double>(50 + rng() % 1000), static_cast<double>(rng() % 4)};
    t.inter = Link{static_cast<double>(5 + rng() % 100), static_cast<double>(rng() % 4)};
    t.shared_links = rng() % 2;
    const int choice = static_cast<int>(rng() % 3);  // NICs: one per rank, shared by all, two per rank
    t.nics_per_node = choice == 0 ? 0 : choice == 1 ? 1 : 2 * t.ranks_per_node;
    t.intra_node_bandwidth_Bps = rng() % 2 ? static_cast<double>(100 + rng() % 2000) : 0.0;
    const int32_t R = t.ep_size();
    TrafficMatrix m;
    m.reset(R);
    const int sparsity = static_cast<int>(1 + rng() % 6);
    for (auto& b : m.bytes) b = rng() % sparsity == 0 ? static_cast<int64_t>(rng() % 10000) : 0;
    for (A2aModel a : {A2aModel::flat, A2aModel::node_forwarded, A2aModel::hierarchical}) {
      const auto r = model_alltoall(m, t, a);
      EXPECT_LE(r.lower_bound_s, r.seconds * (1 + 1e-12)) << "trial " << trial << " algo " << static_cast<int>(a);
      EXPECT_GE(r.bottleneck_rank, 0);
      EXPECT_LT(r.bottleneck_rank, R);
    }
  }
}

TEST(TopologyFiles, ShippedFilesLoad) {
  struct Expect {
    const char* file;
    int32_t ep, rpn, nics;
    double intra_GBps, inter_GBps_per_nic, node_GBps;
    bool shared;
  };
  const Expect files[] = {
      {"dgx-h100.ini", 64, 8, 8, 450, 50, 0, false},
      {"gb200-nvl72.ini", 144, 72, 72, 900, 50, 0, false},
      {"pcie-node.ini", 16, 8, 2, 50, 50, 100, true},
      {"h100-default.ini", 16, 8, 0, 450, 50, 0, false},
  };
  for (const auto& e : files) {
    const std::string path = std::string(MOEBENCH_SOURCE_DIR) + "/cluster/topologies/" + e.file;
    auto c = parse({"--topology", path, "--ep-size", std::to_string(e.ep)});
    const auto p = resolve_and_validate(c, 2);
    ASSERT_TRUE(p.empty()) << e.file << ": " << joined(p);
    const Topology t = c.topology();
    EXPECT_EQ(t.ranks_per_node, e.rpn) << e.file;
    EXPECT_EQ(t.nodes, e.ep / e.rpn) << e.file;
    EXPECT_EQ(t.nics_per_node, e.nics) << e.file;
    EXPECT_DOUBLE_EQ(t.intra.bandwidth_Bps, e.intra_GBps * 1e9) << e.file;
    EXPECT_DOUBLE_EQ(t.inter.bandwidth_Bps, e.inter_GBps_per_nic * 1e9) << e.file;
    EXPECT_DOUBLE_EQ(t.intra_node_bandwidth_Bps, e.node_GBps * 1e9) << e.file;
    EXPECT_EQ(t.shared_links, e.shared) << e.file;
  }
  // PCIe node: 4 GPUs share each NIC.
  auto c = parse({"--topology", std::string(MOEBENCH_SOURCE_DIR) + "/cluster/topologies/pcie-node.ini", "--ep-size", "16"});
  ASSERT_TRUE(resolve_and_validate(c, 1).empty());
  EXPECT_EQ(c.topology().ranks_per_nic(), 4);
  EXPECT_EQ(c.topology().nic_of(13), 3);
}

TEST(TopologyFiles, BadValuesNameFileAndKey) {
  const auto dir = std::filesystem::path(MOEBENCH_TEST_TMP);
  std::filesystem::create_directories(dir);
  const auto path = (dir / "bad_topo.ini").string();
  struct Case {
    std::string body, key, value;
  };
  const Case cases[] = {
      {"ranks_per_node = 8\n[inter]\nnics_per_node = 3\n", "inter.nics_per_node", "3"},
      {"ranks_per_node = 8\n[inter]\nnics_per_node = -1\n", "inter.nics_per_node", "-1"},
      {"[intra]\nbandwidth_GBps = 0\n", "intra.bandwidth_GBps", "0"},
      {"[inter]\nbandwidth_Gbps = -400\n", "inter.bandwidth_Gbps", "-400"},
      {"[inter]\nlatency_us = -1\n", "inter.latency_us", "-1"},
      {"[intra]\nnode_bandwidth_GBps = -5\n", "intra.node_bandwidth_GBps", "-5"},
      {"ranks_per_node = 0\n", "ranks_per_node", "0"},
      {"[inter]\nnics_per_nod = 2\n", "nics_per_nod", ""},
      {"[inter]\nnics_per_node = two\n", "nics_per_node", "two"},
  };
  for (const auto& k : cases) {
    std::ofstream(path) << k.body;
    auto c = parse({"--topology", path, "--ep-size", "16"});
    const auto p = resolve_and_validate(c, 1);
    ASSERT_EQ(p.size(), 1u) << k.body << joined(p);
    EXPECT_NE(p[0].find(path), std::string::npos) << p[0];
    EXPECT_NE(p[0].find(k.key), std::string::npos) << p[0];
    EXPECT_NE(p[0].find(k.value), std::string::npos) << p[0];
    EXPECT_EQ(p[0].find('\n'), std::string::npos) << p[0];
  }
}
