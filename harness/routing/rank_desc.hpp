#pragma once
// Branch-free descending ranks of a short row (a router's E scores), shared by the routers that
// order a variable number of selected experts (remoe, lapsum).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace moe {

// rank[i] (i < n) = how many of v[0..n) exceed v[i]: the position of i in descending order when the
// values are distinct. Counted for up to 64 positions at once (four 16-lane blocks) against each
// broadcast value: n^2/16 compares, no branches to mispredict. v and rank need room for n rounded
// up to 16 (v's padding is set here). Returns false when two values are equal: a tied group of g
// values at rank r all get r, so the sum of the ranks falls short of n(n-1)/2 exactly then.
using vf16 = float __attribute__((vector_size(64)));
using vi16 = int32_t __attribute__((vector_size(64)));

template <int NB>
[[gnu::always_inline]] inline void rank_blocks(const float* v, int32_t n, int32_t i0,
                                               int32_t* rank) {
  vf16 x[NB];
  vi16 c[NB];
  for (int q = 0; q < NB; ++q) {
    std::memcpy(&x[q], v + i0 + 16 * q, sizeof x[q]);
    c[q] = vi16{};
  }
  for (int32_t j = 0; j < n; ++j) {
    const float y = v[j];
    const vf16 b = {y, y, y, y, y, y, y, y, y, y, y, y, y, y, y, y};
    for (int q = 0; q < NB; ++q) c[q] -= b > x[q];
  }
  for (int q = 0; q < NB; ++q) std::memcpy(rank + i0 + 16 * q, &c[q], sizeof c[q]);
}

[[gnu::always_inline]] inline bool rank_desc(float* v, int32_t n, int32_t* rank) {
  const int32_t np = (n + 15) / 16 * 16;
  for (int32_t j = n; j < np; ++j) v[j] = -INFINITY;
  for (int32_t i0 = 0; i0 < np; i0 += 64) {
    switch (std::min<int32_t>(4, (np - i0) / 16)) {
      case 1:
        rank_blocks<1>(v, n, i0, rank);
        break;
      case 2:
        rank_blocks<2>(v, n, i0, rank);
        break;
      case 3:
        rank_blocks<3>(v, n, i0, rank);
        break;
      default:
        rank_blocks<4>(v, n, i0, rank);
        break;
    }
  }
  int64_t sum = 0;
  for (int32_t i = 0; i < n; ++i) sum += rank[i];
  return sum == static_cast<int64_t>(n) * (n - 1) / 2;
}

}  // namespace moe
