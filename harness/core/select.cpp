#include "harness/core/select.hpp"

#include <algorithm>
#include <bit>

#include "harness/core/error.hpp"

namespace moe {

namespace {
uint32_t order_key(float w) {
  if (w == 0.0f) w = 0.0f;  // -0.0 == +0.0: one key, so they tie as the header promises
  const uint32_t u = std::bit_cast<uint32_t>(w);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
}  // namespace

void select_top_per_bucket(const Comm& group, int32_t buckets, std::span<const int32_t> bucket_of_entry,
                           std::span<const float> key_of_entry, std::span<const int64_t> quota,
                           std::vector<uint8_t>& selected) {
  const size_t n = bucket_of_entry.size();
  if (key_of_entry.size() != n || quota.size() != static_cast<size_t>(buckets)) fail("select_top_per_bucket: size mismatch");
  // Per bucket: (key, entry) sorted by key descending, then entry ascending (= global order).
  std::vector<int64_t> start(static_cast<size_t>(buckets) + 1, 0);
  for (size_t i = 0; i < n; ++i) ++start[bucket_of_entry[i] + 1];
  for (int32_t b = 0; b < buckets; ++b) start[b + 1] += start[b];
  std::vector<std::pair<uint32_t, int64_t>> sorted(n);
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (size_t i = 0; i < n; ++i) sorted[fill[bucket_of_entry[i]]++] = {order_key(key_of_entry[i]), static_cast<int64_t>(i)};
  }
  for (int32_t b = 0; b < buckets; ++b)
    std::sort(sorted.begin() + start[b], sorted.begin() + start[b + 1],
              [](const auto& x, const auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
  auto count_at_least = [&](int32_t b, uint64_t key) -> int64_t {
    if (key > 0xffffffffull) return 0;
    auto first = sorted.begin() + start[b], last = sorted.begin() + start[b + 1];
    return std::partition_point(first, last, [&](const auto& x) { return x.first >= key; }) - first;
  };
  std::vector<int64_t> total(buckets);
  for (int32_t b = 0; b < buckets; ++b) total[b] = start[b + 1] - start[b];
  group.sum(total);
  selected.assign(n, 1);
  auto open = [&](int32_t b) { return total[b] > quota[b]; };
  // thr[b] = largest key with group count(key >= thr) >= quota[b], by bisection on [lo, hi).
  std::vector<uint64_t> lo(buckets, 0), hi(buckets, 0x100000000ull);
  std::vector<int64_t> cnt(buckets);
  for (int iter = 0; iter < 33; ++iter) {
    bool any = false;
    for (int32_t b = 0; b < buckets; ++b) cnt[b] = (open(b) && hi[b] - lo[b] > 1) ? count_at_least(b, (lo[b] + hi[b]) / 2) : 0;
    group.sum(cnt);
    for (int32_t b = 0; b < buckets; ++b) {
      if (!(open(b) && hi[b] - lo[b] > 1)) continue;
      const uint64_t mid = (lo[b] + hi[b]) / 2;
      (cnt[b] >= quota[b] ? lo[b] : hi[b]) = mid;
      any = any || hi[b] - lo[b] > 1;
    }
    if (!any) break;
  }
  // Strictly above the threshold: selected. At the threshold: the globally first ones.
  std::vector<int64_t> above(buckets, 0), ties(buckets, 0);
  for (int32_t b = 0; b < buckets; ++b) {
    if (!open(b)) continue;
    above[b] = count_at_least(b, lo[b] + 1);
    ties[b] = count_at_least(b, lo[b]) - above[b];
  }
  std::vector<int64_t> above_total(above);
  group.sum(above_total);
  std::vector<int64_t> ties_before(ties);
  group.exscan_sum(ties_before);
  for (int32_t b = 0; b < buckets; ++b) {
    if (!open(b)) continue;
    const int64_t tie_slots = quota[b] - above_total[b];
    const int64_t first_tie = start[b] + above[b];
    for (int64_t i = first_tie + ties[b]; i < start[b + 1]; ++i) selected[sorted[i].second] = 0;
    for (int64_t i = 0; i < ties[b]; ++i)
      if (ties_before[b] + i >= tie_slots) selected[sorted[first_tie + i].second] = 0;
  }
}

std::vector<double> ordered_rank_sum(const Comm& group, std::span<const double> per_rank, int64_t n, int32_t ranks_here) {
  if (static_cast<int64_t>(per_rank.size()) != n * ranks_here) fail("ordered_rank_sum: size mismatch");
  std::vector<double> all(static_cast<size_t>(n) * ranks_here * group.size());
  if (group.size() == 1) {
    std::copy(per_rank.begin(), per_rank.end(), all.begin());
  } else {
    MOE_MPI(MPI_Allgather(per_rank.data(), static_cast<int>(per_rank.size()), MPI_DOUBLE, all.data(),
                          static_cast<int>(per_rank.size()), MPI_DOUBLE, group.raw()));
  }
  std::vector<double> out(static_cast<size_t>(n), 0.0);
  const int64_t ranks = static_cast<int64_t>(ranks_here) * group.size();
  for (int64_t r = 0; r < ranks; ++r)
    for (int64_t i = 0; i < n; ++i) out[i] += all[r * n + i];
  return out;
}

}  // namespace moe
