#pragma once
// Pieces shared by the issue-6 synthetic workloads (balanced, hot_experts, ...): fast counter-based
// noise rows, expert sets and ragged rank layouts.
//
// Noise. Row t of a (step, layer) stream gets 64 bits r = rng::bits(stream_key, t); expert e's
// 32-bit word is h = hash32(hash32(lo(r) ^ P[e]) + hi(r)) with P[e] = hash32(e * golden) and
// hash32 a two-multiply avalanche mixer. u = (2 * (h >> 9) + 1) / 2^24 is uniform on the odd
// multiples of 2^-24 in (0, 1), exact in float. Gumbel noise is -log(-log(u)) with a polynomial
// log (relative error < 3e-7), range [-2.812, 16.636]. Every operation is IEEE float with no FMA
// contraction (synthetic.cpp is compiled with -ffp-contract=off), so the value of (t, e) is the same
// bits whatever the batch split, the vector width of the clone that runs, or the process.
#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/args.hpp"

namespace moe::synth {

// The knobs `hot` (number of hot experts, default top_k) and `fraction` (of first choices they
// take) of workload `name`, checked: 1 <= hot < experts, 0 < fraction < 1. Throws InputError.
struct HotKnobs {
  int64_t hot = 0;
  double fraction = 0;
};
HotKnobs read_hot_knobs(const std::string& name, ComponentArgs& a, int32_t experts, int32_t top_k, double default_fraction);
// "--workload-arg NAME.KEY=VALUE: WHY" for knob errors, VALUE as the user wrote it (or "(default)").
std::string knob_error(const std::string& name, const ComponentArgs& a, const std::string& key, const std::string& why);

// Largest and smallest Gumbel value the noise can take (u = 1 - 2^-24 and u = 2^-24).
constexpr float kGumbelMax = 16.6356f;
constexpr float kGumbelMin = -2.8115f;

// out[t * E + e] = bias[e] + G(t, e) for rows first_token .. first_token + rows - 1 (bias may be
// null: zero). out has rows * E floats.
void gumbel_rows(uint64_t stream_key, int64_t first_token, int64_t rows, int32_t E, const float* bias, float* out);
// out[t * E + e] = u(t, e), the uniform above.
void uniform_rows(uint64_t stream_key, int64_t first_token, int64_t rows, int32_t E, float* out);
// The same values one at a time, with the plain scalar code (tests compare the two).
float gumbel_one(uint64_t stream_key, int64_t token, int32_t e);
float uniform_one(uint64_t stream_key, int64_t token, int32_t e);
// log(x) for a positive normal float, the polynomial the rows use.
float fast_log(float x);

// Plackett-Luce biases: the experts in `hot` (a 0/1 mask of E) get log(fraction / H), the others
// log((1 - fraction) / (E - H)), so with Gumbel noise a token's first choice is a hot expert with
// probability `fraction` exactly. Needs 0 < H < E and 0 < fraction < 1.
std::vector<float> hot_bias(const std::vector<uint8_t>& hot, double fraction);
// 0/1 mask of the H experts first, first + 1, ... (mod E).
std::vector<uint8_t> block_mask(int32_t E, int64_t first, int64_t H);

// Layout of `ranks` ranks and `total` tokens with rank r's count 1 + (total - ranks) * w_r / sum(w),
// rounded so that the counts add up to total exactly (cumulative rounding): first[r], r = 0..ranks.
// Needs total >= ranks and w_r >= 0 with a positive sum.
void apportion(const std::vector<double>& w, int64_t total, std::vector<int64_t>& first);

}  // namespace moe::synth
