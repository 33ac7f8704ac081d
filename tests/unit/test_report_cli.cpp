#include <gtest/gtest.h>

#include "analysis/report_cli.hpp"
#include "harness/core/error.hpp"

namespace moe {
namespace {

TEST(ReportCli, FlattenJsonNestsObjectsAndKeepsArrays) {
  const auto flat = flatten_json(
      R"({"workload":"zipf","workload_args":{"zipf.s":"0.5"},"router_args":{},"routers":["a","b@x"],"capacity_factor":1.25,"x":{"y":{"z":true}},"esc":"q\"uote"})",
      "cfg");
  EXPECT_EQ(flat.at("workload"), "zipf");
  EXPECT_EQ(flat.at("workload_args.zipf.s"), "0.5");
  EXPECT_EQ(flat.at("routers"), R"(["a","b@x"])");
  EXPECT_EQ(flat.at("capacity_factor"), "1.25");
  EXPECT_EQ(flat.at("x.y.z"), "true");
  EXPECT_EQ(flat.at("esc"), "q\"uote");
  EXPECT_EQ(flat.count("router_args"), 0u);  // an empty object has no leaves
}

TEST(ReportCli, FlattenJsonRejectsMalformedInputNamingIt) {
  for (const char* bad :
       {"", "[1]", R"({"a":1)", R"({"a" 1})", R"({"a":"x)", R"({"a":[1,2})", R"({"a":1} x)"}) {
    try {
      flatten_json(bad, "f.h5: root attribute 'config'");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("f.h5: root attribute 'config': malformed JSON"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(ReportCli, ConfigDimensions) {
  EXPECT_EQ(config_dimension("nodes"), "cluster");
  EXPECT_EQ(config_dimension("inter_bw_Gbps"), "cluster");
  EXPECT_EQ(config_dimension("placement"), "placement");
  EXPECT_EQ(config_dimension("seed"), "workload");
  EXPECT_EQ(config_dimension("workload_args.zipf.s"), "workload");
  EXPECT_EQ(config_dimension("router_args.beta.lookahead"), "routers");
  EXPECT_EQ(config_dimension("capacity_factor"), "capacity");
  EXPECT_EQ(config_dimension("top_k"), "shape");
  EXPECT_EQ(config_dimension("something_new"), "something_new");
}

TEST(ReportCli, ConfigDifferencesListOnlyDifferingKeysWithEveryValue) {
  const std::vector<std::map<std::string, std::string>> cfgs = {
      {{"placement", "contiguous"}, {"seed", "1"}, {"nodes", "2"}},
      {{"placement", "round_robin"}, {"seed", "1"}, {"nodes", "2"}},
      {{"placement", "contiguous"}, {"seed", "1"}, {"nodes", "2"}, {"extra", "x"}},
  };
  const auto d = config_differences(cfgs);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].key, "extra");
  EXPECT_EQ(d[0].values, (std::vector<std::string>{"(absent)", "(absent)", "x"}));
  EXPECT_EQ(d[1].key, "placement");
  EXPECT_EQ(d[1].dimension, "placement");
  EXPECT_EQ(d[1].values, (std::vector<std::string>{"contiguous", "round_robin", "contiguous"}));
  EXPECT_TRUE(config_differences({cfgs[0], cfgs[0]}).empty());
}

}  // namespace
}  // namespace moe
