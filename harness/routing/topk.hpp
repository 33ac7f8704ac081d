#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

namespace moe {

// Indices of the k largest values of v[0..n), largest first; ties go to the lower index.
// Insertion into a sorted window: ~n compares plus O(k log(n/k)) expected inserts, no allocation.
inline void topk_indices(const float* v, int32_t n, int32_t k, int32_t* idx, float* val) {
  for (int32_t j = 0; j < k; ++j) {
    // First k elements, insertion sorted (stable: later equal values go after).
    int32_t i = j;
    const float x = v[j];
    while (i > 0 && val[i - 1] < x) {
      val[i] = val[i - 1];
      idx[i] = idx[i - 1];
      --i;
    }
    val[i] = x;
    idx[i] = j;
  }
  float kth = val[k - 1];
  for (int32_t e = k; e < n; ++e) {
    const float x = v[e];
    if (!(x > kth)) continue;
    int32_t i = k - 1;
    while (i > 0 && val[i - 1] < x) {
      val[i] = val[i - 1];
      idx[i] = idx[i - 1];
      --i;
    }
    val[i] = x;
    idx[i] = e;
    kth = val[k - 1];
  }
}

// exp(x) for x <= 0 (softmax after max subtraction), branch-free so loops over it vectorise;
// relative error < 2e-7 for x >= -87, 0 below.
inline float exp_nonpositive(float x) {
  // Clamp by bit-blend: a ?: on floats counts as control flow and stops GCC vectorising loops over it.
  const uint32_t below = 0u - static_cast<uint32_t>(x < -87.0f);
  x = std::bit_cast<float>((std::bit_cast<uint32_t>(-87.0f) & below) | (std::bit_cast<uint32_t>(x) & ~below));
  const float t = x * 1.44269504088896341f;  // x / ln 2
  const float n = static_cast<float>(static_cast<int32_t>(t - 0.5f));  // floor(t + 0.5) for t <= 0.5
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln2 in two parts (Cephes)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// sum_i exp(v[i] - m) for m = max(v). Two plain loops so that both vectorise without -ffast-math:
// the exponentials into a scratch row, then eight independent partial sums.
inline float sum_exp_shifted(const float* v, int32_t n, float m, float* scratch) {
  for (int32_t i = 0; i < n; ++i) scratch[i] = exp_nonpositive(v[i] - m);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int32_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int32_t j = 0; j < 8; ++j) acc[j] += scratch[i + j];
  float s = 0.f;
  for (; i < n; ++i) s += scratch[i];
  for (float a : acc) s += a;
  return s;
}

}  // namespace moe
