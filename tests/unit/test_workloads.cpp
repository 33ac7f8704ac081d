#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "harness/core/error.hpp"
#include "harness/routing/topk.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {
WorkloadSetup setup(int32_t E = 16, int32_t layers = 2) {
  WorkloadSetup s;
  s.num_experts = E;
  s.num_layers = layers;
  s.top_k = 2;
  s.ep_size = 4;
  s.tokens_per_rank = 1000;
  s.seq_len = 100;
  s.seed = 5;
  return s;
}
}  // namespace

TEST(Workloads, AnySplitOfTokensGivesIdenticalLogits) {
  for (const char* name : {"uniform", "zipf", "domain_shift"}) {
    auto w = make_workload(name, setup(), {});
    TokenBatch whole, a, b;
    w->generate(1, 1, 0, 4000, whole);
    w->generate(1, 1, 0, 1500, a);
    w->generate(1, 1, 1500, 2500, b);
    std::vector<float> joined(a.logits);
    joined.insert(joined.end(), b.logits.begin(), b.logits.end());
    EXPECT_EQ(joined, whole.logits) << name;
    EXPECT_EQ(whole.global_tokens, 4000);
    EXPECT_EQ(whole.sequence[150], (1 * 4000 + 150) / 100);
    EXPECT_EQ(whole.position[150], 50);
    TokenBatch other_layer;
    w->generate(1, 0, 0, 4000, other_layer);
    EXPECT_NE(other_layer.logits, whole.logits) << name;
  }
}

TEST(Workloads, ZipfFirstChoiceFollowsZipf) {
  const int32_t E = 16;
  const double s = 1.0;
  auto w = make_workload("zipf", setup(E), {{"s", "1.0"}});
  TokenBatch b;
  w->generate(0, 0, 0, 4000, b);
  std::vector<int64_t> first(E, 0);
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const float* z = b.logits.data() + t * E;
    ++first[std::max_element(z, z + E) - z];
  }
  std::sort(first.rbegin(), first.rend());
  double h = 0;
  for (int r = 1; r <= E; ++r) h += std::pow(r, -s);
  for (int r = 0; r < 4; ++r) {
    const double p = std::pow(r + 1, -s) / h;
    EXPECT_NEAR(static_cast<double>(first[r]) / 4000.0, p, 4 * std::sqrt(p * (1 - p) / 4000.0) + 0.01) << "rank " << r;
  }
}

TEST(Workloads, DomainShiftFavouredExpertsWinAndDomainsShareAcrossLayers) {
  auto w = make_workload("domain_shift", setup(32), {{"domains", "4"}, {"boost", "6"}, {"experts_per_domain", "2"}});
  TokenBatch b0, b1;
  w->generate(0, 0, 0, 4000, b0);
  // With a large boost, each token's top-2 are its domain's 2 experts: the number of distinct
  // top-2 sets is at most the number of domains.
  std::map<std::pair<int, int>, int> sets;
  int32_t idx[2];
  float val[2];
  for (int64_t t = 0; t < b0.num_tokens; ++t) {
    topk_indices(b0.logits.data() + t * 32, 32, 2, idx, val);
    ++sets[{std::min(idx[0], idx[1]), std::max(idx[0], idx[1])}];
  }
  int big = 0;
  for (auto& [k, n] : sets) big += n > 100;
  EXPECT_LE(big, 4);
  EXPECT_GE(big, 2);
  EXPECT_THROW(make_workload("domain_shift", setup(), {{"segment_min", "10"}, {"segment_max", "5"}}), InputError);
}

TEST(Workloads, UnknownArgsRejected) {
  EXPECT_THROW(make_workload("zipf", setup(), {{"exponent", "1"}}), InputError);
  EXPECT_THROW(make_workload("nope", setup(), {}), InputError);
}
