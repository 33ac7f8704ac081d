// beta under mpiexec -n 1/2/4. Sequences cross EP-rank, process and step boundaries
// (tokens_per_rank is not a multiple of seq_len): the state entering each process's first token
// must be exact, so (a) the pipeline is bit-identical to one process hosting every EP rank, for the
// integrator, the lookahead oracle and Pi weighting, and (b) the distributed plan matches a
// sequential double-precision recurrence over the whole stream.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>

#include "harness/config/run_config.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

RunConfig beta_config(const std::string& workload, const std::map<std::string, std::string>& args,
                      int world_size) {
  RunConfig c;
  c.workload = workload;
  c.routers = {"beta"};
  c.router_args["beta"] = args;
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = 3;
  c.tokens_per_rank = 100;  // 800 tokens per step, seq_len 64: sequences cross ranks and steps
  c.seq_len = 64;
  c.ep_size = 8;
  c.nodes = 2;
  c.hidden = 32;
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}

bool same_double(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

// First difference between two runs' records ("" when identical). Returns instead of asserting, so
// that a failing rank still makes the collective calls of the next run.
std::string first_difference(const RunOutput& got, const RunOutput& want) {
  if (got.records[0].size() != want.records[0].size()) return "record count";
  for (size_t i = 0; i < got.records[0].size(); ++i) {
    const auto& g = got.records[0][i];
    const auto& w = want.records[0][i];
    const std::string at = " at record " + std::to_string(i);
    if (g.expert_demand != w.expert_demand) return "expert_demand" + at;
    if (g.expert_load != w.expert_load) return "expert_load" + at;
    if (got.matrices[0][i].bytes != want.matrices[0][i].bytes) return "dispatch bytes" + at;
    if (g.figures.size() != w.figures.size()) return "figure count" + at;
    for (size_t f = 0; f < g.figures.size(); ++f)
      if (!same_double(g.figures[f], w.figures[f]))
        return "figure " + got.figure_names[0][f] + at + ": " + std::to_string(g.figures[f]) +
               " vs " + std::to_string(w.figures[f]);
  }
  return "";
}

}  // namespace

TEST(BetaDistributed, PipelineIdenticalToOneProcess) {
  const Comm world = Comm::world();
  const std::vector<std::map<std::string, std::string>> knob_sets = {
      {},
      {{"beta", "0.97"}},
      {{"lookahead", "true"}},
      {{"precision", "true"}},
      {{"precision", "true"}, {"lookahead", "true"}}};
  for (const char* workload : {"domain_shift", "zipf"})
    for (const auto& args : knob_sets) {
      std::string what = workload;
      for (const auto& [k, v] : args) what += " " + k + "=" + v;
      const auto dist =
          run_pipeline(beta_config(workload, args, world.size()), world, RunOptions{true, false});
      const auto alone =
          run_pipeline(beta_config(workload, args, 1), Comm::self(), RunOptions{true, false});
      EXPECT_EQ(first_difference(dist, alone), "") << what;
    }
}

// Each process routes its own slice with the group communicator; every process also generates the
// whole stream and runs u_t = beta u_{t-1} + z_t sequentially in double (reset at position 0),
// carried across steps. The plan must be that recurrence's top-k (up to near-ties) with its
// softmax weights, and the lookahead plan must be the top-k of z_{t+1} exactly.
TEST(BetaDistributed, CarriedStateMatchesSequentialReference) {
  const Comm world = Comm::world();
  const int32_t E = 16, k = 2, L = 2, steps = 3;
  const int64_t per_rank = 100, ranks = 8, G = per_rank * ranks, seq_len = 64;
  const int64_t here = G / world.size(), first = here * world.rank();
  WorkloadSetup ws{E, L, k, static_cast<int32_t>(ranks), per_rank, seq_len, 21};
  auto workload = make_workload("domain_shift", ws, {{"segment_min", "8"}, {"segment_max", "24"}});
  RouterSetup rs{E, k, L, Topology{}};
  auto integ = make_router("beta", rs, {{"beta", "0.9"}});
  auto ahead = make_router("beta", rs, {{"lookahead", "true"}});
  std::vector<std::vector<double>> u(L, std::vector<double>(E, 0.0));  // reference state per layer
  int64_t crossings = 0;
  for (int32_t step = 0; step < steps; ++step) {
    for (int32_t layer = 0; layer < L; ++layer) {
      TokenBatch mine, all;
      workload->generate(step, layer, first, here, mine);
      workload->generate(step, layer, 0, G, all);
      RoutingPlan p_integ, p_ahead;
      integ->route(mine, world, p_integ);
      ahead->route(mine, world, p_ahead);
      std::vector<double> ref(static_cast<size_t>(G) * E);
      for (int64_t t = 0; t < G; ++t) {
        const bool cont = all.position[t] != 0;
        if (cont && t % per_rank == 0) ++crossings;
        for (int32_t e = 0; e < E; ++e) {
          u[layer][e] = (cont ? 0.9 * u[layer][e] : 0.0) + all.logits[t * E + e];
          ref[t * E + e] = u[layer][e];
        }
      }
      // Checked without ASSERT (a rank returning early would leave the others in route()).
      std::string bad;
      for (int64_t t = 0; t < here && bad.empty(); ++t) {
        const double* r = ref.data() + (first + t) * E;
        const std::string what = "step " + std::to_string(step) + " layer " +
                                 std::to_string(layer) + " token " + std::to_string(first + t);
        double min_sel = INFINITY, max_rest = -INFINITY, norm = 0;
        std::vector<bool> chosen(E, false);
        for (int32_t j = 0; j < k; ++j) {
          const int32_t e = p_integ.expert[t * k + j];
          chosen[e] = true;
          min_sel = std::min(min_sel, r[e]);
          norm += std::exp(r[e] - r[p_integ.expert[t * k]]);
        }
        for (int32_t e = 0; e < E; ++e)
          if (!chosen[e]) max_rest = std::max(max_rest, r[e]);
        if (min_sel < max_rest - 1e-3) bad = what + ": not the top-k of the reference recurrence";
        for (int32_t j = 0; j < k; ++j)
          if (std::abs(p_integ.weight[t * k + j] -
                       std::exp(r[p_integ.expert[t * k + j]] - r[p_integ.expert[t * k]]) / norm) >
              1e-4)
            bad = what + ": weight differs from the reference recurrence's softmax";
        // Oracle: z of the next token of the sequence; the group's last token keeps its own.
        const int64_t g = first + t;
        const int64_t src = (g + 1 < G && all.position[g + 1] != 0) ? g + 1 : g;
        std::vector<int32_t> idx(E);
        std::iota(idx.begin(), idx.end(), 0);
        const float* z = all.logits.data() + src * E;
        std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
        for (int32_t j = 0; j < k; ++j)
          if (p_ahead.expert[t * k + j] != idx[j])
            bad = what + ": lookahead is not the top-k of z_{t+1}";
      }
      EXPECT_EQ(bad, "");
    }
    integ->end_step(world);
    ahead->end_step(world);
  }
  EXPECT_GT(crossings, 0) << "sequences must cross EP-rank boundaries";
}
