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

constexpr double kTiny = 1e-30;  // the smallest share a tail expert gets
constexpr double kBelowMin =
    1.0 - 1.0 / 1024;                // tail shares stay strictly below the smallest recorded
constexpr double kOrderStep = 1e-3;  // profile: the least gap between tail logits
constexpr uint64_t kMassStream = 0x6d617373;   // "mass"
constexpr uint64_t kOrderStream = 0x6f726472;  // "ordr"
constexpr uint64_t kNoiseStream = 0x6e6f6973;  // "nois"

// Standard-normal noise, quantised: a 12-bit uniform level q stands for the normal quantile at
// (q + 0.5) / 1024, so one 64-bit draw gives six independent values (small tables, built once,
// that stay in L1).
constexpr int kNoiseBits = 10;
constexpr size_t kNoiseLevels = size_t{1} << kNoiseBits;
constexpr int kNoisePerDraw = 64 / kNoiseBits;
double normal_quantile(double p) {  // bisection on the CDF 0.5 erfc(-x / sqrt 2)
  double lo = -12, hi = 12;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}
// The noise levels of experts (or ranks) 0..n-1 of one stream.
void noise_levels(uint64_t key, size_t n, std::vector<uint16_t>& out) {
  out.resize(n);
  for (size_t d = 0; d * kNoisePerDraw < n; ++d) {
    uint64_t bits = rng::bits(key, d);
    for (size_t j = d * kNoisePerDraw; j < std::min(n, (d + 1) * kNoisePerDraw); ++j) {
      out[j] = static_cast<uint16_t>(bits & (kNoiseLevels - 1));
      bits >>= kNoiseBits;
    }
  }
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// Rows of a layer with k positive weights: the mean and the second moment of log(w_r) - log(w_1)
// for ranks r = 2..k, pooled over the rows; the least-squares slope through the origin and the
// spread of the residuals. `load` (when given): the layer's recorded assignments per expert,
// counted in the same pass.
void fit_profile(TraceReader& reader, int32_t layer, TailLayerFit& fit,
                 std::vector<int64_t>* load) {
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
    if (load)
      for (int32_t e : ids)
        if (e >= 0) ++(*load)[static_cast<size_t>(e)];
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
    throw InputError(where +
                     ": the trace holds full logits; completion applies to assignment "
                     "traces only (drop --trace-tail)");
  if (spec.model == "mass" && h.weights_are != "probabilities")
    throw InputError(where +
                     " needs weights that are probabilities over all experts (weights_are "
                     "= " +
                     h.weights_are + "); use --trace-tail profile");
  if (spec.model == "profile" && h.top_k < 2)
    throw InputError(where +
                     " fits the decay over ranks 1..k and needs k >= 2 (the trace has k = " +
                     std::to_string(h.top_k) + "); use --trace-tail mass");
  if (!(spec.noise >= 0) || !std::isfinite(spec.noise))
    throw InputError("--tail-noise: must be finite and >= 0 (got " + num(spec.noise) + ")");
  E_ = h.num_experts;
  k_ = h.top_k;
  fits_.resize(static_cast<size_t>(h.num_layers));
  // Popularity: the recorded demand per expert, counted by the profile fit's pass over the trace
  // when there is one, else by a pass of its own.
  const bool popularity = spec.prior == "popularity";
  std::vector<std::vector<int64_t>> loads;
  if (popularity && spec.model != "profile")
    loads = trace_expert_loads(reader, k_);
  else if (popularity)
    loads.assign(static_cast<size_t>(h.num_layers),
                 std::vector<int64_t>(static_cast<size_t>(E_), 0));
  for (int32_t l = 0; l < h.num_layers; ++l) {
    TailLayerFit& fit = fits_[static_cast<size_t>(l)];
    if (spec.model == "profile")
      fit_profile(reader, l, fit, popularity ? &loads[static_cast<size_t>(l)] : nullptr);
    fit.log_prior.assign(static_cast<size_t>(E_), 0.0);
    if (!loads.empty()) {  // popularity: log of (demand + 1), relative to the mean
      const auto& load = loads[static_cast<size_t>(l)];
      const double mean =
          static_cast<double>(std::accumulate(load.begin(), load.end(), int64_t{0})) / E_ + 1.0;
      for (int32_t e = 0; e < E_; ++e)
        fit.log_prior[static_cast<size_t>(e)] =
            std::log((static_cast<double>(load[static_cast<size_t>(e)]) + 1.0) / mean);
    }
  }
  for (auto& fit : fits_) {
    fit.prior.resize(static_cast<size_t>(E_));
    for (int32_t e = 0; e < E_; ++e)
      fit.prior[static_cast<size_t>(e)] = std::exp(fit.log_prior[static_cast<size_t>(e)]);
    fit.order.resize(static_cast<size_t>(E_));
    std::iota(fit.order.begin(), fit.order.end(), 0);
    std::stable_sort(fit.order.begin(), fit.order.end(), [&](int32_t a, int32_t b) {
      return fit.log_prior[static_cast<size_t>(a)] > fit.log_prior[static_cast<size_t>(b)];
    });
  }
  std_normal_.resize(kNoiseLevels);
  log_noise_.resize(kNoiseLevels);
  noise_.resize(kNoiseLevels);
  for (size_t q = 0; q < kNoiseLevels; ++q) {
    const double z = normal_quantile((static_cast<double>(q) + 0.5) / kNoiseLevels);
    std_normal_[q] = static_cast<float>(z);
    log_noise_[q] = static_cast<float>(spec.noise * z);
    noise_[q] = static_cast<float>(std::exp(spec.noise * z));
  }
  tail_.reserve(static_cast<size_t>(E_));
  capped_.resize(static_cast<size_t>(E_));
  recorded_w_.resize(static_cast<size_t>(std::max(k_, 1)));
  share_.resize(static_cast<size_t>(E_));
  key_.resize(static_cast<size_t>(E_));
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
    const double w = std::max(static_cast<double>(std::max(0.f, weights[n])), kTiny);
    out[ids[n]] = static_cast<float>(std::log(w));
    recorded_w_[static_cast<size_t>(n)] = w;
    recorded_[static_cast<size_t>(ids[n])] = 1;
  }
  if (spec_.model == "mass")
    complete_mass(layer, row, n, out);
  else
    complete_profile(layer, row, n, out);
  // Shift to a mean of 0: softmax is unchanged, and routers that read the logit level (ReLU,
  // sigmoid) see the recorded experts above 0 and most of the tail below.
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int32_t e4 = 0;
  for (; e4 + 4 <= E_; e4 += 4) {
    a0 += out[e4];
    a1 += out[e4 + 1];
    a2 += out[e4 + 2];
    a3 += out[e4 + 3];
  }
  for (; e4 < E_; ++e4) a0 += out[e4];
  const float mean = ((a0 + a1) + (a2 + a3)) / static_cast<float>(E_);
  for (int32_t e = 0; e < E_; ++e) out[e] -= mean;
}

// The residual mass 1 - sum(p) over the tail, in shares proportional to prior * lognormal noise,
// each capped strictly below the smallest recorded probability (water-filling: a capped share's
// excess goes to the others in proportion). Worked in the log domain: one exp-table lookup per
// expert, no transcendental function per expert.
void TailCompleter::complete_mass(int32_t layer, int64_t row, int32_t n, float* out) {
  const TailLayerFit& fit = fits_[static_cast<size_t>(layer)];
  double sum = 0, p_min = std::numeric_limits<double>::infinity();
  for (int32_t j = 0; j < n; ++j) {
    sum += recorded_w_[static_cast<size_t>(j)];
    p_min = std::min(p_min, recorded_w_[static_cast<size_t>(j)]);
  }
  if (n == E_) return;
  const double rest = std::max(0.0, 1.0 - sum);
  const double cap = n > 0 ? p_min * kBelowMin : std::numeric_limits<double>::infinity();
  const uint64_t key =
      rng::key(spec_.seed, kMassStream, static_cast<uint64_t>(layer), static_cast<uint64_t>(row));
  noise_levels(key, static_cast<size_t>(E_), levels_);
  // The tail's weights (log and linear; a recorded expert weighs 0), then the water level:
  // shares = min(cap, weight * level) summing to `rest`. Each round caps every share above the
  // cap at the current level (the level only rises, so the capped set only grows) until none is
  // above. Sums use four accumulators (no serial chain of dependent additions).
  const size_t E = static_cast<size_t>(E_);
  const double* log_prior = fit.log_prior.data();
  const double* prior = fit.prior.data();
  const char* rec = recorded_.data();
  const uint16_t* lv = levels_.data();
  double* lw = key_.data();
  double* w = share_.data();
  char* capped = capped_.data();
  // Sum of f(e) over the experts in four independent chains.
  auto sum4 = [E](auto&& f) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t e = 0;
    for (; e + 4 <= E; e += 4) {
      a0 += f(e);
      a1 += f(e + 1);
      a2 += f(e + 2);
      a3 += f(e + 3);
    }
    for (; e < E; ++e) a0 += f(e);
    return (a0 + a1) + (a2 + a3);
  };
  double free_weight = sum4([&](size_t e) {
    lw[e] = log_prior[e] + static_cast<double>(log_noise_[lv[e]]);
    w[e] = rec[e] ? 0.0 : prior[e] * static_cast<double>(noise_[lv[e]]);
    capped[e] = 0;
    return w[e];
  });
  double left = rest;
  while (left > 0 && free_weight > 0) {
    const double limit = cap * free_weight / left;  // a weight at or above it would exceed the cap
    int32_t newly = 0;
    const double next_free = sum4([&](size_t e) {
      const int c = (capped[e] == 0) & (w[e] > 0) & (w[e] >= limit);
      capped[e] = static_cast<char>(capped[e] | c);
      newly += c;
      return capped[e] ? 0.0 : w[e];
    });
    if (newly == 0) break;
    left = std::max(0.0, left - newly * cap);
    free_weight = next_free;
  }
  const float log_cap = static_cast<float>(std::log(std::max(cap, kTiny)));
  const double log_scale = std::log(std::max(left, kTiny)) - std::log(std::max(free_weight, kTiny));
  const float floor = static_cast<float>(std::log(kTiny));
  for (size_t e = 0; e < E; ++e) {
    const float tail = capped[e] ? log_cap : std::max(floor, static_cast<float>(log_scale + lw[e]));
    out[e] = rec[e] ? out[e] : tail;
  }
}

// The tail experts in the prior's order (popularity: the layer's demand order; uniform: a random
// permutation per token), their log-weights continuing the layer's fitted decay from the last
// recorded one, with per-rank noise of the fitted spread (which may swap neighbours), every one
// below the smallest recorded.
void TailCompleter::complete_profile(int32_t layer, int64_t row, int32_t n, float* out) {
  const TailLayerFit& fit = fits_[static_cast<size_t>(layer)];
  tail_.clear();
  for (int32_t e : fit.order)
    if (!recorded_[static_cast<size_t>(e)]) tail_.push_back(e);
  const size_t m = tail_.size();
  if (m == 0) return;
  const uint64_t order_key =
      rng::key(spec_.seed, kOrderStream, static_cast<uint64_t>(layer), static_cast<uint64_t>(row));
  if (spec_.prior == "uniform")  // Fisher-Yates
    for (size_t i = m - 1; i > 0; --i) {
      const uint64_t r = rng::bits(order_key, i);
      const size_t j = static_cast<size_t>((r >> 11) % (i + 1));  // bias < 2^-40
      std::swap(tail_[i], tail_[j]);
    }
  const uint64_t noise_key =
      rng::key(spec_.seed, kNoiseStream, static_cast<uint64_t>(layer), static_cast<uint64_t>(row));
  double anchor = 0;  // a row with nothing recorded starts at 0
  if (n > 0) {
    anchor = std::numeric_limits<double>::infinity();
    for (int32_t e = 0; e < E_; ++e)
      if (recorded_[static_cast<size_t>(e)]) anchor = std::min(anchor, static_cast<double>(out[e]));
  }
  const double top = n > 0 ? anchor - kOrderStep : std::numeric_limits<double>::infinity();
  if (fit.spread > 0) noise_levels(noise_key, m, levels_);
  for (size_t i = 0; i < m; ++i) {
    double z = anchor + fit.slope * static_cast<double>(i + 1);
    if (fit.spread > 0) z += fit.spread * std_normal_[levels_[i]];
    out[tail_[i]] = static_cast<float>(std::min(z, top));
  }
}

}  // namespace moe
