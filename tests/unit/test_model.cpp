#include <gtest/gtest.h>

#include "backends/sim/cost_model.hpp"

using namespace moe;

TEST(CostModel, HandComputedTwoLevelCase) {
  Topology t;
  t.nodes = 2;
  t.ranks_per_node = 2;
  t.intra = Link{100.0, 1.0};  // 100 B/s, 1 s
  t.inter = Link{10.0, 2.0};
  TrafficMatrix m;
  m.reset(4);
  m.byt(0, 1) = 200;  // intra: 1 + 2 = 3 s
  m.byt(0, 2) = 50;   // inter: 2 + 5 = 7 s (rank 0 sends, rank 2 receives)
  m.byt(3, 2) = 100;  // intra: 1 + 1 = 2 s
  m.byt(1, 1) = 1000; // local: free
  const auto r = model_alltoall(m, t);
  EXPECT_DOUBLE_EQ(r.seconds, 7.0);
  EXPECT_EQ(r.bottleneck_rank, 0);
  EXPECT_EQ(r.bottleneck_link, LinkClass::inter);
  const double algbw = 1350.0 / 4 / 7.0 / 1e9;
  EXPECT_DOUBLE_EQ(r.algbw_GBps, algbw);
  EXPECT_DOUBLE_EQ(r.busbw_GBps, algbw * 3 / 4);
}

TEST(CostModel, DuplexSendAndReceiveOverlapAndEmptyIsFree) {
  Topology t;
  t.nodes = 1;
  t.ranks_per_node = 2;
  t.intra = Link{100.0, 0.0};
  TrafficMatrix m;
  m.reset(2);
  EXPECT_EQ(model_alltoall(m, t).seconds, 0.0);
  m.byt(0, 1) = 100;
  m.byt(1, 0) = 100;
  EXPECT_DOUBLE_EQ(model_alltoall(m, t).seconds, 1.0);  // not 2: full duplex
}
