#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "analysis/results_reader.hpp"
#include "harness/config/run_config.hpp"
#include "harness/core/error.hpp"
#include "harness/driver/driver.hpp"
#include "harness/report/h5.hpp"
#include "harness/report/results_writer.hpp"

using namespace moe;

namespace {
std::string tmp(const std::string& name) {
  const auto dir = std::filesystem::path(MOEBENCH_TEST_TMP);
  std::filesystem::create_directories(dir);
  const auto p = dir / name;
  std::filesystem::remove(p);
  return p.string();
}
RunConfig small_config(const std::string& out) {
  RunConfig c;
  c.experts = 16;
  c.top_k = 2;
  c.layers = 2;
  c.steps = 3;
  c.tokens_per_rank = 256;
  c.ep_size = 4;
  c.nodes = 2;
  c.hidden = 64;
  c.progress = "off";
  c.out = out;
  EXPECT_TRUE(resolve_and_validate(c, 1).empty());
  return c;
}
}  // namespace

TEST(ResultsFile, RoundTripMatchesInMemoryRecords) {
  const auto path = tmp("roundtrip.h5");
  const auto cfg = small_config(path);
  const auto out = run_pipeline(cfg, Comm::world(), RunOptions{true, false});
  const auto file = read_results(path);
  EXPECT_EQ(file.status, "complete");
  EXPECT_EQ(file.steps_done, 3);
  EXPECT_EQ(file.routers, cfg.routers);
  EXPECT_NE(file.config_json.find("\"experts\":16"), std::string::npos);
  for (size_t ri = 0; ri < cfg.routers.size(); ++ri) {
    const auto& recs = file.records.at(cfg.routers[ri]);
    ASSERT_EQ(recs.size(), out.records[ri].size());
    for (size_t i = 0; i < recs.size(); ++i) {
      EXPECT_EQ(recs[i].kept_assignments, out.records[ri][i].kept_assignments);
      EXPECT_EQ(recs[i].dispatch_bytes_inter, out.records[ri][i].dispatch_bytes_inter);
      EXPECT_DOUBLE_EQ(recs[i].model_dispatch_s, out.records[ri][i].model_dispatch_s);
    }
  }
  // The vectors and matrices, read raw.
  h5::Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  ASSERT_GE(f.get(), 0);
  std::vector<hsize_t> dims;
  const auto load = h5::read_int64(f, "/runs/softmax_topk/expert_load", &dims);
  EXPECT_EQ(dims, (std::vector<hsize_t>{3, 2, 16}));
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(std::vector<int64_t>(load.begin() + static_cast<long>(i * 16), load.begin() + static_cast<long>((i + 1) * 16)),
              out.records[0][i].expert_load);
  const auto disp = h5::read_int64(f, "/runs/softmax_topk/dispatch_tokens", &dims);
  EXPECT_EQ(dims, (std::vector<hsize_t>{3, 2, 4, 4}));
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(std::vector<int64_t>(disp.begin() + static_cast<long>(i * 16), disp.begin() + static_cast<long>((i + 1) * 16)),
              out.matrices[0][i].tokens);
  for (const char* name : {"expert_demand", "rank_recv_tokens", "bytes_local", "bytes_intra", "bytes_inter", "dropped",
                           "active_experts_hist", "model_dispatch_s", "model_combine_s", "router_s", "capacity_factor_required"})
    EXPECT_TRUE(h5::has_link(f, std::string("/runs/sigmoid_topk/") + name)) << name;
  EXPECT_EQ(h5::read_attr_string(f, "format"), "moebench-results");
}

TEST(ResultsFile, RefusesToOverwriteWithoutForce) {
  const auto path = tmp("exists.h5");
  std::ofstream(path) << "precious";
  auto cfg = small_config(path);
  EXPECT_THROW(run_pipeline(cfg, Comm::world(), RunOptions{false, false}), InputError);
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");  // untouched
  cfg.force = true;
  EXPECT_NO_THROW(run_pipeline(cfg, Comm::world(), RunOptions{false, false}));
  EXPECT_EQ(read_results(path).status, "complete");
}

TEST(ResultsFile, PartialFileSaysSoAndReportsCompletedSteps) {
  const auto path = tmp("partial.h5");
  const auto cfg = small_config(path);
  const auto out = run_pipeline(cfg, Comm::world(), RunOptions{true, false});
  {
    ResultsFileInfo info;
    info.path = tmp("partial.h5");
    info.routers = {"softmax_topk"};
    info.steps = 3;
    info.layers = 2;
    info.experts = 16;
    info.topology = cfg.topology();
    info.placement = out.placement;
    info.first_rank = 0;
    info.num_ranks = 4;
    ResultsWriter w(info, Comm::world());
    std::vector<std::vector<StepLayerMetrics>> recs{{out.records[0][0], out.records[0][1]}};
    std::vector<std::vector<TrafficMatrix>> mats{{out.matrices[0][0], out.matrices[0][1]}};
    w.write_step(0, recs, mats);
    // no finish(): the run "died" after one step
  }
  {
    // A run killed between extending a dataset and bumping steps_done leaves an extra row that
    // may hold anything: readers take only the first steps_done rows.
    h5::Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
    ASSERT_GE(f.get(), 0);
    h5::Handle d(H5Dopen2(f, "/runs/softmax_topk/tokens", H5P_DEFAULT), H5Dclose);
    const hsize_t dims[2] = {2, 2};
    ASSERT_GE(H5Dset_extent(d, dims), 0);
  }
  const auto file = read_results(path);
  EXPECT_EQ(file.status, "partial");
  EXPECT_EQ(file.steps_done, 1);
  EXPECT_EQ(file.records.at("softmax_topk")[0].tokens, out.records[0][0].tokens);
  EXPECT_EQ(file.records.at("softmax_topk").size(), 2u);
  const auto text = format_report(file);
  EXPECT_NE(text.find("partial"), std::string::npos) << text;
  EXPECT_NE(text.find("1 of 3 steps"), std::string::npos) << text;
}

TEST(ResultsFile, ClearErrorsForForeignFiles) {
  const auto text = tmp("not_hdf5.h5");
  std::ofstream(text) << "hello";
  try {
    read_results(text);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("not an HDF5 file"), std::string::npos);
  }
  const auto foreign = tmp("foreign.h5");
  {
    h5::Handle f(H5Fcreate(foreign.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    h5::write_attr(f, "format", "something-else");
  }
  try {
    read_results(foreign);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not a moebench results file"), std::string::npos) << e.what();
  }
  const auto future = tmp("future.h5");
  {
    h5::Handle f(H5Fcreate(future.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    h5::write_attr(f, "format", "moebench-results");
    h5::write_attr(f, "format_version", int64_t{99});
  }
  try {
    read_results(future);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("format_version 99"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_results(tmp("missing.h5")), InputError);
}
