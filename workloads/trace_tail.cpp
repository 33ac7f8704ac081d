#include "workloads/trace_tail.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/trace_cli.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

constexpr double kTiny = 1e-30;                 // the smallest share a tail expert gets
constexpr double kBelowMin = 1.0 - 1.0 / 1024;  // tail shares stay strictly below the smallest recorded
constexpr double kOrderStep = 1e-3;           // profile: the least gap between tail logits
constexpr uint64_t kMassStream = 0x6d617373;    // "mass"
constexpr uint64_t kOrderStream = 0x6f726472;   // "ordr"
constexpr uint64_t kNoiseStream = 0x6e6f6973;   // "nois"

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// Rows of a layer with k positive weights: the mean and the second moment of log(w_r) - log(w_1)
// for ranks r = 2..k, pooled over the rows; the least-squares slope through the origin and the
// spread of the residuals.
void fit_profile(TraceReader& reader, int32_t layer, TailLayerFit& fit) {
  const TraceHeader& h = reader.header();
  const int32_t k = h.top_k;
  constexpr int64_t kBlock = 1 << 16;
  std::vector<int32_t> ids;
  std::vector<float> w;
  std::vector<double> lw(static_cast<size_t>(k));
  std::vector<double> sum(static_cast<size_t>(k), 0.0), sum2(static_cast<size_t>(k), 0.0);
  int64_t rows = 0;
  for (int64_t first = 0; first < h.num_tokens; first += kBlock) {
    const int64_t n = std::min(kBlock, h.num_tokens - first);
    ids.resize(static_cast<size_t>(n * k));
    w.resize(static_cast<size_t>(n * k));
    reader.read_assignments(layer, first, n, ids.data(), w.data());
    for (int64_t t = 0; t < n; ++t) {
      bool full = true;
      for (int32_t j = 0; j < k && full; ++j) {
        const size_t i = static_cast<size_t>(t * k + j);
        full = ids[i] >= 0 && w[i] > 0;
        if (full) lw[static_cast<size_t>(j)] = std::log(static_cast<double>(w[i]));
      }
      if (!full) continue;
      std::sort(lw.begin(), lw.end(), std::greater<>());
      for (int32_t r = 1; r < k; ++r) {
        const double d = lw[static_cast<size_t>(r)] - lw[0];
        sum[static_cast<size_t>(r)] += d;
        sum2[static_cast<size_t>(r)] += d * d;
      }
      ++rows;
    }
  }
  fit.rows_fitted = rows;
  const std::string where = "trace " + reader.path() + ": --trace-tail profile: layer " +
                            std::to_string(h.layer_ids[static_cast<size_t>(layer)]);
  if (rows == 0)
    throw InputError(where + " has no token with " + std::to_string(k) +
                     " positive recorded weights to fit the decay from");
  double sxy = 0, sxx = 0;
  for (int32_t r = 1; r < k; ++r) {
    sxy += r * sum[static_cast<size_t>(r)];
    sxx += static_cast<double>(r) * r * static_cast<double>(rows);
  }
  fit.slope = sxy / sxx;
  if (!(fit.slope < -1e-9))
    throw InputError(where + ": the recorded weights do not decay with rank (fitted slope " +
                     num(fit.slope) +
                     " per rank), so there is no profile to continue; use --trace-tail mass with "
                     "probabilities");
  double ss = 0;
  for (int32_t r = 1; r < k; ++r)
    ss += sum2[static_cast<size_t>(r)] - 2 * fit.slope * r * sum[static_cast<size_t>(r)] +
          fit.slope * fit.slope * r * r * static_cast<double>(rows);
  fit.spread = std::sqrt(std::max(0.0, ss / (static_cast<double>(rows) * (k - 1))));
}

}  // namespace

const std::vector<std::string>& TailCompleter::models() {
  static const std::vector<std::string> v{"none", "mass", "profile"};
  return v;
}

const std::vector<std::string>& TailCompleter::priors() {
  static const std::vector<std::string> v{"popularity", "uniform"};
  return v;
}

TailCompleter::TailCompleter(TraceReader& reader, const TailSpec& spec) : spec_(spec) {
  const TraceHeader& h = reader.header();
  const std::string where = "trace " + reader.path() + ": --trace-tail " + spec.model;
  if (h.logits())
    throw InputError(where + ": the trace holds full logits; completion applies to assignment "
                             "traces only (drop --trace-tail)");
  if (spec.model == "mass" && h.weights_are != "probabilities")
    throw InputError(where + " needs weights that are probabilities over all experts (weights_are "
                             "= " +
                     h.weights_are + "); use --trace-tail profile");
  if (spec.model == "profile" && h.top_k < 2)
    throw InputError(where + " fits the decay over ranks 1..k and needs k >= 2 (the trace has k = " +
                     std::to_string(h.top_k) + "); use --trace-tail mass");
  if (!(spec.noise >= 0) || !std::isfinite(spec.noise))
    throw InputError("--tail-noise: must be finite and >= 0 (got " + num(spec.noise) + ")");
  E_ = h.num_experts;
  k_ = h.top_k;
  fits_.resize(static_cast<size_t>(h.num_layers));
  std::vector<std::vector<int64_t>> loads;
  if (spec.prior == "popularity") loads = trace_expert_loads(reader, k_);
  for (int32_t l = 0; l < h.num_layers; ++l) {
    TailLayerFit& fit = fits_[static_cast<size_t>(l)];
    fit.log_prior.assign(static_cast<size_t>(E_), 0.0);
    if (!loads.empty()) {  // popularity: log of (demand + 1), relative to the mean
      const auto& load = loads[static_cast<size_t>(l)];
      const double mean =
          static_cast<double>(std::accumulate(load.begin(), load.end(), int64_t{0})) / E_ + 1.0;
      for (int32_t e = 0; e < E_; ++e)
        fit.log_prior[static_cast<size_t>(e)] =
            std::log((static_cast<double>(load[static_cast<size_t>(e)]) + 1.0) / mean);
    }
    if (spec.model == "profile") fit_profile(reader, l, fit);
  }
  tail_.reserve(static_cast<size_t>(E_));
  share_.resize(static_cast<size_t>(E_));
  key_.resize(static_cast<size_t>(E_));
  sorted_.resize(static_cast<size_t>(E_));
  recorded_.resize(static_cast<size_t>(E_));
}

std::string TailCompleter::describe() const {
  std::string s = "{\"model\":\"" + spec_.model + "\",\"prior\":\"" + spec_.prior +
                  "\",\"seed\":" + std::to_string(spec_.seed);
  if (spec_.model == "mass") s += ",\"noise\":" + num(spec_.noise);
  if (spec_.model == "profile") {
    s += ",\"layers\":[";
    for (size_t l = 0; l < fits_.size(); ++l)
      s += std::string(l ? "," : "") + "{\"slope\":" + num(fits_[l].slope) +
           ",\"spread\":" + num(fits_[l].spread) +
           ",\"rows_fitted\":" + std::to_string(fits_[l].rows_fitted) + "}";
    s += "]";
  }
  return s + "}";
}

void TailCompleter::complete(int32_t layer, int64_t row, const int32_t* ids, const float* weights,
                             float* out) {
  std::fill(recorded_.begin(), recorded_.end(), char{0});
  int32_t n = 0;
  for (; n < k_ && ids[n] >= 0; ++n) {
    out[ids[n]] = static_cast<float>(
        std::log(std::max(static_cast<double>(std::max(0.f, weights[n])), kTiny)));
    recorded_[static_cast<size_t>(ids[n])] = 1;
  }
  tail_.clear();
  for (int32_t e = 0; e < E_; ++e)
    if (!recorded_[static_cast<size_t>(e)]) tail_.push_back(e);
  if (spec_.model == "mass")
    complete_mass(layer, row, n, out);
  else
    complete_profile(layer, row, n, out);
  // Shift to a median of 0: softmax is unchanged, and routers that read the logit level (ReLU,
  // sigmoid) see the recorded experts above 0 and most of the tail below.
  std::copy(out, out + E_, sorted_.begin());
  auto mid = sorted_.begin() + E_ / 2;
  std::nth_element(sorted_.begin(), mid, sorted_.end());
  const float median = *mid;
  for (int32_t e = 0; e < E_; ++e) out[e] -= median;
}

// The residual mass 1 - sum(p) over the tail, in shares proportional to prior * lognormal noise,
// each capped strictly below the smallest recorded probability (water-filling: a capped share's
// excess goes to the others in proportion).
void TailCompleter::complete_mass(int32_t layer, int64_t row, int32_t n, float* out) {
  const TailLayerFit& fit = fits_[static_cast<size_t>(layer)];
  double sum = 0, p_min = std::numeric_limits<double>::infinity();
  for (int32_t e = 0; e < E_; ++e)
    if (recorded_[static_cast<size_t>(e)]) {
      const double p = std::exp(static_cast<double>(out[e]));
      sum += p;
      p_min = std::min(p_min, p);
    }
  const double rest = std::max(0.0, 1.0 - sum);
  const double cap = n > 0 ? p_min * kBelowMin : std::numeric_limits<double>::infinity();
  const size_t m = tail_.size();
  if (m == 0) return;
  const uint64_t key = rng::key(spec_.seed, kMassStream, static_cast<uint64_t>(layer),
                                static_cast<uint64_t>(row));
  double free_weight = 0;
  for (size_t i = 0; i < m; ++i) {
    const int32_t e = tail_[i];
    double lw = fit.log_prior[static_cast<size_t>(e)];
    if (spec_.noise > 0) lw += spec_.noise * rng::normal(key, static_cast<uint64_t>(e));
    key_[i] = std::exp(lw);
    share_[i] = -1;  // not capped yet
    free_weight += key_[i];
  }
  double left = rest;
  for (size_t round = 0; round <= m; ++round) {  // each round caps at least one share, or ends
    bool capped = false;
    double next_free = 0, next_left = left;
    for (size_t i = 0; i < m; ++i) {
      if (share_[i] >= 0) continue;
      if (left * key_[i] / free_weight >= cap) {
        share_[i] = cap;
        next_left -= cap;
        capped = true;
      } else {
        next_free += key_[i];
      }
    }
    left = std::max(0.0, next_left);
    free_weight = next_free;
    if (!capped || free_weight <= 0) break;
  }
  for (size_t i = 0; i < m; ++i) {
    const double q = share_[i] >= 0 ? share_[i] : left * key_[i] / free_weight;
    out[tail_[i]] = static_cast<float>(std::log(std::max(q, kTiny)));
  }
}

// The tail experts in a Plackett-Luce order drawn from the prior (prior * Gumbel keys), their
// log-weights continuing the layer's fitted decay from the last recorded one, with per-rank noise
// of the fitted spread, kept strictly decreasing so that the drawn order is the logit order.
void TailCompleter::complete_profile(int32_t layer, int64_t row, int32_t n, float* out) {
  const TailLayerFit& fit = fits_[static_cast<size_t>(layer)];
  const size_t m = tail_.size();
  if (m == 0) return;
  const uint64_t order_key = rng::key(spec_.seed, kOrderStream, static_cast<uint64_t>(layer),
                                      static_cast<uint64_t>(row));
  const uint64_t noise_key = rng::key(spec_.seed, kNoiseStream, static_cast<uint64_t>(layer),
                                      static_cast<uint64_t>(row));
  for (int32_t e : tail_)
    key_[static_cast<size_t>(e)] =
        fit.log_prior[static_cast<size_t>(e)] + rng::gumbel(order_key, static_cast<uint64_t>(e));
  std::sort(tail_.begin(), tail_.end(), [&](int32_t a, int32_t b) {
    const double ka = key_[static_cast<size_t>(a)], kb = key_[static_cast<size_t>(b)];
    return ka != kb ? ka > kb : a < b;
  });
  double last = 0;  // a row with nothing recorded starts at 0
  if (n > 0) {
    last = std::numeric_limits<double>::infinity();
    for (int32_t e = 0; e < E_; ++e)
      if (recorded_[static_cast<size_t>(e)]) last = std::min(last, static_cast<double>(out[e]));
  }
  const double anchor = last;
  for (size_t i = 0; i < m; ++i) {
    double z = anchor + fit.slope * static_cast<double>(i + 1);
    if (fit.spread > 0) z += fit.spread * rng::normal(noise_key, i);
    // Strictly below the previous one, by a step that survives the float cast and the shift.
    if (i > 0 || n > 0) z = std::min(z, last - kOrderStep);
    out[tail_[i]] = static_cast<float>(z);
    last = z;
  }
}

}  // namespace moe
