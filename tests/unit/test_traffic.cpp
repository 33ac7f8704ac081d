#include <gtest/gtest.h>

#include "harness/core/error.hpp"
#include "harness/traffic/traffic.hpp"

using namespace moe;

namespace {

// 2 nodes x 2 ranks, E = 8 contiguous (experts 2r, 2r+1 on rank r), one token per source rank.
struct Fixture {
  Topology topo;
  Placement placement = Placement::from_ranks({0, 0, 1, 1, 2, 2, 3, 3}, 4);
  RoutingPlan plan;
  std::vector<uint8_t> kept{1, 1, 1, 1, 1, 1, 0};
  Fixture() {
    topo.nodes = 2;
    topo.ranks_per_node = 2;
    // token 0 (rank 0) -> experts 0,2,3,6; token 1 (rank 1) -> experts 4,5,7 with 7 dropped.
    plan.reset(2, 8, 7);
    plan.expert = {0, 2, 3, 6, 4, 5, 7};
    plan.weight.assign(7, 0.1f);
    plan.offsets = {0, 4, 7};
  }
  TrafficMatrix run(Dedup dedup) {
    TrafficMatrix m;
    m.reset(4);
    TokenBatch layout;  // token t on rank t
    layout.num_tokens = 2;
    layout.tokens_per_rank = 1;
    account_dispatch(plan, kept, layout, placement, topo, TrafficSpec{dedup, 100, 8}, m);
    return m;
  }
};

using Entry = std::tuple<int, int, int64_t, int64_t>;  // src, dst, tokens, bytes
void expect_matrix(const TrafficMatrix& m, const std::vector<Entry>& nonzero) {
  TrafficMatrix want;
  want.reset(m.ranks);
  for (auto [s, d, t, b] : nonzero) {
    want.tok(s, d) = t;
    want.byt(s, d) = b;
  }
  EXPECT_EQ(m.tokens, want.tokens);
  EXPECT_EQ(m.bytes, want.bytes);
}

}  // namespace

TEST(Traffic, PerTokenExpert) {
  Fixture f;
  expect_matrix(f.run(Dedup::token_expert), {{0, 0, 1, 108}, {0, 1, 2, 216}, {0, 3, 1, 108}, {1, 2, 2, 216}});
}

TEST(Traffic, PerTokenRank) {
  Fixture f;
  expect_matrix(f.run(Dedup::token_rank), {{0, 0, 1, 108}, {0, 1, 1, 116}, {0, 3, 1, 108}, {1, 2, 1, 116}});
}

TEST(Traffic, PerTokenNodeForwardsThroughTheRailAlignedRelay) {
  Fixture f;
  // token 0: rank 0 -> relay 2 (same local index on node 1) once, relay forwards to 3.
  // token 1: rank 1 -> relay 3 once (carrying experts 4,5's metadata), relay forwards to 2.
  const auto m = f.run(Dedup::token_node);
  expect_matrix(m, {{0, 0, 1, 108}, {0, 1, 1, 116}, {0, 2, 1, 108}, {2, 3, 1, 108}, {1, 3, 1, 116}, {3, 2, 1, 116}});
  const auto c = bytes_by_class(m, f.topo);
  EXPECT_EQ(c[0], 108);
  EXPECT_EQ(c[1], 116 + 108 + 116);
  EXPECT_EQ(c[2], 108 + 116);
}

TEST(Traffic, NodeDedupNeverSendsMoreInterNodeCopiesThanNodes) {
  Fixture f;
  f.kept.assign(7, 1);
  const auto rank = f.run(Dedup::token_rank);
  const auto node = f.run(Dedup::token_node);
  int64_t inter_rank = 0, inter_node = 0;
  for (int s = 0; s < 4; ++s)
    for (int d = 0; d < 4; ++d)
      if (f.topo.link(s, d) == LinkClass::inter) {
        inter_rank += rank.tok(s, d);
        inter_node += node.tok(s, d);
      }
  EXPECT_EQ(inter_rank, 3);  // token 0 -> rank 3; token 1 -> ranks 2 and 3
  EXPECT_EQ(inter_node, 2);  // one per (token, remote node)
}

TEST(Traffic, CombineIsTheTransposeWithPayloadOnly) {
  Fixture f;
  const auto d = f.run(Dedup::token_expert);
  TrafficMatrix c;
  combine_from_dispatch(d, 100, c);
  for (int s = 0; s < 4; ++s)
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(c.tok(r, s), d.tok(s, r));
      EXPECT_EQ(c.byt(r, s), d.tok(s, r) * 100);
    }
}

TEST(Traffic, ParseDedup) {
  EXPECT_EQ(parse_dedup("token_node"), Dedup::token_node);
  EXPECT_THROW(parse_dedup("per_node"), InputError);
}
