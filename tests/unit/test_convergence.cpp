// Stateful routers' convergence, --warmup-steps and the compute-mismatch warning of `report`.
#include <gtest/gtest.h>

#include "analysis/convergence.hpp"
#include "harness/core/error.hpp"

namespace moe {
namespace {

// A file of `steps` x 1 layer whose routers' figures follow the given per-step values.
ResultsFile file_with(const std::string& router, const std::string& figure,
                      const std::vector<double>& per_step, const std::string& router_args = "{}") {
  ResultsFile f;
  f.path = "t.h5";
  f.status = "complete";
  f.layers = 1;
  f.steps_done = static_cast<int64_t>(per_step.size());
  f.config_json = R"({"top_k":6,"router_args":)" + router_args + "}";
  f.routers = {router};
  f.figures[router][figure] = per_step;
  for (size_t s = 0; s < per_step.size(); ++s) {
    StepLayerMetrics m;
    m.tokens = 100;
    m.demand_assignments = 600;
    f.records[router].push_back(m);
  }
  return f;
}

TEST(Convergence, RemoeSettlesWhenWithinFivePercentOrAcrossTheTarget) {
  // Cold start 17.3 experts per token, falling; crosses 6 at step 4.
  auto f = file_with("remoe", "mean_active_experts", {17.3, 14.0, 10.5, 7.1, 5.5, 6.4, 5.6, 6.3});
  auto c = router_convergence(f);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].settled_step, 4);
  EXPECT_NE(c[0].text.find("converged at step 4"), std::string::npos) << c[0].text;
  EXPECT_NE(c[0].text.find("--warmup-steps 4"), std::string::npos) << c[0].text;
  // Within 5% without crossing: 6.25 is 4.2% above 6.
  f = file_with("remoe", "mean_active_experts", {9.0, 7.0, 6.25});
  EXPECT_EQ(router_convergence(f)[0].settled_step, 2);
  // Still approaching at the last step: not converged, and claims would mark it.
  f = file_with("remoe", "mean_active_experts", {17.3, 15.0, 13.0});
  c = router_convergence(f);
  EXPECT_EQ(c[0].settled_step, -1);
  EXPECT_NE(c[0].text.find("NOT converged"), std::string::npos) << c[0].text;
  // Quantile mode has no state: not listed.
  f = file_with("remoe", "mean_active_experts", {6.0, 6.0}, R"({"remoe":{"mode":"quantile"}})");
  EXPECT_TRUE(router_convergence(f).empty());
}

TEST(Convergence, DeepseekMaxVioTrend) {
  auto f = file_with("deepseek_v3", "max_vio", {0.9, 0.7, 0.5, 0.3, 0.2, 0.12, 0.08, 0.05});
  auto c = router_convergence(f);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].settled_step, -1);  // the last quarter is well below the one before: still falling
  EXPECT_NE(c[0].text.find("still falling"), std::string::npos) << c[0].text;
  f = file_with("deepseek_v3", "max_vio", {0.9, 0.4, 0.101, 0.1, 0.1, 0.1, 0.1, 0.1});
  EXPECT_EQ(router_convergence(f)[0].settled_step, 2);
}

TEST(Convergence, WarmupStepsAreLeftOutOfEveryFigure) {
  auto f = file_with("remoe", "mean_active_experts", {17.3, 14.0, 10.5, 7.1, 5.5, 6.4, 5.6, 6.3});
  f.records["remoe"][0].tokens = 12345;
  drop_warmup_steps(f, 3);
  EXPECT_EQ(f.steps_done, 5);
  EXPECT_EQ(f.warmup_steps_excluded, 3);
  ASSERT_EQ(f.records["remoe"].size(), 5u);
  EXPECT_EQ(f.records["remoe"][0].tokens, 100);
  EXPECT_EQ(f.figures["remoe"]["mean_active_experts"].front(), 7.1);
  const auto notes = router_notes(f);
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes[0].find("steps 0-2 excluded as warm-up"), std::string::npos) << notes[0];
  EXPECT_THROW(drop_warmup_steps(f, 5), InputError);
}

TEST(Convergence, ComputeMismatchWarnsUnlessAskedFor) {
  auto f = file_with("softmax_topk", "unused", {0, 0});
  f.routers.push_back("expert_choice");
  f.records["expert_choice"] = f.records["softmax_topk"];
  EXPECT_EQ(compute_mismatch_warning(f), "");                             // 6 and 6
  for (auto& m : f.records["expert_choice"]) m.demand_assignments = 200;  // 2 experts per token
  EXPECT_NE(compute_mismatch_warning(f).find("expert_choice 2.00"), std::string::npos)
      << compute_mismatch_warning(f);
  f.config_json = R"({"top_k":6,"router_args":{"expert_choice":{"c":"2"}}})";  // asked for
  EXPECT_EQ(compute_mismatch_warning(f), "");
}

}  // namespace
}  // namespace moe
