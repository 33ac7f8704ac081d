// Trace format: binary16 conversion, writer/reader round trips, reconstruction, and refusals.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "harness/core/error.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

std::string tmp_path(const std::string& name) {
  std::filesystem::create_directories(MOEBENCH_TEST_TMP);
  const std::string p = std::string(MOEBENCH_TEST_TMP) + "/" + name;
  std::filesystem::remove(p);
  return p;
}

TEST(Half, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    ASSERT_EQ(float_to_half(f), h) << "half 0x" << std::hex << h << " = " << f;
  }
}

TEST(Half, RoundsToNearestEven) {
  EXPECT_EQ(half_to_float(float_to_half(1.0f)), 1.0f);
  EXPECT_EQ(half_to_float(float_to_half(65504.f)), 65504.f);
  EXPECT_TRUE(std::isinf(half_to_float(float_to_half(65520.f))));  // halfway to 65536: up to inf
  EXPECT_EQ(half_to_float(float_to_half(65519.f)), 65504.f);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(half_to_float(float_to_half(1.f + std::ldexp(1.f, -11))), 1.0f);
  EXPECT_EQ(half_to_float(float_to_half(1.f + 3 * std::ldexp(1.f, -11))), 1.f + std::ldexp(1.f, -9));
  EXPECT_EQ(half_to_float(float_to_half(std::ldexp(1.f, -24))), std::ldexp(1.f, -24));  // smallest subnormal
  EXPECT_EQ(half_to_float(float_to_half(std::ldexp(1.f, -26))), 0.f);
  EXPECT_EQ(float_to_half(-0.f), 0x8000);
}

TEST(TraceFile, LogitsRoundTripFp16AndFp32WithRaggedSteps) {
  for (bool fp16 : {true, false}) {
    const std::string path = tmp_path(fp16 ? "logits16.h5" : "logits32.h5");
    const int32_t E = 5, L = 2;
    const std::vector<int64_t> step_tokens{3, 4};
    std::vector<std::vector<float>> want(L);
    {
      TraceWriterOptions o;
      o.num_experts = E;
      o.num_layers = L;
      o.top_k = 2;
      o.fp16 = fp16;
      o.has_sequences = true;
      o.has_token_id = true;
      o.layer_ids = {7, 9};
      o.model = "unit";
      TraceWriter w(path, o);
      int64_t seq = 100;
      for (int32_t s = 0; s < 2; ++s) {
        const int64_t n = step_tokens[s];
        std::vector<int64_t> sq(n), tok(n);
        std::vector<int32_t> pos(n);
        for (int64_t t = 0; t < n; ++t) sq[t] = seq + t / 2, pos[t] = static_cast<int32_t>(t % 2), tok[t] = 1000 + t;
        seq += n;
        const int64_t first = w.append_tokens(s, n, sq, pos, tok);
        for (int32_t l = 0; l < L; ++l) {
          std::vector<float> z(n * E);
          for (size_t i = 0; i < z.size(); ++i) z[i] = 0.37f * static_cast<float>(i) - 3.f * l + 0.001f * s;
          w.write_logits(l, first, n, z.data());
          want[l].insert(want[l].end(), z.begin(), z.end());
        }
      }
      w.finish();
    }
    ASSERT_FALSE(std::filesystem::exists(path + ".tmp"));
    TraceReader r(path);
    const TraceHeader& h = r.header();
    EXPECT_EQ(h.kind, "logits");
    EXPECT_EQ(h.num_experts, E);
    EXPECT_EQ(h.num_layers, L);
    EXPECT_EQ(h.num_steps, 2);
    EXPECT_EQ(h.num_tokens, 7);
    EXPECT_EQ(h.top_k, 2);
    EXPECT_EQ(h.logits_fp16, fp16);
    EXPECT_EQ(h.layer_ids, (std::vector<int64_t>{7, 9}));
    EXPECT_EQ(h.step_offsets, (std::vector<int64_t>{0, 3, 7}));
    EXPECT_TRUE(h.has_sequences && h.has_token_id && !h.has_domain);
    EXPECT_EQ(h.model, "unit");
    TraceTokens tk;
    r.read_tokens(2, 3, tk);
    EXPECT_EQ(tk.step, (std::vector<int32_t>{0, 1, 1}));
    EXPECT_EQ(tk.sequence, (std::vector<int64_t>{101, 103, 103}));
    EXPECT_EQ(tk.position, (std::vector<int32_t>{0, 0, 1}));
    EXPECT_EQ(tk.token_id, (std::vector<int64_t>{1002, 1000, 1001}));
    for (int32_t l = 0; l < L; ++l) {
      std::vector<float> got(4 * E);
      r.read_logits(l, 3, 4, got.data());
      for (int64_t i = 0; i < 4 * E; ++i) {
        const float w = want[l][3 * E + i];
        EXPECT_EQ(got[i], fp16 ? half_to_float(float_to_half(w)) : w) << "layer " << l << " element " << i;
      }
    }
  }
}

TEST(TraceFile, AssignmentsRoundTripWithPadding) {
  const std::string path = tmp_path("assign.h5");
  TraceWriterOptions o;
  o.kind = "assignments";
  o.num_experts = 8;
  o.num_layers = 1;
  o.top_k = 3;
  o.variable_k = true;
  o.weights_are = "probabilities";
  {
    TraceWriter w(path, o);
    const std::vector<int32_t> pos{0, 1};
    const int64_t first = w.append_tokens(0, 2, {}, pos);
    const std::vector<int32_t> ids{7, 0, 3, 5, -1, -1};
    const std::vector<float> wt{0.5f, 0.2f, 0.1f, 0.9f, 0.f, 0.f};
    w.write_assignments(0, first, 2, ids.data(), wt.data());
    EXPECT_THROW(w.write_assignments(0, 0, 1, std::vector<int32_t>{8, 0, 0}.data(), wt.data()), Error);  // id >= E
    w.finish();
  }
  TraceReader r(path);
  EXPECT_EQ(r.header().kind, "assignments");
  EXPECT_TRUE(r.header().variable_k);
  EXPECT_FALSE(r.header().has_sequences);
  EXPECT_EQ(r.header().weights_are, "probabilities");
  std::vector<int32_t> ids(6);
  std::vector<float> wt(6);
  r.read_assignments(0, 0, 2, ids.data(), wt.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{7, 0, 3, 5, -1, -1}));
  EXPECT_EQ(wt[3], 0.9f);
  std::vector<float> z(8);
  EXPECT_THROW(r.read_logits(0, 0, 1, z.data()), Error);
}

TEST(TraceFile, ReaderRefusesBadIdsAndLogits) {
  const std::string path = tmp_path("bad_ids.h5");
  TraceWriterOptions o;
  o.kind = "assignments";
  o.num_experts = 8;
  o.num_layers = 1;
  o.top_k = 2;
  {
    TraceWriter w(path, o);
    w.append_tokens(0, 2, {}, std::vector<int32_t>{0, 1});
    w.write_assignments(0, 0, 2, std::vector<int32_t>{1, 2, 3, -1}.data(), std::vector<float>{0.5f, 0.2f, 0.4f, 0.f}.data());
    w.finish();
  }
  // Corrupt the file behind the writer's back: an id >= E, then one after padding.
  auto poke = [&](int32_t value, hsize_t row, hsize_t col) {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "/expert_ids", H5P_DEFAULT);
    const hid_t fs = H5Dget_space(d);
    const hsize_t start[3] = {0, row, col}, count[3] = {1, 1, 1};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr);
    const hid_t ms = H5Screate_simple(3, count, nullptr);
    H5Dwrite(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, &value);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
  };
  auto error_of = [&]() -> std::string {
    TraceReader r(path);
    std::vector<int32_t> ids(4);
    std::vector<float> w(4);
    try {
      r.read_assignments(0, 0, 2, ids.data(), w.data());
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of(), "");
  poke(1000, 0, 1);
  EXPECT_NE(error_of().find("/expert_ids layer 0 row 0: expert id 1000 outside [0, 8)"), std::string::npos) << error_of();
  poke(2, 0, 1);
  poke(-1, 1, 0);
  poke(3, 1, 1);
  EXPECT_NE(error_of().find("row 1: expert id 3 after -1 padding"), std::string::npos) << error_of();
  // Writers refuse NaN, +inf and logits beyond float16.
  TraceWriterOptions lo;
  lo.num_experts = 2;
  lo.num_layers = 1;
  TraceWriter w(tmp_path("bad_logits.h5"), lo);
  w.append_tokens(0, 1, {}, std::vector<int32_t>{0});
  EXPECT_THROW(w.write_logits(0, 0, 1, std::vector<float>{1.f, NAN}.data()), InputError);
  EXPECT_THROW(w.write_logits(0, 0, 1, std::vector<float>{70000.f, 0.f}.data()), InputError);
  w.write_logits(0, 0, 1, std::vector<float>{-1e30f, 0.f}.data());  // -inf in fp16: never chosen
}

TEST(TraceFile, UnfinishedWriterLeavesNoFile) {
  const std::string path = tmp_path("unfinished.h5");
  {
    TraceWriterOptions o;
    o.num_experts = 4;
    o.num_layers = 1;
    TraceWriter w(path, o);
    w.append_tokens(0, 1, {}, std::vector<int32_t>{0});
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(TraceFile, RefusesWhatIsNotATrace) {
  EXPECT_THROW(TraceReader(tmp_path("missing.h5")), InputError);
  const std::string txt = tmp_path("text.h5");
  { std::FILE* f = std::fopen(txt.c_str(), "w"); std::fputs("hello", f); std::fclose(f); }
  try {
    TraceReader r(txt);
    FAIL() << "a text file was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not an HDF5 file"), std::string::npos) << e.what();
  }
  // Refuses to overwrite without force.
  TraceWriterOptions o;
  o.num_experts = 4;
  o.num_layers = 1;
  EXPECT_THROW(TraceWriter(txt, o), InputError);
}

TEST(Reconstruct, SoftmaxGivesBackTheRecordedProbabilitiesAndOrder) {
  const int32_t E = 16, k = 4;
  const int32_t ids[k] = {9, 2, 14, 5};
  const float w[k] = {0.30f, 0.12f, 0.05f, 0.01f};  // sum 0.48: rest 0.52 over 12 experts, capped below 0.01
  std::vector<float> z(E);
  reconstruct_logits(ids, w, k, E, true, z.data());
  double total = 0;
  for (float x : z) total += std::exp(static_cast<double>(x));
  for (int32_t j = 0; j < k; ++j) EXPECT_NEAR(std::exp(z[ids[j]]) / total, w[j] / total, 1e-6);
  std::vector<int32_t> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
  for (int32_t j = 0; j < k; ++j) EXPECT_EQ(order[j], ids[j]);
  for (int32_t e = 0; e < E; ++e)
    if (e != 9 && e != 2 && e != 14 && e != 5) EXPECT_LT(z[e], z[5]);
}

}  // namespace
}  // namespace moe
