#include "harness/routing/topk_rows.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "harness/routing/simd_math.hpp"
#include "harness/routing/topk.hpp"

namespace moe {

namespace {

constexpr int kLanes = 8;
using simd::vf;
using simd::vi;
using simd::exp_nonpositive8;


// 8 tokens (rows z, z + E, ..., z + 7E) at once. val[j]/idx[j] hold the j-th largest of each lane,
// sorted; a new value x enters where it beats the current entry strictly (equal values keep the
// earlier, lower index), and everything below shifts down one place.
[[gnu::always_inline]] inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// c[i] = column i of the 8x8 block whose rows are r[0..7] (unpack, shuffle, lane permute).
[[gnu::always_inline]] inline void transpose8(const vf* r, vf* c) {
  const vi lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
  const vi p44 = {0, 1, 8, 9, 4, 5, 12, 13}, pEE = {2, 3, 10, 11, 6, 7, 14, 15};
  const vi h20 = {0, 1, 2, 3, 8, 9, 10, 11}, h31 = {4, 5, 6, 7, 12, 13, 14, 15};
  vf t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], lo);
    t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], hi);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7
    u[4 * h + 0] = __builtin_shuffle(t[4 * h + 0], t[4 * h + 2], p44);
    u[4 * h + 1] = __builtin_shuffle(t[4 * h + 0], t[4 * h + 2], pEE);
    u[4 * h + 2] = __builtin_shuffle(t[4 * h + 1], t[4 * h + 3], p44);
    u[4 * h + 3] = __builtin_shuffle(t[4 * h + 1], t[4 * h + 3], pEE);
  }
  for (int i = 0; i < 4; ++i) {
    c[i] = __builtin_shuffle(u[i], u[4 + i], h20);
    c[4 + i] = __builtin_shuffle(u[i], u[4 + i], h31);
  }
}

// val[j]/idx[j] hold the j-th largest of each lane, sorted; x enters where it beats the current
// entry strictly (equal values keep the earlier, lower index), and everything below shifts down.
template <int K>
[[gnu::always_inline]] inline void insert(vf* val, vi* idx, vf x, int32_t e) {
  const vi xi = vi{} + e;
  vi m[K];
  for (int j = 0; j < K; ++j) m[j] = x > val[j];
  for (int j = K - 1; j > 0; --j) {
    val[j] = m[j] ? (m[j - 1] ? val[j - 1] : x) : val[j];
    idx[j] = m[j] ? (m[j - 1] ? idx[j - 1] : xi) : idx[j];
  }
  val[0] = m[0] ? x : val[0];
  idx[0] = m[0] ? xi : idx[0];
}

[[gnu::always_inline]] inline vf gather_column(const float* z, int32_t E, int32_t e) {
  vf x;
  for (int l = 0; l < kLanes; ++l) x[l] = z[static_cast<int64_t>(l) * E + e];
  return x;
}

// 8 tokens (rows z, z + E, ..., z + 7E) at once, one per lane, experts in increasing order.
template <int K>
[[gnu::always_inline]] inline void topk8(const float* z, int32_t E, TopKWeights mode, int32_t* expert, float* weight) {
  vf val[K];
  vi idx[K];
  for (int j = 0; j < K; ++j) {
    val[j] = vf{} - INFINITY;
    idx[j] = vi{} - 1;
  }
  int32_t e = 0;
  for (; e + 8 <= E; e += 8) {
    vf r[8], c[8];
    for (int l = 0; l < kLanes; ++l) r[l] = load(z + static_cast<int64_t>(l) * E + e);
    transpose8(r, c);
    for (int i = 0; i < 8; ++i) insert<K>(val, idx, c[i], e + i);
  }
  for (; e < E; ++e) insert<K>(val, idx, gather_column(z, E, e), e);
  vf w[K];
  if (mode == TopKWeights::logits) {
    for (int j = 0; j < K; ++j) w[j] = val[j];
  } else {
    vf norm = vf{};
    for (int j = 0; j < K; ++j) {
      w[j] = exp_nonpositive8(val[j] - val[0]);
      norm += w[j];
    }
    if (mode == TopKWeights::softmax_full) {
      norm = vf{};
      for (int32_t e2 = 0; e2 < E; ++e2) norm += exp_nonpositive8(gather_column(z, E, e2) - val[0]);
    }
    const vf inv = 1.0f / norm;
    for (int j = 0; j < K; ++j) w[j] *= inv;
  }
  for (int l = 0; l < kLanes; ++l)
    for (int j = 0; j < K; ++j) {
      expert[l * K + j] = idx[j][l];
      weight[l * K + j] = w[j][l];
    }
}

template <int K>
[[gnu::always_inline]] inline void rows_k(const float* z, int64_t blocks, int32_t E, TopKWeights mode, int32_t* expert,
                                          float* weight) {
  for (int64_t b = 0; b < blocks; ++b)
    topk8<K>(z + b * kLanes * E, E, mode, expert + b * kLanes * K, weight + b * kLanes * K);
}

// Whole blocks of 8 tokens with 1 <= k <= 8 and no -inf/NaN selected (checked by the caller).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void rows_simd(const float* z, int64_t blocks, int32_t E, int32_t k,
                                                                 TopKWeights mode, int32_t* expert, float* weight) {
  switch (k) {
    case 1: return rows_k<1>(z, blocks, E, mode, expert, weight);
    case 2: return rows_k<2>(z, blocks, E, mode, expert, weight);
    case 3: return rows_k<3>(z, blocks, E, mode, expert, weight);
    case 4: return rows_k<4>(z, blocks, E, mode, expert, weight);
    case 5: return rows_k<5>(z, blocks, E, mode, expert, weight);
    case 6: return rows_k<6>(z, blocks, E, mode, expert, weight);
    case 7: return rows_k<7>(z, blocks, E, mode, expert, weight);
    case 8: return rows_k<8>(z, blocks, E, mode, expert, weight);
    default: return;
  }
}

void row_scalar(const float* z, int32_t E, int32_t k, TopKWeights mode, int32_t* expert, float* weight) {
  topk_indices(z, E, k, expert, weight);
  if (mode == TopKWeights::logits) return;
  const float top = weight[0];
  float norm = 0;
  for (int32_t j = 0; j < k; ++j) {
    weight[j] = exp_nonpositive(weight[j] - top);
    norm += weight[j];
  }
  if (mode == TopKWeights::softmax_full) {
    norm = 0;
    for (int32_t e = 0; e < E; ++e) norm += exp_nonpositive(z[e] - top);
  }
  for (int32_t j = 0; j < k; ++j) weight[j] /= norm;
}

}  // namespace

void topk_rows(const float* logits, int64_t tokens, int32_t E, int32_t k, TopKWeights mode, int32_t* expert, float* weight) {
  if (!(k >= 1 && k <= 8 && E >= k)) {
    for (int64_t t = 0; t < tokens; ++t) row_scalar(logits + t * E, E, k, mode, expert + t * k, weight + t * k);
    return;
  }
  const int64_t blocks = tokens / kLanes;
  rows_simd(logits, blocks, E, k, mode, expert, weight);
  // The last tokens % 8 rows go through the same kernel in a padded block, so a row's result never
  // depends on its position in the batch (the SIMD and scalar paths round differently).
  const int64_t done = blocks * kLanes, rest = tokens - done;
  if (rest > 0) {
    std::vector<float> pad(static_cast<size_t>(kLanes) * E);
    for (int64_t l = 0; l < kLanes; ++l)
      std::copy(logits + (done + std::min(l, rest - 1)) * E, logits + (done + std::min(l, rest - 1) + 1) * E, pad.begin() + l * E);
    std::vector<int32_t> pe(static_cast<size_t>(kLanes) * k);
    std::vector<float> pw(pe.size());
    rows_simd(pad.data(), 1, E, k, mode, pe.data(), pw.data());
    std::copy(pe.begin(), pe.begin() + rest * k, expert + done * k);
    std::copy(pw.begin(), pw.begin() + rest * k, weight + done * k);
  }
  // Rows where fewer than k entries beat -inf (or with NaNs) leave index -1: redo those exactly.
  for (int64_t t = 0; t < tokens; ++t)
    if (expert[t * k + k - 1] < 0) row_scalar(logits + t * E, E, k, mode, expert + t * k, weight + t * k);
}

}  // namespace moe
