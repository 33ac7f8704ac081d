// Trace replay: a trace with sequences of uneven lengths, split over 4 EP ranks by sequence, gives
// bit-identical loads, figures and matrices on any process count (compared with one process
// hosting all 4 ranks); the split follows sequence starts; the `recorded` router reproduces the
// recorded choices exactly; routers refuse what the trace cannot give them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "harness/config/run_config.hpp"
#include "harness/core/comm.hpp"
#include "harness/core/error.hpp"
#include "harness/driver/driver.hpp"
#include "harness/routing/router.hpp"
#include "workloads/trace_file.hpp"
#include "workloads/workload.hpp"

using namespace moe;

namespace {

constexpr int32_t kE = 16, kL = 2, kSteps = 2, kK = 2;
constexpr int64_t kTokens = 300;  // per step

// Sequence lengths 1..23 in a fixed pattern; returns the sequence id of each token of a step.
std::vector<int64_t> step_sequences(int32_t step) {
  std::vector<int64_t> seq;
  int64_t id = step * 1000;
  for (int64_t i = 0; static_cast<int64_t>(seq.size()) < kTokens; ++i, ++id)
    for (int64_t j = 0; j < (i * 7 + step) % 23 + 1 && static_cast<int64_t>(seq.size()) < kTokens; ++j) seq.push_back(id);
  return seq;
}

// Writes the logit trace and an assignment trace (top-2 of the same logits) on rank 0.
void write_traces(const std::string& logits_path, const std::string& assign_path, const Comm& world) {
  if (world.root()) {
    WorkloadSetup ws{kE, kL, kK, 1, kTokens, 64, 7};
    auto zipf = make_workload("zipf", ws, {});
    TraceWriterOptions lo;
    lo.num_experts = kE;
    lo.num_layers = kL;
    lo.top_k = kK;
    lo.has_sequences = true;
    lo.force = true;
    lo.fp16 = false;
    TraceWriterOptions ao = lo;
    ao.kind = "assignments";
    ao.weights_are = "probabilities";
    TraceWriter lw(logits_path, lo), aw(assign_path, ao);
    TokenBatch b;
    for (int32_t s = 0; s < kSteps; ++s) {
      const auto seq = step_sequences(s);
      std::vector<int32_t> pos(kTokens);
      for (int64_t t = 0; t < kTokens; ++t) pos[t] = (t > 0 && seq[t] == seq[t - 1]) ? pos[t - 1] + 1 : 0;
      const int64_t first = lw.append_tokens(s, kTokens, seq, pos);
      aw.append_tokens(s, kTokens, seq, pos);
      for (int32_t l = 0; l < kL; ++l) {
        zipf->generate(s, l, 0, kTokens, b);
        lw.write_logits(l, first, kTokens, b.logits.data());
        std::vector<int32_t> ids;
        std::vector<float> w;
        for (int64_t t = 0; t < kTokens; ++t) {
          const float* z = b.logits.data() + t * kE;
          int32_t a = 0, c = -1;
          for (int32_t e = 1; e < kE; ++e)
            if (z[e] > z[a]) a = e;
          for (int32_t e = 0; e < kE; ++e)
            if (e != a && (c < 0 || z[e] > z[c])) c = e;
          double total = 0;
          for (int32_t e = 0; e < kE; ++e) total += std::exp(static_cast<double>(z[e]));
          ids.insert(ids.end(), {a, c});
          w.insert(w.end(), {static_cast<float>(std::exp(z[a]) / total), static_cast<float>(std::exp(z[c]) / total)});
        }
        aw.write_assignments(l, first, kTokens, ids.data(), w.data());
      }
    }
    lw.finish();
    aw.finish();
  }
  world.barrier();
}

RunConfig trace_config(const std::string& trace, const std::vector<std::string>& routers, int world_size) {
  RunConfig c;
  c.workload = "trace";
  c.trace_file = trace;
  c.routers = routers;
  c.ep_size = 4;
  c.nodes = 2;
  c.hidden = 32;
  c.steps = 3;  // wraps around the trace's 2 steps
  c.explicit_options = {"steps"};  // as if given: the other shape options come from the trace
  c.capacity_factor = 0;  // unlimited: loads are the routers' own
  c.progress = "off";
  const auto problems = resolve_and_validate(c, world_size);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
  return c;
}

bool same_double(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

void expect_identical(const RunOutput& dist, const RunOutput& alone) {
  ASSERT_EQ(dist.routers, alone.routers);
  for (size_t ri = 0; ri < dist.routers.size(); ++ri) {
    const std::string& what = dist.routers[ri];
    ASSERT_EQ(dist.records[ri].size(), alone.records[ri].size()) << what;
    for (size_t i = 0; i < dist.records[ri].size(); ++i) {
      const auto& g = dist.records[ri][i];
      const auto& w = alone.records[ri][i];
      ASSERT_EQ(g.expert_demand, w.expert_demand) << what << " record " << i;
      ASSERT_EQ(g.expert_load, w.expert_load) << what << " record " << i;
      ASSERT_EQ(dist.matrices[ri][i].tokens, alone.matrices[ri][i].tokens) << what << " record " << i;
      for (size_t f = 0; f < g.figures.size(); ++f)
        ASSERT_TRUE(same_double(g.figures[f], w.figures[f])) << what << " figure " << f << ": " << g.figures[f] << " vs " << w.figures[f];
    }
  }
}

std::string tmp(const std::string& name, const Comm& world) {
  std::filesystem::create_directories(MOEBENCH_TEST_TMP);
  return std::string(MOEBENCH_TEST_TMP) + "/" + name + "_np" + std::to_string(world.size()) + ".h5";
}

}  // namespace

TEST(TraceReplay, LogitTraceIdenticalOnAnySplitForEveryRouter) {
  const Comm world = Comm::world();
  const std::string lp = tmp("trace_logits", world), ap = tmp("trace_assign", world);
  write_traces(lp, ap, world);
  std::vector<std::string> routers;
  for (const auto& r : RouterRegistry::instance().names())
    if (r != "recorded") routers.push_back(r);
  const auto dist = run_pipeline(trace_config(lp, routers, world.size()), world, RunOptions{true, false});
  const auto alone = run_pipeline(trace_config(lp, routers, 1), Comm::self(), RunOptions{true, false});
  expect_identical(dist, alone);
  // The split follows sequence starts: rank r starts at the first sequence start >= r * N / R.
  size_t ri = 0;  // a fixed-k router
  while (ri < dist.routers.size() && dist.routers[ri] != "softmax_topk") ++ri;
  ASSERT_LT(ri, dist.routers.size());
  ASSERT_EQ(dist.matrices[ri].size(), static_cast<size_t>(3 * kL));
  for (int32_t s = 0; s < 3; ++s) {
    const auto seq = step_sequences(s % kSteps);
    std::vector<int64_t> first{0};
    for (int32_t r = 1; r < 4; ++r) {
      int64_t t = (r * kTokens + 3) / 4;
      while (t < kTokens && t > 0 && seq[t] == seq[t - 1]) ++t;
      first.push_back(t);
    }
    first.push_back(kTokens);
    const TrafficMatrix& m = dist.matrices[ri][static_cast<size_t>(s) * kL];
    for (int32_t r = 0; r < 4; ++r) {
      int64_t sent = 0;
      for (int32_t d = 0; d < 4; ++d) sent += m.tok(r, d);
      EXPECT_EQ(sent, kK * (first[r + 1] - first[r])) << "step " << s << " rank " << r;
    }
  }
}

TEST(TraceReplay, RecordedReplaysTheAssignmentsExactly) {
  const Comm world = Comm::world();
  const std::string lp = tmp("trace_logits_b", world), ap = tmp("trace_assign_b", world);
  write_traces(lp, ap, world);
  const auto dist = run_pipeline(trace_config(ap, {"recorded", "softmax_topk"}, world.size()), world, RunOptions{true, false});
  const auto alone = run_pipeline(trace_config(ap, {"recorded", "softmax_topk"}, 1), Comm::self(), RunOptions{true, false});
  expect_identical(dist, alone);
  // Independent count of the recorded ids, per step and layer.
  TraceReader reader(ap);
  for (int32_t s = 0; s < 3; ++s)
    for (int32_t l = 0; l < kL; ++l) {
      std::vector<int32_t> ids(kTokens * kK);
      std::vector<float> w(kTokens * kK);
      reader.read_assignments(l, (s % kSteps) * kTokens, kTokens, ids.data(), w.data());
      std::vector<int64_t> want(kE, 0);
      for (int32_t e : ids) ++want[e];
      const size_t i = static_cast<size_t>(s) * kL + l;
      EXPECT_EQ(dist.records[0][i].expert_demand, want) << "recorded, step " << s << " layer " << l;
      // top-2 of the reconstructed logits are the recorded experts
      EXPECT_EQ(dist.records[1][i].expert_demand, want) << "softmax_topk, step " << s << " layer " << l;
    }
}

TEST(TraceReplay, RoutersRefuseWhatTheTraceLacks) {
  const Comm world = Comm::world();
  const std::string lp = tmp("trace_logits_c", world), ap = tmp("trace_assign_c", world);
  write_traces(lp, ap, world);
  auto refusal = [&](const std::string& trace, const std::string& router, int32_t k) -> std::string {
    RunConfig c = trace_config(trace, {router}, world.size());
    c.top_k = k;
    try {
      run_pipeline(c, world, RunOptions{false, false});
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(refusal(ap, "sinkhorn", 2).find("full router logits"), std::string::npos);
  EXPECT_NE(refusal(ap, "softmax_topk", 3).find("recorded 2 experts per token"), std::string::npos);
  EXPECT_NE(refusal(lp, "recorded", 2).find("recorded expert choices"), std::string::npos);
  EXPECT_EQ(refusal(ap, "sigmoid_topk", 2), "");
}
