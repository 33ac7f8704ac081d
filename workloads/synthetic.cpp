// Compiled with -ffp-contract=off (workloads/CMakeLists.txt): see synthetic.hpp.
#include "workloads/synthetic.hpp"

#include <bit>
#include <algorithm>
#include <cmath>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"

namespace moe::synth {
namespace {

constexpr uint32_t kGolden = 0x9e3779b9u;

// 32-bit avalanche mixer (xorshift-multiply, two rounds).
[[gnu::always_inline]] inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x21f0aaadu;
  x ^= x >> 15;
  x *= 0x735a2d97u;
  x ^= x >> 15;
  return x;
}

// log(x), x a positive normal float: x = 2^n * m with m in [sqrt(1/2), sqrt(2)), log(m) =
// 2 atanh(s) with s = (m - 1) / (m + 1), |s| <= 0.1716, by its series up to s^9.
[[gnu::always_inline]] inline float log_poly(float x) {
  const auto bits = std::bit_cast<int32_t>(x);
  const int32_t n = (bits - 0x3f3504f3) >> 23;  // 0x3f3504f3 = sqrt(1/2)
  const float m = std::bit_cast<float>(bits - n * (1 << 23));
  const float f = m - 1.0f;
  const float s = f / (2.0f + f);
  const float s2 = s * s;
  const float p = (((s2 * (1.0f / 9.0f) + (1.0f / 7.0f)) * s2 + (1.0f / 5.0f)) * s2 + (1.0f / 3.0f)) * s2;
  const float two_s = s + s;
  return static_cast<float>(n) * 0.693147180559945f + (two_s + two_s * p);
}

// Uniform on the odd multiples of 2^-24 in (0, 1), exact in float.
[[gnu::always_inline]] inline float to_uniform(uint32_t h) {
  return static_cast<float>(static_cast<int32_t>(((h >> 9) << 1) | 1u)) * 0x1.0p-24f;
}

[[gnu::always_inline]] inline float gumbel_of(float u) { return -log_poly(-log_poly(u)); }

[[gnu::always_inline]] inline uint32_t word(uint64_t row, uint32_t pe) {
  return hash32(hash32(static_cast<uint32_t>(row) ^ pe) + static_cast<uint32_t>(row >> 32));
}

[[gnu::always_inline]] inline uint32_t expert_word(int32_t e) { return hash32(static_cast<uint32_t>(e) * kGolden); }

// No allocation and no throw here: GCC 12 treats target_clones functions as nothrow.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void gumbel_kernel(
    uint64_t key, int64_t first_token, int64_t rows, int32_t E, const uint32_t* pe, const float* bias, float* out) {
  for (int64_t t = 0; t < rows; ++t) {
    const uint64_t row = rng::bits(key, static_cast<uint64_t>(first_token + t));
    float* o = out + t * E;
    for (int32_t e = 0; e < E; ++e) o[e] = bias[e] + gumbel_of(to_uniform(word(row, pe[e])));
  }
}

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void uniform_kernel(
    uint64_t key, int64_t first_token, int64_t rows, int32_t E, const uint32_t* pe, float* out) {
  for (int64_t t = 0; t < rows; ++t) {
    const uint64_t row = rng::bits(key, static_cast<uint64_t>(first_token + t));
    float* o = out + t * E;
    for (int32_t e = 0; e < E; ++e) o[e] = to_uniform(word(row, pe[e]));
  }
}

std::vector<uint32_t> expert_words(int32_t E) {
  std::vector<uint32_t> pe(static_cast<size_t>(E));
  for (int32_t e = 0; e < E; ++e) pe[e] = expert_word(e);
  return pe;
}

}  // namespace

void gumbel_rows(uint64_t stream_key, int64_t first_token, int64_t rows, int32_t E, const float* bias, float* out) {
  const std::vector<uint32_t> pe = expert_words(E);
  std::vector<float> zero;
  if (!bias) {
    zero.assign(static_cast<size_t>(E), 0.0f);
    bias = zero.data();
  }
  gumbel_kernel(stream_key, first_token, rows, E, pe.data(), bias, out);
}

void uniform_rows(uint64_t stream_key, int64_t first_token, int64_t rows, int32_t E, float* out) {
  const std::vector<uint32_t> pe = expert_words(E);
  uniform_kernel(stream_key, first_token, rows, E, pe.data(), out);
}

float gumbel_one(uint64_t stream_key, int64_t token, int32_t e) {
  return 0.0f + gumbel_of(to_uniform(word(rng::bits(stream_key, static_cast<uint64_t>(token)), expert_word(e))));
}

float uniform_one(uint64_t stream_key, int64_t token, int32_t e) {
  return to_uniform(word(rng::bits(stream_key, static_cast<uint64_t>(token)), expert_word(e)));
}

float fast_log(float x) { return log_poly(x); }

std::string knob_error(const std::string& name, const ComponentArgs& a, const std::string& key, const std::string& why) {
  const auto it = a.values().find(key);
  return "--workload-arg " + name + "." + key + "=" + (it == a.values().end() ? "(default)" : it->second) + ": " + why;
}

HotKnobs read_hot_knobs(const std::string& name, ComponentArgs& a, int32_t experts, int32_t top_k, double default_fraction) {
  HotKnobs h;
  h.hot = a.get_int("hot", std::min(top_k, experts - 1));
  h.fraction = a.get_double("fraction", default_fraction);
  if (h.hot < 1 || h.hot >= experts)
    throw InputError(knob_error(name, a, "hot", "must be in [1, experts - 1] = [1, " + std::to_string(experts - 1) + "]"));
  if (!(h.fraction > 0 && h.fraction < 1)) throw InputError(knob_error(name, a, "fraction", "must be in (0, 1)"));
  return h;
}

std::vector<float> hot_bias(const std::vector<uint8_t>& hot, double fraction) {
  const auto E = static_cast<int64_t>(hot.size());
  int64_t H = 0;
  for (uint8_t h : hot) H += h ? 1 : 0;
  if (H < 1 || H >= E || !(fraction > 0 && fraction < 1)) fail("hot_bias: needs 0 < H < E and 0 < fraction < 1");
  const auto b_hot = static_cast<float>(std::log(fraction / static_cast<double>(H)));
  const auto b_cold = static_cast<float>(std::log((1 - fraction) / static_cast<double>(E - H)));
  std::vector<float> bias(hot.size());
  for (size_t e = 0; e < hot.size(); ++e) bias[e] = hot[e] ? b_hot : b_cold;
  return bias;
}

std::vector<uint8_t> block_mask(int32_t E, int64_t first, int64_t H) {
  std::vector<uint8_t> m(static_cast<size_t>(E), 0);
  const int64_t start = ((first % E) + E) % E;
  for (int64_t i = 0; i < H && i < E; ++i) m[static_cast<size_t>((start + i) % E)] = 1;
  return m;
}

void apportion(const std::vector<double>& w, int64_t total, std::vector<int64_t>& first) {
  const auto R = static_cast<int64_t>(w.size());
  double sum = 0;
  for (double x : w) sum += x;
  if (R < 1 || total < R || !(sum > 0)) fail("apportion: needs total >= ranks >= 1 and positive weights");
  const auto spare = static_cast<double>(total - R);
  first.assign(static_cast<size_t>(R) + 1, 0);
  double cum = 0;
  for (int64_t r = 1; r < R; ++r) {
    cum += w[static_cast<size_t>(r - 1)];
    // cum / sum only grows with r: each rank gets >= 1 token (the "r +") and the counts add up.
    first[static_cast<size_t>(r)] = r + std::min(total - R, static_cast<int64_t>(std::floor(spare * (cum / sum) + 0.5)));
  }
  first[static_cast<size_t>(R)] = total;
}

}  // namespace moe::synth
