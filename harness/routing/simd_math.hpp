#pragma once
// 8-lane float math with GCC vector extensions, for the vectorised routers. Always inlined into
// their callers (including target_clones functions); no vector crosses a function boundary.
#include <cstdint>

namespace moe::simd {

using vf = float __attribute__((vector_size(32)));
using vi = int32_t __attribute__((vector_size(32)));

// exp(x) for x <= 0 on 8 lanes: the polynomial of exp_nonpositive().
[[gnu::always_inline]] inline vf exp_nonpositive8(vf x) {
  const vf lo = vf{} - 87.0f;
  x = x < lo ? lo : x;
  const vf t = x * 1.44269504088896341f;
  const vi ni = __builtin_convertvector(t - 0.5f, vi);  // truncation = ceil(t - 0.5) for t <= 0.5
  const vf n = __builtin_convertvector(ni, vf);
  const vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = vf{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi bits = (ni + 127) << 23;
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace moe::simd
