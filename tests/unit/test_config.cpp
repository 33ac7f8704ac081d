#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"

using namespace moe;

namespace {
RunConfig parse(std::vector<std::string> args) {
  args.insert(args.begin(), "run");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return parse_run_config(static_cast<int>(argv.size()), argv.data());
}
bool mentions(const std::vector<std::string>& problems, const std::string& text) {
  for (const auto& p : problems)
    if (p.find(text) != std::string::npos) return true;
  return false;
}
std::string all(const std::vector<std::string>& problems) {
  std::string s;
  for (const auto& p : problems) s += p + "\n";
  return s;
}
}  // namespace

TEST(Config, DefaultsAreValid) {
  auto c = parse({});
  EXPECT_TRUE(resolve_and_validate(c, 4).empty());
  EXPECT_EQ(c.ep_size, 4);
  EXPECT_EQ(c.nodes, 1);
  EXPECT_EQ(c.ranks_per_node, 4);
}

TEST(Config, ReportsEveryProblemAtOnce) {
  auto c = parse({"--experts", "8", "--top-k", "9", "--tokens-per-rank", "0", "--capacity-factor", "-1", "--routers",
                  "softmax_topk,bogus", "--nodes", "3", "--ranks-per-node", "2", "--dtype", "int4", "--drop-policy", "random"});
  const auto p = resolve_and_validate(c, 4);
  EXPECT_TRUE(mentions(p, "--top-k")) << all(p);
  EXPECT_TRUE(mentions(p, "--tokens-per-rank")) << all(p);
  EXPECT_TRUE(mentions(p, "--capacity-factor")) << all(p);
  EXPECT_TRUE(mentions(p, "'bogus'")) << all(p);
  EXPECT_TRUE(mentions(p, "known: ")) << all(p);
  EXPECT_TRUE(mentions(p, "softmax_topk")) << all(p);
  EXPECT_TRUE(mentions(p, "3 x 2 = 6 EP ranks, not a multiple of the MPI world size 4")) << all(p);
  EXPECT_TRUE(mentions(p, "--dtype")) << all(p);
  EXPECT_TRUE(mentions(p, "--drop-policy")) << all(p);
  EXPECT_GE(p.size(), 7u) << all(p);
}

TEST(Config, UnknownRouterArgAndArgForUnlistedRouter) {
  auto c = parse({"--router-arg", "softmax_topk.renormalise=false"});
  auto p = resolve_and_validate(c, 2);
  ASSERT_EQ(p.size(), 1u) << all(p);
  EXPECT_TRUE(mentions(p, "softmax_topk.renormalise")) << all(p);
  EXPECT_TRUE(mentions(p, "renormalize")) << all(p);  // lists the known keys
  auto c2 = parse({"--routers", "softmax_topk", "--router-arg", "sigmoid_topk.renormalize=false"});
  EXPECT_TRUE(mentions(resolve_and_validate(c2, 2), "not in --routers"));
  EXPECT_THROW(parse({"--router-arg", "softmax_topk-renormalize"}), InputError);
}

TEST(Config, EpShapeDerivationAndVirtualRanks) {
  auto c = parse({"--nodes", "2"});
  EXPECT_TRUE(resolve_and_validate(c, 4).empty());
  EXPECT_EQ(c.ranks_per_node, 2);
  auto v = parse({"--ep-size", "1024", "--ranks-per-node", "8"});
  EXPECT_TRUE(resolve_and_validate(v, 2).empty());
  EXPECT_EQ(v.nodes, 128);
  auto shape = parse({"--ep-size", "8", "--nodes", "3", "--ranks-per-node", "2"});
  EXPECT_TRUE(mentions(resolve_and_validate(shape, 4), "3 x 2 = 6 != EP size 8"));
  auto bad = parse({"--ep-size", "6"});
  EXPECT_TRUE(mentions(resolve_and_validate(bad, 4), "not a multiple of the MPI world size"));
}

TEST(Config, IniFileWithCommandLineOverride) {
  const auto dir = std::filesystem::path(MOEBENCH_TEST_TMP);
  std::filesystem::create_directories(dir);
  const auto path = (dir / "run.ini").string();
  std::ofstream(path) << "# a run\nexperts = 32\ntop-k = 4\nrouters = softmax_topk\nrouter-arg = softmax_topk.renormalize=false\n";
  auto c = parse({"--config", path, "--top-k", "2"});
  EXPECT_EQ(c.experts, 32);
  EXPECT_EQ(c.top_k, 2);  // command line wins
  EXPECT_EQ(c.routers, std::vector<std::string>{"softmax_topk"});
  EXPECT_EQ(c.router_args["softmax_topk"]["renormalize"], "false");
  EXPECT_TRUE(resolve_and_validate(c, 1).empty());
  std::ofstream(path) << "experts = many\n";
  try {
    parse({"--config", path});
    FAIL() << "bad INI value accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("experts"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse({"--config", (dir / "missing.ini").string()}), InputError);
  EXPECT_THROW(parse({"--no-such-option", "1"}), InputError);
}

TEST(Config, JsonNamesEveryField) {
  auto c = parse({"--router-arg", "softmax_topk.renormalize=false"});
  ASSERT_TRUE(resolve_and_validate(c, 2).empty());
  const auto j = c.to_json();
  for (const char* key : {"\"workload\":\"zipf\"", "\"experts\":64", "\"top_k\":6", "\"ep_size\":2", "\"renormalize\":\"false\"",
                          "\"capacity_factor\":1.25", "\"dedup\":\"token_expert\""})
    EXPECT_NE(j.find(key), std::string::npos) << key << " in " << j;
}

TEST(Config, TopologyFileReplacesLinkFlags) {
  const auto dir = std::filesystem::path(MOEBENCH_TEST_TMP);
  std::filesystem::create_directories(dir);
  const auto path = (dir / "topo.ini").string();
  std::ofstream(path) << "name = test\nranks_per_node = 4\n[intra]\nbandwidth_GBps = 100\nlatency_us = 2\n[inter]\nbandwidth_Gbps = 200\nlatency_us = 10\n";
  auto c = parse({"--topology", path, "--ep-size", "16"});
  ASSERT_TRUE(resolve_and_validate(c, 2).empty());
  EXPECT_EQ(c.ranks_per_node, 4);
  EXPECT_EQ(c.nodes, 4);
  const auto t = c.topology();
  EXPECT_DOUBLE_EQ(t.intra.bandwidth_Bps, 100e9);
  EXPECT_DOUBLE_EQ(t.inter.bandwidth_Bps, 25e9);
  EXPECT_DOUBLE_EQ(t.inter.latency_s, 10e-6);
  std::ofstream(path) << "[intra]\nbandwith_GBps = 100\n";
  auto bad = parse({"--topology", path});
  const auto p = resolve_and_validate(bad, 2);
  EXPECT_TRUE(mentions(p, path)) << all(p);
  EXPECT_TRUE(mentions(p, "bandwith_GBps")) << all(p);
  auto shipped = parse({"--topology", std::string(MOEBENCH_SOURCE_DIR) + "/cluster/topologies/h100-default.ini", "--ep-size", "16"});
  EXPECT_TRUE(resolve_and_validate(shipped, 1).empty());
  EXPECT_EQ(shipped.ranks_per_node, 8);
}

TEST(Config, RouterInstancesWithLabels) {
  auto c = parse({"--routers", "softmax_topk,softmax_topk@full", "--router-arg", "softmax_topk@full.renormalize=false"});
  EXPECT_TRUE(resolve_and_validate(c, 1).empty());
  auto bad = parse({"--routers", "softmax_topk@", "--router-arg", "softmax_topk@.renormalize=false"});
  EXPECT_TRUE(mentions(resolve_and_validate(bad, 1), "label after '@'"));
  auto unknown = parse({"--routers", "nope@x"});
  EXPECT_TRUE(mentions(resolve_and_validate(unknown, 1), "'nope'"));
  auto arg = parse({"--routers", "softmax_topk,softmax_topk@full", "--router-arg", "softmax_topk@full.typo=1"});
  EXPECT_TRUE(mentions(resolve_and_validate(arg, 1), "softmax_topk@full.typo"));
}
