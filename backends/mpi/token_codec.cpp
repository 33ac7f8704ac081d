#include "backends/mpi/token_codec.hpp"

#include <climits>
#include <cstring>
#include <string>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"

namespace moe::wire {

namespace {
uint64_t stamp_check(int32_t src, int32_t dst, int64_t index) {
  return rng::key(static_cast<uint64_t>(src) + 1, static_cast<uint64_t>(dst) + 1, static_cast<uint64_t>(index));
}
constexpr uint64_t kStride = 0x9e3779b97f4a7c15ULL;
}  // namespace

int64_t token_bytes(int64_t payload_bytes) {
  const int64_t b = payload_bytes < kMinTokenBytes ? kMinTokenBytes : payload_bytes;
  return (b + 7) / 8 * 8;
}

void write_token(std::byte* token, int64_t bytes, int32_t src, int32_t dst, int64_t index) {
  const Stamp s{src, dst, index, stamp_check(src, dst, index)};
  std::memcpy(token, &s, sizeof s);
  const int64_t words = (bytes - static_cast<int64_t>(sizeof s)) / 8;
  uint64_t w = s.check;
  std::byte* body = token + sizeof s;
  for (int64_t i = 0; i < words; ++i) {
    w += kStride;
    std::memcpy(body + i * 8, &w, 8);
  }
}

Verdict verify_token(const std::byte* token, int64_t bytes, int32_t src, int32_t dst, int64_t index) {
  Stamp s;
  std::memcpy(&s, token, sizeof s);
  if (s.src_rank != src || s.dst_rank != dst || s.index != index || s.check != stamp_check(src, dst, index))
    return Verdict::corrupted;
  const int64_t words = (bytes - static_cast<int64_t>(sizeof s)) / 8;
  uint64_t w = s.check, bad = 0;
  const std::byte* body = token + sizeof s;
  for (int64_t i = 0; i < words; ++i) {
    w += kStride;
    uint64_t got;
    std::memcpy(&got, body + i * 8, 8);
    bad |= got ^ w;
  }
  return bad ? Verdict::corrupted : Verdict::ok;
}

ExchangeLayout make_layout(std::span<const int64_t> counts, int64_t token_bytes) {
  ExchangeLayout l;
  l.counts.resize(counts.size());
  l.displs.resize(counts.size());
  for (size_t p = 0; p < counts.size(); ++p) {
    if (counts[p] < 0 || counts[p] > INT_MAX || l.tokens > INT_MAX)
      throw Error("exchange of " + std::to_string(counts[p]) + " tokens to peer " + std::to_string(p) + " at token offset " +
                  std::to_string(l.tokens) + " does not fit MPI's int token counts");
    l.counts[p] = static_cast<int>(counts[p]);
    l.displs[p] = static_cast<int>(l.tokens);
    l.tokens += counts[p];
  }
  l.bytes = l.tokens * token_bytes;
  return l;
}

}  // namespace moe::wire
