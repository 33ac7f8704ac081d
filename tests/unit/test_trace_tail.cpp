// Tail completion (workloads/trace_tail.hpp): what each model keeps of the recorded top-k, where
// it puts the tail, what it fits, and what it refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/trace_file.hpp"
#include "workloads/trace_tail.hpp"

namespace moe {
namespace {

constexpr int32_t kE = 16, kK = 4, kT = 300;

std::string tmp_path(const std::string& name) {
  std::filesystem::create_directories(MOEBENCH_TEST_TMP);
  const std::string p = std::string(MOEBENCH_TEST_TMP) + "/" + name;
  std::filesystem::remove(p);
  return p;
}

// An assignment trace of kT tokens, one layer: the top kK softmax probabilities of logits whose
// expert e has mean -0.2 e (so low ids are popular), or a geometric decay w_r = 0.4 exp(-0.5 r)
// when `geometric`.
struct Rows {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Rows write_trace(const std::string& path, const std::string& weights_are, bool geometric = false,
                 int32_t k = kK) {
  Rows rows;
  rows.ids.resize(static_cast<size_t>(kT * k));
  rows.w.resize(static_cast<size_t>(kT * k));
  std::vector<double> z(kE), p(kE);
  std::vector<int32_t> order(kE);
  for (int32_t t = 0; t < kT; ++t) {
    for (int32_t e = 0; e < kE; ++e)
      z[e] = -0.2 * e + 1.5 * rng::normal(rng::key(7, 1), static_cast<uint64_t>(t * kE + e));
    const double mx = *std::max_element(z.begin(), z.end());
    double s = 0;
    for (int32_t e = 0; e < kE; ++e) s += p[e] = std::exp(z[e] - mx);
    for (auto& x : p) x /= s;
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    for (int32_t j = 0; j < k; ++j) {
      rows.ids[t * k + j] = order[j];
      rows.w[t * k + j] = geometric ? static_cast<float>(0.4 * std::exp(-0.5 * j))
                                    : static_cast<float>(p[order[j]]);
    }
  }
  TraceWriterOptions o;
  o.kind = "assignments";
  o.num_experts = kE;
  o.num_layers = 1;
  o.top_k = k;
  o.weights_are = weights_are;
  TraceWriter w(path, o);
  std::vector<int32_t> pos(kT);
  std::iota(pos.begin(), pos.end(), 0);
  const int64_t first = w.append_tokens(0, kT, {}, pos);
  w.write_assignments(0, first, kT, rows.ids.data(), rows.w.data());
  w.finish();
  return rows;
}

std::vector<double> softmax(const std::vector<float>& z) {
  const double mx = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += p[i] = std::exp(z[i] - mx);
  for (auto& x : p) x /= s;
  return p;
}

TEST(TraceTail, MassKeepsTheRecordedProbabilitiesAndPutsEveryTailExpertBelowTheSmallest) {
  const std::string path = tmp_path("tail_mass.h5");
  const Rows rows = write_trace(path, "probabilities");
  TraceReader r(path);
  TailCompleter c(r, TailSpec{"mass", "popularity", 1.0, 3});
  std::vector<float> z(kE);
  for (int32_t t = 0; t < kT; ++t) {
    c.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, z.data());
    const auto p = softmax(z);
    double p_min = 1;
    std::vector<char> rec(kE, 0);
    for (int32_t j = 0; j < kK; ++j) {
      const int32_t e = rows.ids[t * kK + j];
      rec[e] = 1;
      p_min = std::min<double>(p_min, rows.w[t * kK + j]);
      ASSERT_NEAR(p[e], rows.w[t * kK + j], 2e-6 + 1e-5 * p[e]) << "token " << t << " expert " << e;
    }
    for (int32_t e = 0; e < kE; ++e) {
      if (!rec[e]) {
        ASSERT_LT(p[e], p_min) << "token " << t << " tail expert " << e;
      }
    }
    // The mean logit is 0.
    EXPECT_NEAR(std::accumulate(z.begin(), z.end(), 0.0) / kE, 0.0, 1e-4);
  }
}

TEST(TraceTail, MassWithoutNoiseOrdersTheTailByPopularity) {
  const std::string path = tmp_path("tail_mass_order.h5");
  const Rows rows = write_trace(path, "probabilities");
  TraceReader r(path);
  TailCompleter c(r, TailSpec{"mass", "popularity", 0.0, 3});
  const auto& prior = c.fits()[0].log_prior;
  std::vector<float> z(kE);
  int64_t ordered_pairs = 0;
  for (int32_t t = 0; t < kT; ++t) {
    c.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, z.data());
    std::vector<char> rec(kE, 0);
    for (int32_t j = 0; j < kK; ++j) rec[rows.ids[t * kK + j]] = 1;
    for (int32_t a = 0; a < kE; ++a)
      for (int32_t b = 0; b < kE; ++b)
        if (!rec[a] && !rec[b] && prior[a] > prior[b]) {
          ASSERT_GE(z[a], z[b]) << "token " << t;  // equal only where both sit at the cap
          ordered_pairs += z[a] > z[b];
        }
  }
  EXPECT_GT(ordered_pairs, 0);
}

TEST(TraceTail, ProfileFitsTheDecayAndContinuesItBelowTheRecorded) {
  const std::string path = tmp_path("tail_profile.h5");
  const Rows rows = write_trace(path, "renormalized", /*geometric=*/true);
  TraceReader r(path);
  TailCompleter c(r, TailSpec{"profile", "uniform", 1.0, 5});
  EXPECT_NEAR(c.fits()[0].slope, -0.5, 1e-6);
  EXPECT_NEAR(c.fits()[0].spread, 0.0, 1e-6);
  EXPECT_EQ(c.fits()[0].rows_fitted, kT);
  std::vector<float> z(kE);
  for (int32_t t = 0; t < 20; ++t) {
    c.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, z.data());
    // Recorded: log-weights in their recorded order, 0.5 apart.
    for (int32_t j = 1; j < kK; ++j)
      EXPECT_NEAR(z[rows.ids[t * kK + j - 1]] - z[rows.ids[t * kK + j]], 0.5, 1e-5);
    // Tail: the decay continued, -0.5 per rank below the last recorded (no spread fitted).
    std::vector<float> tail;
    std::vector<char> rec(kE, 0);
    for (int32_t j = 0; j < kK; ++j) rec[rows.ids[t * kK + j]] = 1;
    for (int32_t e = 0; e < kE; ++e)
      if (!rec[e]) tail.push_back(z[e]);
    std::sort(tail.begin(), tail.end(), std::greater<>());
    float prev = z[rows.ids[t * kK + kK - 1]];
    for (float v : tail) {
      EXPECT_NEAR(prev - v, 0.5, 1e-4);
      prev = v;
    }
  }
}

TEST(TraceTail, SameRowSameTailWhateverTheCallOrder) {
  const std::string path = tmp_path("tail_order.h5");
  const Rows rows = write_trace(path, "probabilities");
  TraceReader r(path);
  for (const char* model : {"mass", "profile"}) {
    TailCompleter a(r, TailSpec{model, "popularity", 1.0, 9}),
        b(r, TailSpec{model, "popularity", 1.0, 9});
    TailCompleter other_seed(r, TailSpec{model, "popularity", 1.0, 10});
    std::vector<float> za(kE), zb(kE), zc(kE);
    for (int32_t t = kT - 1; t >= 0; --t)
      a.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, za.data());
    int differs = 0;
    for (int32_t t = 0; t < kT; ++t) {
      a.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, za.data());
      b.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, zb.data());
      other_seed.complete(0, t, rows.ids.data() + t * kK, rows.w.data() + t * kK, zc.data());
      ASSERT_EQ(za, zb) << model << " token " << t;
      differs += za != zc;
    }
    EXPECT_GT(differs, kT / 2) << model << ": the seed keys the tail";
  }
}

TEST(TraceTail, RefusesWhatTheTraceCannotSupport) {
  const std::string renorm = tmp_path("tail_renorm.h5");
  write_trace(renorm, "renormalized");
  {
    TraceReader r(renorm);
    try {
      TailCompleter c(r, TailSpec{"mass", "popularity", 1.0, 1});
      FAIL() << "mass on renormalized weights";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("weights_are = renormalized"), std::string::npos)
          << e.what();
    }
  }
  const std::string k1 = tmp_path("tail_k1.h5");
  write_trace(k1, "probabilities", false, 1);
  {
    TraceReader r(k1);
    EXPECT_THROW(TailCompleter(r, TailSpec{"profile", "popularity", 1.0, 1}), InputError);
  }
  const std::string flat = tmp_path("tail_flat.h5");
  {  // equal weights: nothing decays, so no profile
    TraceWriterOptions o;
    o.kind = "assignments";
    o.num_experts = kE;
    o.num_layers = 1;
    o.top_k = 2;
    TraceWriter w(flat, o);
    std::vector<int32_t> pos{0, 1}, ids{0, 1, 2, 3};
    std::vector<float> wt{0.5f, 0.5f, 0.5f, 0.5f};
    w.append_tokens(0, 2, {}, pos);
    w.write_assignments(0, 0, 2, ids.data(), wt.data());
    w.finish();
  }
  TraceReader r(flat);
  try {
    TailCompleter c(r, TailSpec{"profile", "popularity", 1.0, 1});
    FAIL() << "profile on flat weights";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("do not decay"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe
