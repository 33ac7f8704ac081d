#pragma once
#include <cmath>
#include <cstdint>

// Counter-based random numbers: every value is a pure function of (seed, stream, counter), so a
// token's draws depend on its global index and never on which rank (or how many ranks) made it.
namespace moe::rng {

constexpr uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Key for one stream, e.g. key(seed, step, layer, purpose).
constexpr uint64_t key(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  return mix64(mix64(mix64(mix64(a) ^ b) ^ c) ^ d);
}

constexpr uint64_t bits(uint64_t stream_key, uint64_t counter) { return mix64(stream_key ^ mix64(counter)); }

// Uniform in (0, 1): never 0, never 1, 53 bits.
inline double uniform(uint64_t stream_key, uint64_t counter) {
  return (static_cast<double>(bits(stream_key, counter) >> 11) + 0.5) * 0x1.0p-53;
}

// Standard normal by Box-Muller from two counter draws (2c, 2c+1).
inline double normal(uint64_t stream_key, uint64_t counter) {
  const double u1 = uniform(stream_key, 2 * counter);
  const double u2 = uniform(stream_key, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Standard Gumbel(0, 1).
inline double gumbel(uint64_t stream_key, uint64_t counter) { return -std::log(-std::log(uniform(stream_key, counter))); }

// Uniform integer in [0, n).
inline uint64_t below(uint64_t stream_key, uint64_t counter, uint64_t n) {
  return static_cast<uint64_t>(uniform(stream_key, counter) * static_cast<double>(n)) % n;
}

}  // namespace moe::rng
