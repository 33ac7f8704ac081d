// The workloads of issue 6 (balanced, hot_experts, ...): each one's documented statistic (the top
// comment of its file), split invariance of every synthetic workload, the fast noise, and that
// every registered workload is covered by a test.
//
// Tolerances: a proportion p measured on n independent draws is checked to 5 standard errors,
// 5 sqrt(p (1 - p) / n) (a false failure once in ~2 million runs), plus kNoiseError for the
// noise's own approximation (23-bit uniforms, a polynomial log: synthetic.hpp), which moves a
// Gumbel-max probability by less than 1e-5. Pooled variances get 5 standard errors of the
// estimator plus the bounded rounding terms named where they are used.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/routing/topk.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

constexpr double kNoiseError = 1e-5;

WorkloadSetup setup(int32_t E, int32_t k, int32_t ranks, int64_t tokens_per_rank, int32_t layers = 2) {
  WorkloadSetup s;
  s.num_experts = E;
  s.num_layers = layers;
  s.top_k = k;
  s.ep_size = ranks;
  s.tokens_per_rank = tokens_per_rank;
  s.seq_len = 100;
  s.seed = 11;
  return s;
}

double tol(double p, int64_t n) { return 5 * std::sqrt(p * (1 - p) / static_cast<double>(n)) + kNoiseError; }

// First choice (argmax, lower index on ties) of each token.
std::vector<int32_t> first_choices(const TokenBatch& b) {
  std::vector<int32_t> out(static_cast<size_t>(b.num_tokens));
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const float* z = b.logits.data() + t * b.num_experts;
    out[static_cast<size_t>(t)] = static_cast<int32_t>(std::max_element(z, z + b.num_experts) - z);
  }
  return out;
}

// Fraction of tokens [lo, hi) whose first choice is in `set`.
double fraction_in(const std::vector<int32_t>& first, const std::set<int32_t>& set, int64_t lo, int64_t hi) {
  int64_t n = 0;
  for (int64_t t = lo; t < hi; ++t) n += set.count(first[static_cast<size_t>(t)]) ? 1 : 0;
  return static_cast<double>(n) / static_cast<double>(hi - lo);
}

TokenBatch gen(const std::string& name, const WorkloadSetup& s, const std::map<std::string, std::string>& args,
               int32_t step = 0, int32_t layer = 0) {
  auto w = make_workload(name, s, args);
  TokenBatch b;
  w->generate(step, layer, 0, s.tokens_per_rank * s.ep_size, b);
  return b;
}

// The workloads this file (or test_workloads.cpp) checks the statistic of.
const std::set<std::string> kCovered = {"uniform",       "zipf",       "domain_shift",     "trace",          "balanced",
                                        "hot_experts",   "spread_hot", "hot_rank",         "source_ragged",  "zero_expert_rank",
                                        "rotating_hotspot", "burst",   "lognormal",        "layer_affinity"};

}  // namespace

TEST(WorkloadsIssue6, EveryRegisteredWorkloadHasAStatisticTest) {
  for (const auto& name : WorkloadRegistry::instance().names())
    EXPECT_TRUE(kCovered.count(name)) << "workload " << name << " has no statistic test: add one and list it in kCovered";
  for (const auto& name : kCovered) EXPECT_NE(WorkloadRegistry::instance().find(name), nullptr) << name;
}

// Every synthetic workload, 4 EP ranks of 1000 tokens: one call for the whole step equals calls
// split anywhere and per-rank calls; the layout is the step's and adds up to R x T; the stream
// positions continue across steps.
TEST(WorkloadsIssue6, AnySplitGivesIdenticalLogitsForEverySyntheticWorkload) {
  const WorkloadSetup s = setup(16, 2, 4, 1000, 3);
  for (const auto& name : WorkloadRegistry::instance().names()) {
    if (name == "trace") continue;
    auto w = make_workload(name, s, {});
    auto w2 = make_workload(name, s, {});  // a second instance: no hidden state carried between calls
    int64_t stream = 0;
    for (int32_t step = 0; step < 3; ++step)
      for (int32_t layer = 0; layer < 3; ++layer) {
        TokenBatch whole, part, ranks;
        w->generate(step, layer, 0, 4000, whole);
        ASSERT_EQ(whole.global_tokens, 4000) << name;
        if (layer == 0) {
          EXPECT_EQ(whole.sequence[0], stream / 100) << name << " step " << step;
          stream += whole.global_tokens;
        }
        std::vector<float> joined;
        for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 1}, {1, 1499}, {1499, 4000}}) {
          w2->generate(step, layer, lo, hi - lo, part);
          joined.insert(joined.end(), part.logits.begin(), part.logits.end());
        }
        EXPECT_EQ(joined, whole.logits) << name << " step " << step << " layer " << layer;
        joined.clear();
        int64_t expect_first = 0;
        for (int32_t r = 0; r < 4; ++r) {
          w2->generate_ranks(step, layer, r, 1, ranks);
          EXPECT_EQ(ranks.first_token, expect_first) << name;
          EXPECT_GE(ranks.num_tokens, 1) << name << " rank " << r;
          ASSERT_EQ(ranks.rank_offsets, (std::vector<int64_t>{0, ranks.num_tokens})) << name;
          expect_first += ranks.num_tokens;
          joined.insert(joined.end(), ranks.logits.begin(), ranks.logits.end());
        }
        EXPECT_EQ(expect_first, 4000) << name;
        EXPECT_EQ(joined, whole.logits) << name << " step " << step << " layer " << layer << " per rank";
        for (float z : whole.logits) ASSERT_TRUE(std::isfinite(z)) << name;
      }
    TokenBatch a, b;
    w->generate(0, 0, 0, 4000, a);
    w->generate(1, 0, 0, 4000, b);
    EXPECT_NE(a.logits, b.logits) << name << ": steps must differ";
  }
}

TEST(WorkloadsIssue6, FastNoiseMatchesScalarAndGumbelMoments) {
  const int32_t E = 40;  // not a multiple of the vector width: the loop's tail is checked too
  const int64_t n = 5000;
  std::vector<float> z(static_cast<size_t>(n * E)), u(z.size());
  synth::gumbel_rows(99, 123456789, n, E, nullptr, z.data());
  synth::uniform_rows(99, 123456789, n, E, u.data());
  double sum = 0, sq = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int32_t e = 0; e < E; ++e) {
      const float g = z[static_cast<size_t>(t * E + e)];
      ASSERT_EQ(g, synth::gumbel_one(99, 123456789 + t, e)) << t << " " << e;
      ASSERT_EQ(u[static_cast<size_t>(t * E + e)], synth::uniform_one(99, 123456789 + t, e));
      const double ud = u[static_cast<size_t>(t * E + e)];
      ASSERT_NEAR(g, -std::log(-std::log(ud)), 4e-6 * (1 + std::fabs(g)));  // same u, exact transform
      ASSERT_GE(g, synth::kGumbelMin);
      ASSERT_LE(g, synth::kGumbelMax);
      sum += g;
      sq += g * g;
    }
  const double N = static_cast<double>(n * E);
  const double mean = sum / N, var = sq / N - mean * mean;
  const double pi2_6 = M_PI * M_PI / 6;  // Gumbel(0, 1): mean = Euler's gamma, variance pi^2 / 6
  EXPECT_NEAR(mean, 0.5772156649, 5 * std::sqrt(pi2_6 / N));
  EXPECT_NEAR(var, pi2_6, 5 * std::sqrt((5.4 - 1) * pi2_6 * pi2_6 / N));  // Gumbel kurtosis 5.4
  for (float x : {1e-7f, 0.01f, 0.5f, 0.70710677f, 0.9999999f, 1.0f, 1.5f, 16.6f, 1e6f})
    EXPECT_NEAR(synth::fast_log(x), std::log(static_cast<double>(x)), 3e-7 * std::max(1.0, std::fabs(std::log(static_cast<double>(x))))) << x;
}

TEST(WorkloadsIssue6, BalancedTopKCountsAreExactOnEveryRankAndOverall) {
  for (int64_t T : {1000, 1003}) {
    const int32_t E = 16, k = 3, R = 4;
    auto w = make_workload("balanced", setup(E, k, R, T), {});
    TokenBatch b;
    w->generate(1, 1, 0, R * T, b);
    std::vector<std::vector<int64_t>> count(R + 1, std::vector<int64_t>(E, 0));  // [rank or R = all][expert]
    std::vector<int64_t> first(E, 0);
    int32_t idx[3];
    float val[3];
    for (int64_t t = 0; t < R * T; ++t) {
      topk_indices(b.logits.data() + t * E, E, k, idx, val);
      EXPECT_GT(val[k - 1], 1.0f) << "the chosen k stand apart from the rest";
      for (int j = 0; j < k; ++j) {
        ++count[static_cast<size_t>(t / T)][idx[j]];
        ++count[R][idx[j]];
      }
      ++first[idx[0]];
    }
    for (int32_t r = 0; r <= R; ++r) {
      const int64_t n = r < R ? T : R * T;
      for (int32_t e = 0; e < E; ++e) {
        EXPECT_GE(count[r][e], n * k / E) << "rank " << r << " expert " << e;
        EXPECT_LE(count[r][e], (n * k + E - 1) / E) << "rank " << r << " expert " << e;
      }
    }
    // First choices: exactly k per expert in any E * k consecutive tokens, so over all n tokens
    // between k floor(n / (E k)) and that + k.
    std::vector<int64_t> window(E, 0);
    for (int64_t t = 777; t < 777 + E * k; ++t) {
      topk_indices(b.logits.data() + t * E, E, k, idx, val);
      ++window[idx[0]];
    }
    const int64_t full = R * T / (E * k) * k;
    for (int32_t e = 0; e < E; ++e) {
      EXPECT_EQ(window[e], k) << "expert " << e;
      EXPECT_GE(first[e], full) << "expert " << e;
      EXPECT_LE(first[e], full + k) << "expert " << e;
    }
  }
  EXPECT_THROW(make_workload("balanced", setup(4, 5, 1, 10), {}), InputError);
  EXPECT_THROW(make_workload("balanced", setup(16, 2, 1, 10), {{"hot", "2"}}), InputError);
}

TEST(WorkloadsIssue6, HotExpertsAndSpreadHotTakeTheirFraction) {
  const int64_t n = 40000;
  const WorkloadSetup s = setup(64, 4, 1, n);
  {
    const auto first = first_choices(gen("hot_experts", s, {{"hot", "4"}, {"fraction", "0.3"}, {"first", "62"}}));
    EXPECT_NEAR(fraction_in(first, {62, 63, 0, 1}, 0, n), 0.3, tol(0.3, n));  // the block wraps
    EXPECT_NEAR(fraction_in(first, {62}, 0, n), 0.3 / 4, tol(0.3 / 4, n));
    EXPECT_NEAR(fraction_in(first, {10}, 0, n), 0.7 / 60, tol(0.7 / 60, n));
  }
  {
    const auto first = first_choices(gen("spread_hot", s, {{"hot", "8"}, {"fraction", "0.6"}}));
    std::set<int32_t> hot;
    for (int i = 0; i < 8; ++i) hot.insert(i * 8);
    EXPECT_NEAR(fraction_in(first, hot, 0, n), 0.6, tol(0.6, n));
    EXPECT_NEAR(fraction_in(first, {3}, 0, n), 0.4 / 56, tol(0.4 / 56, n));
  }
  {  // defaults: hot = top_k = 4, fraction 0.5, first 0
    const auto first = first_choices(gen("hot_experts", s, {}));
    EXPECT_NEAR(fraction_in(first, {0, 1, 2, 3}, 0, n), 0.5, tol(0.5, n));
  }
  EXPECT_THROW(make_workload("hot_experts", s, {{"fraction", "1"}}), InputError);
  EXPECT_THROW(make_workload("hot_experts", s, {{"hot", "64"}}), InputError);
  EXPECT_THROW(make_workload("spread_hot", s, {{"hot", "0"}}), InputError);
  EXPECT_THROW(make_workload("hot_experts", s, {{"first", "64"}}), InputError);
}

TEST(WorkloadsIssue6, HotRankSkewsOnlyItsRank) {
  const int64_t T = 20000;
  const WorkloadSetup s = setup(32, 2, 4, T);
  const auto first = first_choices(gen("hot_rank", s, {{"rank", "2"}, {"hot", "3"}, {"fraction", "0.8"}}));
  const std::set<int32_t> hot = {0, 1, 2};
  for (int32_t r = 0; r < 4; ++r) {
    const double p = r == 2 ? 0.8 : 3.0 / 32;
    EXPECT_NEAR(fraction_in(first, hot, r * T, (r + 1) * T), p, tol(p, T)) << "rank " << r;
  }
  EXPECT_THROW(make_workload("hot_rank", s, {{"rank", "4"}}), InputError);
}

TEST(WorkloadsIssue6, ZeroExpertRankExpertsNeverInTheTopK) {
  const int64_t n = 30000;
  const int32_t E = 16, R = 4;
  const WorkloadSetup s = setup(E, 2, R, n / R);
  const TokenBatch b = gen("zero_expert_rank", s, {{"rank", "1"}});  // experts 4..7
  const int32_t K = E - 4;  // the most a router could take while avoiding them
  std::vector<int32_t> idx(K);
  std::vector<float> val(K);
  std::vector<int64_t> first(E, 0);
  for (int64_t t = 0; t < n; ++t) {
    topk_indices(b.logits.data() + t * E, E, K, idx.data(), val.data());
    for (int32_t j = 0; j < K; ++j) ASSERT_TRUE(idx[j] < 4 || idx[j] >= 8) << "token " << t;
    ++first[idx[0]];
  }
  for (int32_t e : {0, 3, 8, 15}) EXPECT_NEAR(static_cast<double>(first[e]) / n, 1.0 / 12, tol(1.0 / 12, n)) << e;
  EXPECT_THROW(make_workload("zero_expert_rank", setup(4, 2, 8, 10), {{"rank", "1"}}), InputError);  // hosts no expert
  EXPECT_THROW(make_workload("zero_expert_rank", setup(4, 3, 2, 10), {}), InputError);  // 2 experts left < top-k 3
}

TEST(WorkloadsIssue6, RotatingHotspotMovesByStrideEachStep) {
  const int64_t n = 20000;
  const WorkloadSetup s = setup(16, 2, 1, n);
  auto w = make_workload("rotating_hotspot", s, {{"hot", "2"}, {"stride", "3"}, {"fraction", "0.5"}});
  for (int32_t step = 0; step < 7; ++step) {  // step 6: 18 mod 16 = 2, the block has wrapped
    TokenBatch b;
    w->generate(step, 1, 0, n, b);
    const auto first = first_choices(b);
    const int32_t at = (3 * step) % 16;
    EXPECT_NEAR(fraction_in(first, {at, (at + 1) % 16}, 0, n), 0.5, tol(0.5, n)) << "step " << step;
  }
  EXPECT_THROW(make_workload("rotating_hotspot", s, {{"stride", "0"}}), InputError);
}

TEST(WorkloadsIssue6, BurstStepsComeAtTheirRateAndAreExtreme) {
  // 400 steps of 64 tokens, E = 16. A burst step gives its hot expert ~0.9 x 64 = 58 first
  // choices; a plain step's busiest expert ~10: the threshold 32 tells them apart (a miss needs
  // a 6-sigma binomial deviation either way).
  const int32_t S = 400, E = 16;
  const int64_t n = 64;
  const double p = 0.25;
  auto w = make_workload("burst", setup(E, 2, 1, n), {{"probability", "0.25"}, {"hot", "1"}, {"fraction", "0.9"}});
  int64_t bursts = 0, hot_firsts = 0;
  for (int32_t step = 0; step < S; ++step) {
    TokenBatch b0, b1;
    w->generate(step, 0, 0, n, b0);
    w->generate(step, 1, 0, n, b1);
    std::vector<int64_t> c0(E, 0), c1(E, 0);
    for (int32_t e : first_choices(b0)) ++c0[e];
    for (int32_t e : first_choices(b1)) ++c1[e];
    const bool burst0 = *std::max_element(c0.begin(), c0.end()) >= 32;
    const bool burst1 = *std::max_element(c1.begin(), c1.end()) >= 32;
    EXPECT_EQ(burst0, burst1) << "every layer of a step agrees, step " << step;
    if (burst0) {
      ++bursts;
      hot_firsts += *std::max_element(c0.begin(), c0.end());
    }
  }
  EXPECT_NEAR(static_cast<double>(bursts), S * p, 5 * std::sqrt(S * p * (1 - p)));
  ASSERT_GT(bursts, 0);
  EXPECT_NEAR(static_cast<double>(hot_firsts) / static_cast<double>(bursts * n), 0.9, tol(0.9, bursts * n));
  auto never = make_workload("burst", setup(E, 2, 1, 4000), {{"probability", "0"}});
  TokenBatch b;
  never->generate(3, 0, 0, 4000, b);
  EXPECT_NEAR(fraction_in(first_choices(b), {5}, 0, 4000), 1.0 / E, tol(1.0 / E, 4000));
  EXPECT_THROW(make_workload("burst", setup(E, 2, 1, n), {{"probability", "1.5"}}), InputError);
}

// Counts per rank of `steps` steps of a ragged workload: every rank >= 1, the total R x T.
std::vector<std::vector<int64_t>> ragged_counts(const std::string& name, const std::map<std::string, std::string>& args,
                                                int32_t R, int64_t T, int32_t steps) {
  auto w = make_workload(name, setup(8, 2, R, T), args);
  std::vector<std::vector<int64_t>> out;
  for (int32_t step = 0; step < steps; ++step) {
    std::vector<int64_t> first;
    w->rank_layout(step, first);
    EXPECT_EQ(first.size(), static_cast<size_t>(R) + 1);
    EXPECT_EQ(first.front(), 0);
    EXPECT_EQ(first.back(), R * T) << name << " step " << step;
    std::vector<int64_t> n(static_cast<size_t>(R));
    for (int32_t r = 0; r < R; ++r) {
      n[r] = first[r + 1] - first[r];
      EXPECT_GE(n[r], 1) << name << " step " << step << " rank " << r;
    }
    out.push_back(n);
  }
  return out;
}

TEST(WorkloadsIssue6, SourceRaggedCountsHaveTheirSpread) {
  // Within a step counts are T R w_r / sum(w) (+ rounding), so their squared coefficient of
  // variation estimates var(w) = a^2 / 3 for w uniform on [1 - a, 1 + a]. Pooled over S steps of
  // R ranks, the sample variance of a uniform has standard error ~ sqrt(0.8 / (R S)) a^2 / 3
  // (excess kurtosis -1.2); dividing by the step's mean of w adds a bias below 3 var(w)^2 / R, and
  // the "1 +" floor and rounding shift counts by at most 1.5 / T relative.
  const int32_t R = 64, S = 50;
  const int64_t T = 10000;
  const double a = 0.6, var_w = a * a / 3;
  const auto counts = ragged_counts("source_ragged", {{"spread", "0.6"}}, R, T, S);
  double cv2 = 0;
  for (const auto& n : counts) {
    double mean = 0, var = 0;
    for (int64_t x : n) mean += static_cast<double>(x) / R;
    EXPECT_DOUBLE_EQ(mean, static_cast<double>(T));
    for (int64_t x : n) var += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean) / (R - 1);
    cv2 += var / (mean * mean) / S;
  }
  EXPECT_NEAR(cv2, var_w, 5 * std::sqrt(0.8 / (R * S)) * var_w + 3 * var_w * var_w / R + 2 * 1.5 / T * (1 + a));
  const auto flat = ragged_counts("source_ragged", {{"spread", "0"}}, R, T, 2);
  for (int64_t x : flat[1]) EXPECT_EQ(x, T);
  EXPECT_THROW(make_workload("source_ragged", setup(8, 2, 4, 10), {{"spread", "1"}}), InputError);
}

TEST(WorkloadsIssue6, LognormalLogCountsHaveSdSigma) {
  // log(count_r) = sigma Z_r + const (+ at most 1.5 / min count from the floor and rounding):
  // the pooled sample variance of log counts estimates sigma^2 with standard error
  // sigma^2 sqrt(2 / (S (R - 1))); the rounding term moves it by at most 2 sigma d + d^2 with
  // d = 1.5 / min count (min count checked below).
  const int32_t R = 64, S = 50;
  const int64_t T = 10000;
  const double sigma = 0.5;
  const auto counts = ragged_counts("lognormal", {{"sigma", "0.5"}}, R, T, S);
  double pooled = 0;
  int64_t smallest = T;
  for (const auto& n : counts) {
    double mean = 0, var = 0;
    for (int64_t x : n) {
      mean += std::log(static_cast<double>(x)) / R;
      smallest = std::min(smallest, x);
    }
    for (int64_t x : n) var += (std::log(static_cast<double>(x)) - mean) * (std::log(static_cast<double>(x)) - mean) / (R - 1);
    pooled += var / S;
  }
  ASSERT_GE(smallest, 100);
  const double d = 1.5 / static_cast<double>(smallest);
  EXPECT_NEAR(pooled, sigma * sigma, 5 * sigma * sigma * std::sqrt(2.0 / (S * (R - 1))) + 2 * sigma * d + d * d);
  // Tiny tokens per rank: still >= 1 each (ragged_counts checks).
  ragged_counts("lognormal", {{"sigma", "3"}}, 256, 1, 5);
  ragged_counts("source_ragged", {{"spread", "0.99"}}, 256, 1, 5);
  EXPECT_THROW(make_workload("lognormal", setup(8, 2, 4, 10), {{"sigma", "-1"}}), InputError);
}

TEST(WorkloadsIssue6, LayerAffinityCarriesTheFirstChoiceAcrossLayers) {
  const int64_t n = 20000;
  const int32_t E = 16;
  const double a = 0.7, p = a + (1 - a) / E;
  auto w = make_workload("layer_affinity", setup(E, 2, 1, n, 3), {{"affinity", "0.7"}});
  std::vector<std::vector<int32_t>> first;
  for (int32_t l = 0; l < 3; ++l) {
    TokenBatch b;
    w->generate(2, l, 0, n, b);
    first.push_back(first_choices(b));
  }
  for (int32_t l = 0; l < 2; ++l) {
    // pi_l, estimated as the most frequent next choice of each expert (its share, ~a, dwarfs the
    // others', ~(1 - a) / E), must be a permutation; then P(next = pi_l(this)) = a + (1 - a) / E.
    std::vector<std::vector<int64_t>> joint(E, std::vector<int64_t>(E, 0));
    for (int64_t t = 0; t < n; ++t) ++joint[first[l][t]][first[l + 1][t]];
    std::set<int64_t> image;
    int64_t follow = 0;
    for (int32_t e = 0; e < E; ++e) {
      const auto it = std::max_element(joint[e].begin(), joint[e].end());
      image.insert(it - joint[e].begin());
      follow += *it;
    }
    EXPECT_EQ(image.size(), static_cast<size_t>(E)) << "layer " << l;
    EXPECT_NEAR(static_cast<double>(follow) / n, p, tol(p, n)) << "layer " << l;
  }
  std::vector<int64_t> c(E, 0);
  for (int32_t e : first[2]) ++c[e];
  for (int32_t e = 0; e < E; ++e) EXPECT_NEAR(static_cast<double>(c[e]) / n, 1.0 / E, tol(1.0 / E, n)) << e;
  EXPECT_THROW(make_workload("layer_affinity", setup(E, 2, 1, n), {{"affinity", "1.1"}}), InputError);
}

TEST(WorkloadsIssue6, ExistingWorkloadsKeepTheirUniformLayout) {
  auto w = make_workload("zipf", setup(16, 2, 4, 1000), {});
  TokenBatch b;
  w->generate(2, 0, 1500, 1000, b);
  EXPECT_EQ(b.global_tokens, 4000);
  EXPECT_EQ(b.tokens_per_rank, 1000);
  EXPECT_EQ(b.sequence[0], (2 * 4000 + 1500) / 100);
  // A ragged layout: generate() alone reports the real total and no uniform shortcut.
  auto r = make_workload("lognormal", setup(16, 2, 4, 1000), {});
  std::vector<int64_t> first;
  r->rank_layout(1, first);
  r->generate(1, 0, 0, first[1], b);
  EXPECT_EQ(b.global_tokens, 4000);
  EXPECT_EQ(b.tokens_per_rank, 0);
  EXPECT_EQ(b.sequence[0], 4000 / 100);
}
