#include <gtest/gtest.h>

#include "backends/mpi/bench_a2a.hpp"
#include "harness/core/error.hpp"

using namespace moe;

TEST(BenchA2a, ParseSize) {
  EXPECT_EQ(parse_size("-b", "4096"), 4096);
  EXPECT_EQ(parse_size("-b", "1K"), 1024);
  EXPECT_EQ(parse_size("-e", "64M"), int64_t{64} << 20);
  EXPECT_EQ(parse_size("-e", "2G"), int64_t{2} << 30);
  EXPECT_THROW(parse_size("-b", "12Q"), InputError);
  EXPECT_THROW(parse_size("-b", "lots"), InputError);
  EXPECT_THROW(parse_size("-b", "0"), InputError);
}

TEST(Calibrate, FitRecoversLatencyAndBandwidth) {
  const double alpha = 5e-6, bw = 12e9;
  std::vector<double> bytes, secs;
  for (double b = 8; b <= 16e6; b *= 4) {
    bytes.push_back(b);
    secs.push_back(alpha + b / bw);
  }
  const auto f = fit_link(bytes, secs);
  EXPECT_NEAR(f.latency_s, alpha, 1e-9);  // the smallest size is latency-bound
  EXPECT_NEAR(f.bandwidth_Bps / bw, 1.0, 1e-3);
  EXPECT_THROW(fit_link({1.0}, {1.0}), Error);
}
