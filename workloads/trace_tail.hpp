#pragma once
// Tail completion of an assignment trace (workloads/TRACE_FORMAT.md, "Tail completion"): the
// logits of the experts a logger did not record, modelled so that every router can run on a top-k
// capture. The recorded experts keep their recorded order and relative weights; the completion of
// a token is a pure function of (seed, trace layer, trace row), so any split of the tokens over
// processes gives identical logits.
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

class TraceReader;

struct TailSpec {
  std::string model = "none";        // none | mass | profile
  std::string prior = "popularity";  // popularity | uniform: which unrecorded experts sit higher
  double noise = 1.0;                // mass: log-normal spread of the tail's shares
  uint64_t seed = 0;
};

// The parameters fitted for one trace layer.
struct TailLayerFit {
  std::vector<double> log_prior;  // [E] log of the prior weight of each expert
  std::vector<double> prior;      // [E] the prior weight
  std::vector<int32_t> order;     // [E] experts by prior, highest first (ties: lower id)
  double slope = 0;               // profile: log-weight drop per rank beyond the recorded ones
  double spread = 0;              // profile: per-rank noise (std of the fit's residuals)
  int64_t rows_fitted = 0;        // profile: tokens with a full row of positive weights
};

class TailCompleter {
 public:
  // Fits the model on the whole trace (every process reads it alike, block by block). Throws
  // InputError naming the trace when it cannot support the model (a logit trace; `mass` on weights
  // that are not probabilities; `profile` with k = 1 or no weight decay to fit).
  TailCompleter(TraceReader& reader, const TailSpec& spec);
  // Completed logits of one recorded row (trace layer `layer`, global trace row `row`): out[E].
  // Recorded experts get log(weight), unrecorded ones the tail, and the row is shifted so that its
  // mean logit is 0.
  void complete(int32_t layer, int64_t row, const int32_t* ids, const float* weights, float* out);
  const TailSpec& spec() const { return spec_; }
  const std::vector<TailLayerFit>& fits() const { return fits_; }
  // The model, its parameters and seed as one JSON object (the results file's trace_tail_params).
  std::string describe() const;

  static const std::vector<std::string>& models();  // none, mass, profile
  static const std::vector<std::string>& priors();  // popularity, uniform

 private:
  void complete_mass(int32_t layer, int64_t row, int32_t n, float* out);
  void complete_profile(int32_t layer, int64_t row, int32_t n, float* out);

  TailSpec spec_;
  int32_t E_ = 0, k_ = 0;
  std::vector<TailLayerFit> fits_;
  // Noise tables (approximately standard normal, quantised): the value, noise * value, exp of it.
  std::vector<float> std_normal_, log_noise_, noise_;
  // Scratch of one row.
  std::vector<int32_t> tail_;
  std::vector<double> share_, key_, recorded_w_;
  std::vector<char> recorded_, capped_;
  std::vector<uint16_t> levels_;
};

}  // namespace moe
