// beta / Pi / lookahead routing (harness/routing/beta.cpp, ROUTERS.md §5) on one process: beta=0 is
// softmax_topk; the integrator matches a sequential double-precision reference across EP-rank and
// step boundaries; the lookahead oracle routes on the next token; Pi follows its update rule; churn
// is recounted; and on domain_shift the lookahead beats standard routing at transitions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {

std::unique_ptr<Router> make(const std::string& name, int32_t E, int32_t k,
                             std::map<std::string, std::string> args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  return make_router(name, s, args);
}

// A packed stream of `steps` x `group` tokens: sequences of random length (new sequence with
// probability 1/20 per token), each made of segments of ~12 tokens that boost 3 experts by +3.
struct Stream {
  int32_t E = 0;
  int64_t group = 0;
  std::vector<float> logits;
  std::vector<int64_t> sequence;
  std::vector<int32_t> position;
};

Stream make_stream(int32_t E, int64_t group, int32_t steps, uint64_t seed) {
  Stream s;
  s.E = E;
  s.group = group;
  const int64_t n = group * steps;
  s.logits.resize(static_cast<size_t>(n) * E);
  s.sequence.resize(static_cast<size_t>(n));
  s.position.resize(static_cast<size_t>(n));
  const uint64_t key = rng::key(seed, 1), noise = rng::key(seed, 2);
  int64_t seq = 0;
  int32_t pos = 0, fav = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (t > 0 && rng::uniform(key, 3 * t) < 0.05) {
      ++seq;
      pos = 0;
    } else if (t > 0) {
      ++pos;
    }
    if (pos == 0 || rng::uniform(key, 3 * t + 1) < 1.0 / 12)
      fav = static_cast<int32_t>(rng::below(key, 3 * t + 2, E));
    s.sequence[t] = seq;
    s.position[t] = pos;
    for (int32_t e = 0; e < E; ++e) {
      const bool boosted = (e - fav + E) % E < 3;
      s.logits[t * E + e] =
          static_cast<float>(rng::normal(noise, t * E + e) + (boosted ? 3.0 : 0.0));
    }
  }
  return s;
}

// Tokens [first, first + n) of step `step`, in EP ranks of tokens_per_rank.
TokenBatch slice(const Stream& s, int32_t step, int64_t first, int64_t n, int64_t tokens_per_rank) {
  TokenBatch b;
  b.step = step;
  b.num_experts = s.E;
  b.num_tokens = n;
  b.first_token = first;
  b.global_tokens = s.group;
  b.tokens_per_rank = tokens_per_rank;
  const int64_t o = step * s.group + first;
  b.logits.assign(s.logits.begin() + o * s.E, s.logits.begin() + (o + n) * s.E);
  b.sequence.assign(s.sequence.begin() + o, s.sequence.begin() + o + n);
  b.position.assign(s.position.begin() + o, s.position.begin() + o + n);
  return b;
}

// u_t = beta u_{t-1} + z_t over the whole stream in double, reset where position == 0.
std::vector<double> reference_u(const Stream& s, double beta) {
  std::vector<double> u(s.logits.size());
  for (size_t t = 0; t < s.sequence.size(); ++t)
    for (int32_t e = 0; e < s.E; ++e) {
      const size_t i = t * s.E + e;
      u[i] = s.logits[i] + ((t > 0 && s.position[t] != 0) ? beta * u[i - s.E] : 0.0);
    }
  return u;
}

// The router's experts for a token are a top-k of `u` up to near-ties, best first, and the weights
// are the renormalised softmax of those u.
void expect_topk_of(const double* u, int32_t E, const RoutingPlan& plan, int64_t t, double tol,
                    const std::string& what) {
  const int64_t k = plan.count(t);
  std::vector<bool> chosen(E, false);
  double min_sel = INFINITY, max_rest = -INFINITY, prev = INFINITY, norm = 0;
  for (int64_t j = 0; j < k; ++j) {
    const int32_t e = plan.expert[plan.offsets[t] + j];
    chosen[e] = true;
    min_sel = std::min(min_sel, u[e]);
    ASSERT_LE(u[e], prev + tol) << what << " token " << t << ": experts not best first";
    prev = u[e];
  }
  for (int32_t e = 0; e < E; ++e)
    if (!chosen[e]) max_rest = std::max(max_rest, u[e]);
  ASSERT_GE(min_sel, max_rest - tol)
      << what << " token " << t << ": not the top-k of the reference";
  const double top = u[plan.expert[plan.offsets[t]]];
  for (int64_t j = 0; j < k; ++j) norm += std::exp(u[plan.expert[plan.offsets[t] + j]] - top);
  for (int64_t j = 0; j < k; ++j)
    ASSERT_NEAR(plan.weight[plan.offsets[t] + j],
                std::exp(u[plan.expert[plan.offsets[t] + j]] - top) / norm, 1e-4)
        << what << " token " << t;
}

std::map<std::string, double> figures_of(const Router& r) {
  std::map<std::string, double> out;
  const auto names = r.figure_names();
  const auto values = r.figures();
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) out[names[i]] = values[i];
  return out;
}

// Churn and per-expert switch counts of a plan, over consecutive same-sequence pairs.
struct ChurnCount {
  int64_t pairs = 0, changed = 0;
  std::vector<int64_t> n, m;
};
ChurnCount churn_of(const TokenBatch& b, const RoutingPlan& plan) {
  ChurnCount c;
  c.n.assign(b.num_experts, 0);
  c.m.assign(b.num_experts, 0);
  for (int64_t t = 0; t + 1 < b.num_tokens; ++t) {
    if (b.position[t + 1] == 0 || b.sequence[t + 1] != b.sequence[t]) continue;
    const int32_t a = plan.expert[plan.offsets[t]], z = plan.expert[plan.offsets[t + 1]];
    ++c.pairs;
    c.changed += a != z;
    ++c.n[a];
    c.m[a] += a != z;
  }
  return c;
}

}  // namespace

TEST(Beta, BetaZeroIsSoftmaxTopK) {
  const int32_t E = 64, k = 6;
  const Stream s = make_stream(E, 1000, 2, 3);
  for (const char* renorm : {"true", "false"}) {
    auto soft = make("softmax_topk", E, k, {{"renormalize", renorm}});
    auto beta = make("beta", E, k, {{"beta", "0"}, {"renormalize", renorm}});
    for (int32_t step = 0; step < 2; ++step) {
      const TokenBatch b = slice(s, step, 0, 1000, 250);
      RoutingPlan want, got;
      soft->route(b, Comm::self(), want);
      beta->route(b, Comm::self(), got);
      EXPECT_EQ(got.offsets, want.offsets);
      EXPECT_EQ(got.expert, want.expert) << "renormalize=" << renorm;
      EXPECT_EQ(got.weight, want.weight) << "renormalize=" << renorm;
      EXPECT_EQ(figures_of(*beta)["beta"], 0.0);
    }
  }
}

TEST(Beta, IntegratorMatchesSequentialReferenceAcrossRanksAndSteps) {
  const int32_t E = 32, k = 4;
  const int64_t group = 600;
  const Stream s = make_stream(E, group, 3, 5);
  for (double beta : {0.5, 0.9, 0.97}) {
    const auto u = reference_u(s, beta);
    auto r = make("beta", E, k, {{"beta", std::to_string(beta)}});
    for (int32_t step = 0; step < 3; ++step) {
      // 4 EP ranks of 150 tokens: the partial states are folded across rank boundaries, and the
      // state at the end of each step enters the next.
      const TokenBatch b = slice(s, step, 0, group, 150);
      RoutingPlan plan;
      r->route(b, Comm::self(), plan);
      for (int64_t t = 0; t < group; ++t)
        expect_topk_of(u.data() + (step * group + t) * E, E, plan, t, 1e-3,
                       "beta=" + std::to_string(beta) + " step " + std::to_string(step));
      const auto c = churn_of(b, plan);
      EXPECT_DOUBLE_EQ(figures_of(*r)["churn"],
                       static_cast<double>(c.changed) / static_cast<double>(c.pairs));
    }
  }
  // A step that does not follow the previous one does not take its state: the first tokens are
  // routed from a zero state (the stream's step 2 routed right after step 0).
  const double beta = 0.9;
  auto r = make("beta", E, k, {{"beta", "0.9"}});
  RoutingPlan plan;
  r->route(slice(s, 0, 0, group, 150), Comm::self(), plan);
  TokenBatch b2 = slice(s, 2, 0, group, 150);
  r->route(b2, Comm::self(), plan);
  ASSERT_NE(b2.position[0], 0) << "pick a stream whose step 2 starts inside a sequence";
  std::vector<double> fresh(static_cast<size_t>(E));
  for (int32_t e = 0; e < E; ++e) fresh[e] = b2.logits[e];
  expect_topk_of(fresh.data(), E, plan, 0, 1e-3, "no carry into a non-consecutive step");
  (void)beta;
}

TEST(Beta, LookaheadRoutesOnTheNextTokenOfTheSequence) {
  const int32_t E = 16, k = 2;
  const Stream s = make_stream(E, 500, 1, 8);
  const TokenBatch b = slice(s, 0, 0, 500, 125);
  auto ahead = make("beta", E, k, {{"lookahead", "true"}});
  auto soft = make("softmax_topk", E, k);
  RoutingPlan got, want;
  ahead->route(b, Comm::self(), got);
  // Route the shifted stream with softmax_topk: row t = z_{t+1} within a sequence, else z_t.
  TokenBatch shifted = b;
  int64_t ends = 0;
  for (int64_t t = 0; t + 1 < b.num_tokens; ++t) {
    const bool same = b.position[t + 1] != 0 && b.sequence[t + 1] == b.sequence[t];
    ends += !same;
    std::copy_n(b.logits.begin() + (same ? t + 1 : t) * E, E, shifted.logits.begin() + t * E);
  }
  ASSERT_GT(ends, 5);
  soft->route(shifted, Comm::self(), want);
  EXPECT_EQ(got.expert, want.expert);
  EXPECT_EQ(got.weight, want.weight);
  EXPECT_EQ(figures_of(*ahead)["beta"], 0.0);
}

TEST(Beta, PrecisionWeightingFollowsItsUpdateRule) {
  const int32_t E = 16, k = 2;
  const int64_t group = 800;
  const Stream s = make_stream(E, group, 3, 13);
  auto r = make("beta", E, k, {{"precision", "true"}});
  auto plain = make("beta", E, k);
  std::vector<double> v(E, 0.5);
  bool differs = false;
  for (int32_t step = 0; step < 3; ++step) {
    const TokenBatch b = slice(s, step, 0, group, 200);
    RoutingPlan plan, plain_plan;
    r->route(b, Comm::self(), plan);
    plain->route(b, Comm::self(), plain_plan);
    auto f = figures_of(*r);
    double pmin = INFINITY, pmax = -INFINITY;
    for (double x : v) {
      pmin = std::min(pmin, 1.0 / (x + 1e-4));
      pmax = std::max(pmax, 1.0 / (x + 1e-4));
    }
    EXPECT_NEAR(f["pi_min"], pmin, 1e-5 * pmin) << "step " << step;
    EXPECT_NEAR(f["pi_max"], pmax, 1e-5 * pmax) << "step " << step;
    if (step == 0) {
      EXPECT_EQ(plan.expert, plain_plan.expert) << "a uniform Pi does not change the selection";
    } else {
      differs = differs || plan.expert != plain_plan.expert;
    }
    const auto c = churn_of(b, plan);
    EXPECT_DOUBLE_EQ(f["churn"], static_cast<double>(c.changed) / static_cast<double>(c.pairs));
    r->end_step(Comm::self());
    plain->end_step(Comm::self());
    for (int32_t e = 0; e < E; ++e)
      if (c.n[e] > 0)
        v[e] = 0.95 * v[e] + 0.05 * static_cast<double>(c.m[e]) / static_cast<double>(c.n[e]);
  }
  EXPECT_TRUE(differs) << "a non-uniform Pi should change some selections";
}

TEST(Beta, KnobsAndInputs) {
  EXPECT_THROW(make("beta", 8, 2, {{"beta", "1"}}), InputError);
  EXPECT_THROW(make("beta", 8, 2, {{"beta", "-0.1"}}), InputError);
  EXPECT_THROW(make("beta", 8, 2, {{"beta", "0.5"}, {"lookahead", "true"}}), InputError);
  EXPECT_THROW(make("beta", 8, 2, {{"pi_decay", "1"}}), InputError);
  EXPECT_THROW(make("beta", 8, 2, {{"pi_eps", "0"}}), InputError);
  EXPECT_THROW(make("beta", 8, 2, {{"window", "3"}}), InputError);
  auto r = make("beta", 8, 2);
  const Stream s = make_stream(8, 10, 1, 1);
  TokenBatch b = slice(s, 0, 0, 10, 10);
  EXPECT_EQ(r->missing_input(b), "");
  b.has_sequences = false;
  EXPECT_NE(r->missing_input(b), "");
  b.has_sequences = true;
  b.full_logits = false;
  EXPECT_NE(r->missing_input(b), "");
}

// domain_shift through the whole pipeline: standard routing, beta, and the lookahead oracle, with
// fixed (segment_min == segment_max) and random switch positions. The harness's transition figures
// score token t against the domain of token t + 1; the oracle sees z_{t+1} and must win by far.
TEST(Beta, DomainShiftLookaheadWinsAtTransitions) {
  for (auto [seg_min, seg_max] : {std::pair{"32", "32"}, {"16", "64"}}) {
    RunConfig c;
    c.workload = "domain_shift";
    c.workload_args["domain_shift"] = {{"segment_min", seg_min}, {"segment_max", seg_max}};
    c.routers = {"softmax_topk", "beta", "beta@ahead", "beta@zero"};
    c.router_args["beta@ahead"] = {{"lookahead", "true"}};
    c.router_args["beta@zero"] = {{"beta", "0"}};  // = softmax_topk, for its churn
    c.experts = 64;
    c.top_k = 6;
    c.layers = 2;
    c.steps = 4;
    c.tokens_per_rank = 2048;
    c.seq_len = 256;
    c.ep_size = 4;
    c.hidden = 64;
    c.progress = "off";
    const auto problems = resolve_and_validate(c, 1);
    ASSERT_TRUE(problems.empty()) << problems.front();
    const auto out = run_pipeline(c, Comm::self(), RunOptions{true, false});
    std::map<std::string, std::map<std::string, double>>
        mean;  // router -> figure -> transition-weighted mean
    for (size_t ri = 0; ri < out.routers.size(); ++ri) {
      const auto& names = out.figure_names[ri];
      const auto idx = [&](const std::string& n) {
        return std::find(names.begin(), names.end(), n) - names.begin();
      };
      const size_t i_tr = idx("transitions");
      ASSERT_LT(i_tr, names.size());
      double total = 0;
      for (const auto& rec : out.records[ri]) total += rec.figures[i_tr];
      ASSERT_GT(total, 500) << "enough transitions to measure";
      for (const char* f : {"acc_at_transition", "p_correct_at_transition", "coverage_at_1",
                            "coverage_at_2", "coverage_at_3", "coverage_at_4"}) {
        const size_t i = idx(f);
        ASSERT_LT(i, names.size()) << f;
        double sum = 0;
        for (const auto& rec : out.records[ri]) sum += rec.figures[i] * rec.figures[i_tr];
        mean[out.routers[ri]][f] = sum / total;
      }
      mean[out.routers[ri]]["transitions"] = total;
      if (out.routers[ri] != "softmax_topk") {
        double churn = 0;
        for (const auto& rec : out.records[ri]) churn += rec.figures[idx("churn")];
        mean[out.routers[ri]]["churn"] = churn / static_cast<double>(out.records[ri].size());
      }
    }
    for (const auto& [router, f] : mean)
      std::printf(
          "[domain_shift segments %s..%s, E=64 k=6] %-12s transitions=%.0f acc=%.4f p_correct=%.4f "
          "cov@1=%.4f cov@2=%.4f "
          "cov@3=%.4f cov@4=%.4f churn=%s\n",
          seg_min, seg_max, router.c_str(), f.at("transitions"), f.at("acc_at_transition"),
          f.at("p_correct_at_transition"), f.at("coverage_at_1"), f.at("coverage_at_2"),
          f.at("coverage_at_3"), f.at("coverage_at_4"),
          f.count("churn") ? std::to_string(f.at("churn")).c_str() : "-");
    EXPECT_GT(mean["beta@ahead"]["acc_at_transition"],
              mean["softmax_topk"]["acc_at_transition"] + 0.5)
        << "segments " << seg_min << ".." << seg_max;
    EXPECT_GT(mean["beta@ahead"]["p_correct_at_transition"],
              mean["softmax_topk"]["p_correct_at_transition"] + 0.5);
    EXPECT_EQ(mean["beta@zero"]["acc_at_transition"], mean["softmax_topk"]["acc_at_transition"]);
    EXPECT_LT(mean["beta"]["churn"], mean["beta@zero"]["churn"])
        << "the integrator smooths the first choice along a sequence";
  }
}
