#pragma once
// What --weights-are promises about one token's recorded weights, checked by every importer that
// reads weights (TRACE_FORMAT.md "Weights"): probabilities (a softmax over all E experts, not
// renormalised): each in [0, 1], sum <= 1 + tol; renormalized: each in [0, 1], sum = 1 within tol;
// gates: each in [0, 1]; unknown: nothing. tol = 1e-3.
#include <cmath>
#include <cstdint>
#include <string>

namespace moe {

inline constexpr double kWeightsTolerance = 1e-3;

// "" when the k weights agree with `weights_are`, else what contradicts it (for the error line).
inline std::string weights_contradiction(const std::string& weights_are, const float* w,
                                         int32_t k) {
  if (weights_are == "unknown" || k == 0) return "";
  double sum = 0;
  for (int32_t j = 0; j < k; ++j) {
    if (!(w[j] >= -kWeightsTolerance && w[j] <= 1 + kWeightsTolerance))
      return "weight " + std::to_string(w[j]) + " (slot " + std::to_string(j) +
             ") is outside [0, 1] (--weights-are " + weights_are + ")";
    sum += w[j];
  }
  if (weights_are == "probabilities" && sum > 1 + kWeightsTolerance)
    return "weights sum to " + std::to_string(sum) +
           " > 1 (--weights-are probabilities: a softmax over all experts, so the chosen ones sum "
           "to at most 1; "
           "renormalized or gates?)";
  if (weights_are == "renormalized" && std::abs(sum - 1) > kWeightsTolerance)
    return "weights sum to " + std::to_string(sum) +
           ", not 1 (--weights-are renormalized: they sum to 1 over the chosen experts; "
           "probabilities or gates?)";
  return "";
}

}  // namespace moe
