#include <gtest/gtest.h>

#include <climits>
#include <vector>

#include "backends/mpi/token_codec.hpp"
#include "harness/core/error.hpp"

using namespace moe;
using namespace moe::wire;

TEST(TokenCodec, RoundTripAndEveryByteChecked) {
  const int64_t tb = token_bytes(4096);
  EXPECT_EQ(tb, 4096);
  EXPECT_EQ(token_bytes(2), kMinTokenBytes);
  EXPECT_EQ(token_bytes(33), 40);
  std::vector<std::byte> buf(static_cast<size_t>(tb));
  write_token(buf.data(), tb, 3, 1, 77);
  EXPECT_EQ(verify_token(buf.data(), tb, 3, 1, 77), Verdict::ok);
  EXPECT_EQ(verify_token(buf.data(), tb, 2, 1, 77), Verdict::corrupted);  // wrong source
  EXPECT_EQ(verify_token(buf.data(), tb, 3, 0, 77), Verdict::corrupted);  // wrong destination
  EXPECT_EQ(verify_token(buf.data(), tb, 3, 1, 78), Verdict::corrupted);  // wrong index (reordered)
  for (size_t at : {size_t{0}, size_t{23}, size_t{24}, buf.size() / 2, buf.size() - 1}) {
    auto copy = buf;
    copy[at] ^= std::byte{1};
    EXPECT_EQ(verify_token(copy.data(), tb, 3, 1, 77), Verdict::corrupted) << "flipped byte " << at;
  }
}

TEST(TokenCodec, LayoutCountsInTokensBytesIn64Bit) {
  // 600k tokens of 4 KiB to each of 2 peers: 4.9 GB, far past 2^31 bytes, but the counts in
  // tokens fit an int, which is what the derived datatype needs.
  const std::vector<int64_t> counts{600000, 600000};
  const auto l = make_layout(counts, 4096);
  EXPECT_EQ(l.counts, (std::vector<int>{600000, 600000}));
  EXPECT_EQ(l.displs, (std::vector<int>{0, 600000}));
  EXPECT_EQ(l.tokens, 1200000);
  EXPECT_EQ(l.bytes, int64_t{1200000} * 4096);
  EXPECT_GT(l.bytes, int64_t{INT_MAX});
  // A count (or an offset) in tokens past INT_MAX cannot be expressed: a clear error.
  EXPECT_THROW(make_layout(std::vector<int64_t>{int64_t{INT_MAX} + 1}, 32), Error);
  EXPECT_THROW(make_layout(std::vector<int64_t>{INT_MAX, INT_MAX, 1}, 32), Error);
}
