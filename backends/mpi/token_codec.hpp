#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

// What travels in a real exchange: every token copy is token_bytes long and starts with a stamp
// (source rank, destination rank, index in the source's send list for that destination, and a
// check word over the stamp); the rest is a body regenerated from the stamp, so the receiver can
// verify every byte without being told the contents. Pure functions: no MPI here.
namespace moe::wire {

struct Stamp {
  int32_t src_rank;
  int32_t dst_rank;
  int64_t index;
  uint64_t check;  // mix of the three fields above
};
static_assert(sizeof(Stamp) == 24);

inline constexpr int64_t kMinTokenBytes = 32;  // the stamp plus one body word

// Bytes per token copy on the wire: the payload (hidden x dtype), at least kMinTokenBytes,
// rounded up to whole 8-byte words.
int64_t token_bytes(int64_t payload_bytes);

void write_token(std::byte* token, int64_t token_bytes, int32_t src_rank, int32_t dst_rank, int64_t index);

enum class Verdict { ok, corrupted };
// Checks stamp fields against what the receiver expects and every body byte.
Verdict verify_token(const std::byte* token, int64_t token_bytes, int32_t src_rank, int32_t dst_rank, int64_t index);

// Checks a buffer grouped by peer (counts[p] copies at token offset displs[p]): incoming copies
// must be (src p, dst self, index j), echoed ones (src self, dst p, index j). Returns the number
// of copies that fail.
template <class Displ>
int64_t count_corrupted(const std::byte* buf, int64_t token_bytes, std::span<const int64_t> counts, std::span<const Displ> displs,
                        int32_t self, bool incoming) {
  int64_t bad = 0;
  for (size_t p = 0; p < counts.size(); ++p)
    for (int64_t j = 0; j < counts[p]; ++j) {
      const auto peer = static_cast<int32_t>(p);
      bad += verify_token(buf + (static_cast<int64_t>(displs[p]) + j) * token_bytes, token_bytes, incoming ? peer : self,
                          incoming ? self : peer, j) != Verdict::ok;
    }
  return bad;
}

// Counts and displacements, in tokens, for one rank's exchange; bytes in 64-bit. Throws if a count
// or displacement in tokens does not fit MPI's int (the derived token datatype keeps byte counts
// past 2^31 legal).
struct ExchangeLayout {
  std::vector<int> counts;   // [peers] tokens
  std::vector<int> displs;   // [peers] tokens
  int64_t tokens = 0;
  int64_t bytes = 0;
};
ExchangeLayout make_layout(std::span<const int64_t> counts, int64_t token_bytes);

}  // namespace moe::wire
