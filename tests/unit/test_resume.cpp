// Issue 14: checkpointed state, configuration comparison for --resume, and the preflight estimate.
#include <gtest/gtest.h>

#include "harness/config/preflight.hpp"
#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/core/state_io.hpp"
#include "harness/driver/resume.hpp"
#include "harness/routing/router.hpp"

using namespace moe;

namespace {
RunConfig parse(std::vector<std::string> args) {
  args.insert(args.begin(), "run");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  RunConfig c = parse_run_config(static_cast<int>(argv.size()), argv.data());
  const auto problems = resolve_and_validate(c, 1);
  EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems[0]);
  return c;
}
}  // namespace

TEST(Resume, StateRoundTripAndTruncation) {
  std::vector<char> blob;
  StateWriter w(blob);
  w.put(int32_t{7});
  w.put_vec(std::vector<double>{1.5, -2.0});
  w.put_bools({true, false, true});
  StateReader r(blob.data(), blob.size(), "test");
  EXPECT_EQ(r.get<int32_t>(), 7);
  std::vector<double> v;
  r.get_vec(v, 2);
  EXPECT_EQ(v, (std::vector<double>{1.5, -2.0}));
  std::vector<bool> b;
  r.get_bools(b);
  EXPECT_EQ(b, (std::vector<bool>{true, false, true}));
  r.expect_done();
  StateReader cut(blob.data(), blob.size() - 1, "test");
  (void)cut.get<int32_t>();
  std::vector<double> v2;
  cut.get_vec(v2);
  std::vector<bool> b2;
  EXPECT_THROW(cut.get_bools(b2), InputError);
  StateReader shape(blob.data(), blob.size(), "test");
  (void)shape.get<int32_t>();
  EXPECT_THROW(shape.get_vec(v2, 3), InputError);  // a vector of the wrong size
}

TEST(Resume, ConfigDifferencesNameTheOptions) {
  const RunConfig a = parse({"--tokens-per-rank", "300", "--steps", "4", "--router-arg",
                             "softmax_topk.renormalize=false"});
  RunConfig b = parse({"--tokens-per-rank", "300", "--steps", "9", "--router-arg",
                       "softmax_topk.renormalize=false"});
  EXPECT_TRUE(config_differences(a.to_json(), b.to_json()).empty()) << "--steps may change";
  b = parse({"--tokens-per-rank", "400", "--steps", "4", "--seed", "3"});
  const auto d = config_differences(a.to_json(), b.to_json());
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0], "--router-arg (file {\"softmax_topk\":{\"renormalize\":\"false\"}}, now {})");
  EXPECT_EQ(d[1], "--seed (file 1, now 3)");
  EXPECT_EQ(d[2], "--tokens-per-rank (file 300, now 400)");
}

TEST(Resume, StatefulRoutersRestoreTheirState) {
  // A router's saved state, loaded into a fresh instance, saves back identically; a blob of another
  // shape is refused.
  Topology t;
  t.nodes = 1;
  t.ranks_per_node = 2;
  const RouterSetup setup{16, 2, 3, t};
  for (const char* name : {"deepseek_v3", "remoe", "beta", "softmax_topk"}) {
    auto r = make_router(name, setup, {});
    std::vector<char> blob;
    StateWriter w(blob);
    r->save_state(w);
    auto fresh = make_router(name, setup, {});
    StateReader rd(blob.data(), blob.size(), name);
    fresh->load_state(rd);
    rd.expect_done();
    std::vector<char> again;
    StateWriter w2(again);
    fresh->save_state(w2);
    EXPECT_EQ(blob, again) << name;
  }
  auto ds = make_router("deepseek_v3", setup, {});
  std::vector<char> blob;
  StateWriter w(blob);
  ds->save_state(w);
  auto other = make_router("deepseek_v3", RouterSetup{32, 2, 3, t}, {});
  StateReader rd(blob.data(), blob.size(), "deepseek_v3");
  EXPECT_THROW(other->load_state(rd), InputError);
}

TEST(Preflight, ChunkableListMatchesTheRouters) {
  Topology t;
  t.nodes = 1;
  t.ranks_per_node = 2;
  for (const auto& [name, entry] : RouterRegistry::instance().entries()) {
    auto r = make_router(name, RouterSetup{16, 2, 2, t}, {});
    EXPECT_EQ(r->chunkable(), router_chunkable_by_name(name))
        << name << ": update router_chunkable_by_name (harness/config/preflight.cpp)";
  }
}

TEST(Preflight, EstimatesAndLimits) {
  EXPECT_EQ(parse_memory_size("--max-memory", "64G"), 64.0 * 1024 * 1024 * 1024);
  EXPECT_EQ(parse_memory_size("--max-memory", "1000"), 1000.0);
  EXPECT_EQ(parse_memory_size("--max-memory", "0"), 0.0);
  EXPECT_THROW(parse_memory_size("--max-memory", "12X"), InputError);
  EXPECT_THROW(parse_memory_size("--max-memory", "-1G"), InputError);
  const RunConfig small = parse({"--tokens-per-rank", "1000"});
  PreflightLimits lim;
  lim.memory_bytes = 1024.0 * 1024 * 1024;
  lim.memory_source = "test";
  EXPECT_EQ(preflight_check(small, 1, lim), "");
  // Logits grow with the tokens: 1e12 tokens x 64 experts cannot fit.
  const RunConfig huge = parse({"--tokens-per-rank", "1000000000000"});
  const std::string p = preflight_check(huge, 1, lim);
  EXPECT_NE(p.find("preflight: this run needs about"), std::string::npos) << p;
  EXPECT_NE(p.find("fewer --tokens-per-rank, more processes"), std::string::npos) << p;
  // More processes, fewer tokens each: the estimate per process falls.
  const RunConfig ep8 = parse({"--tokens-per-rank", "100000", "--ep-size", "8"});
  EXPECT_LT(estimate_memory(ep8, 8).total, estimate_memory(ep8, 1).total);
  // Chunked routers bound the batch: softmax_topk alone needs far less than with beta.
  const RunConfig chunk =
      parse({"--tokens-per-rank", "100000", "--ep-size", "64", "--routers", "softmax_topk"});
  const RunConfig whole =
      parse({"--tokens-per-rank", "100000", "--ep-size", "64", "--routers", "softmax_topk,beta"});
  EXPECT_TRUE(estimate_memory(chunk, 1).chunked);
  EXPECT_FALSE(estimate_memory(whole, 1).chunked);
  EXPECT_LT(estimate_memory(chunk, 1).logits * 10, estimate_memory(whole, 1).logits);
  // Disk: a results file larger than the free space.
  RunConfig out = parse({"--steps", "1000", "--out", "r.h5"});
  PreflightLimits disk;
  disk.disk_free_bytes = 1024 * 1024;
  const std::string d = preflight_check(out, 1, disk);
  EXPECT_NE(d.find("--out r.h5: the results file needs about"), std::string::npos) << d;
}
