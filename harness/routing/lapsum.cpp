// LapSum soft top-k routing (the "SoftMoE" of Zasada et al., not Puigcerver's), ROUTERS.md §6.
//
// Per token and layer l (causal: no batch-wide fact is needed to route):
//   p_i = F((r_i - b) / alpha), F the unit Laplace CDF, b such that sum_i p_i = k_l
// solved exactly with the closed form of §6 (harness/routing/lapsum.hpp: the quadratic in e^b on
// the segment between two knots). Plan: every expert with p_i >= tau (and p_i > 0), best first (by
// logit, which is the order of p; equal logits: lower index first), combine weight p_i. Weights
// below tau are set to 0 and not sent; the kept weights are not renormalised.
//
// Knobs (defaults):
//   alpha      = 0.05     [pick] Laplace scale in logit units, > 0. Smaller: closer to hard top-k.
//                         ROUTERS.md §6: the mean count is ~k_l only when alpha is small against the
//                         logit gaps; with tau = 0.01, alpha = 0.5 kept ~28-41 of 64 experts per
//                         token (k = 6) on N(0,1) and zipf logits, 0.05 keeps ~7.7 on zipf.
//   tau        = 0.01     [pick, §6] truncation threshold in [0, 1).
//   k_profile  = uniform  k_l per layer: uniform (k_l = k) | rising (k_l = 2k(l+1)/(L+1), linear in
//                         depth with sum_l k_l = L k, then clamped to [1e-3, E - 1e-3]) | a
//                         comma-separated list of L reals in (0, E) whose sum equals L k within
//                         1e-6. Every k_l must lie in (0, E) (so uniform needs k < E).
// Solver [pick]: no sort. The segment of the root is found by a monotone walk over segments (each
// step one O(E) vectorised pass and the segment's quadratic); with a common shift by the row's max
// when the scaled logits span at most 690 (no exponential can under- or overflow), else with the
// sums shifted to each segment's own knots; the sorted closed form of §6
// (lapsum::threshold_sorted) is the last resort. All three are the same closed form (details in
// lapsum.hpp).
// Logits must be finite (an Error otherwise).
//
// Figures (per step and layer, global over the EP group):
//   k_layer: the k_l used at this layer (the expected number of experts before truncation).
//   mean_active_experts: kept (token, expert) pairs / tokens, before capacity.
//   mass_truncated: mean over tokens of the p mass below tau (the sum of the dropped p_i), summed
//     per EP rank in token order, then over ranks in rank order (ordered_rank_sum).
#include "harness/routing/lapsum.hpp"

// Vector types cross only always-inlined functions of this file (and are passed by reference).
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/rank_desc.hpp"
#include "harness/routing/router.hpp"

namespace moe {
namespace lapsum {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kLanes = 4;             // doubles per vector; rows are padded to a multiple of this
constexpr double kMaxSpread = 690.0;  // common shift: e^-690 * E^2 stays far from under/overflow
using vd = double __attribute__((vector_size(32)));
using vl = int64_t __attribute__((vector_size(32)));

// exp(x) for x <= 0 in double: round x / ln 2 with the 1.5 * 2^52 trick (the integer lands in the
// low bits), reduce by n ln 2 in two parts to |r| <= 0.347, Taylor polynomial of degree 11
// evaluated by Estrin's scheme (short dependency chains; truncation error < 1e-14 relative), scale
// by 2^n built in the exponent bits. x is clamped to -708 so that 2^n stays normal.
template <class V, class I>
[[gnu::always_inline]] inline V exp_np(const V& x_in) {
  const V lo = V{} - 708.0;
  const V x = x_in < lo ? lo : x_in;
  constexpr double kShift = 0x1.8p52;
  const V kt = x * 1.4426950408889634074 + kShift;
  const V n = kt - kShift;
  const V r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  const V r2 = r * r;
  const V r4 = r2 * r2;
  const V r8 = r4 * r4;
  const V q0 = r + 1.0;
  const V q1 = r * (1.0 / 6.0) + 0.5;
  const V q2 = r * (1.0 / 120.0) + (1.0 / 24.0);
  const V q3 = r * (1.0 / 5040.0) + (1.0 / 720.0);
  const V q4 = r * (1.0 / 362880.0) + (1.0 / 40320.0);
  const V q5 = r * (1.0 / 39916800.0) + (1.0 / 3628800.0);
  const V p = (q0 + q1 * r2) + (q2 + q3 * r2) * r4 + (q4 + q5 * r2) * r8;
  I bits;
  std::memcpy(&bits, &kt, sizeof bits);
  bits = (bits + 1023) << 52;
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

[[gnu::always_inline]] inline double exp_np_scalar(double x) {
  using v1 = double __attribute__((vector_size(8)));
  using i1 = int64_t __attribute__((vector_size(8)));
  return exp_np<v1, i1>(v1{x})[0];
}

template <class V>
[[gnu::always_inline]] inline V load(const double* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(double* p, const vd& v) {
  std::memcpy(p, &v, sizeof v);
}

int32_t padded(int32_t E) {
  return (E + kLanes - 1) / kLanes * kLanes;
}

// Horizontal reductions of 4 lanes by halving shuffles (short chains); every lane gets the result.
template <class V>
[[gnu::always_inline]] inline V all_sum(const V& x) {
  V v = x + __builtin_shuffle(x, vl{2, 3, 0, 1});
  return v + __builtin_shuffle(v, vl{1, 0, 3, 2});
}
[[gnu::always_inline]] inline vd all_max(const vd& x) {
  vd u = __builtin_shuffle(x, vl{2, 3, 0, 1});
  const vd v = u > x ? u : x;
  u = __builtin_shuffle(v, vl{1, 0, 3, 2});
  return u > v ? u : v;
}
[[gnu::always_inline]] inline vd all_min(const vd& x) {
  vd u = __builtin_shuffle(x, vl{2, 3, 0, 1});
  const vd v = u < x ? u : x;
  u = __builtin_shuffle(v, vl{1, 0, 3, 2});
  return u < v ? u : v;
}

// s[j] = r[j] / alpha (as r[j] * inv_alpha), NaN padded to a multiple of kLanes.
[[gnu::always_inline]] inline void scale_row(const float* r, int32_t E, double inv_alpha,
                                             double* s) {
  for (int32_t j = 0; j < E; ++j) s[j] = static_cast<double>(r[j]) * inv_alpha;
  for (int32_t j = E; j < padded(E); ++j) s[j] = kNaN;
}

// Root of L(beta) = w on the segment with m knots at or below it, the largest of them a with
// A = sum_{below} e^(s - a) >= 1, the smallest above c with B = sum_{above} e^(c - s) >= 1:
//   L = m - A e^(a - beta) / 2 + B e^(beta - c) / 2.
// Shifted to whichever knot keeps the quadratic free of cancellation and overflow.
[[gnu::always_inline]] inline double solve_segment(int32_t m, int32_t E, double k, double a,
                                                   double A, double c, double B) {
  const double w = E - k;
  if (m == 0) return c + std::log(2.0 * w / B);
  if (m == E) return a + std::log(A / (2.0 * k));
  const double cc = m - w;
  const double d = c - a;
  if (cc < 0) {  // root in the upper part: v = e^(beta - c), B v^2 + 2 cc v - A e^-d = 0
    const double g = A * exp_np_scalar(-d);
    return c + std::log((-cc + std::sqrt(cc * cc + B * g)) / B);
  }
  if (cc > 0) {  // u = e^(beta - a), B e^-d u^2 + 2 cc u - A = 0
    const double g = B * exp_np_scalar(-d);
    return a + std::log(A / (cc + std::sqrt(cc * cc + g * A)));
  }
  return 0.5 * (a + c) + 0.5 * std::log(A / B);  // cc == 0: u^2 = A e^d / B
}

// ---- Knot-shifted walk (any range)
// ----------------------------------------------------------------

struct Segment {
  int32_t below = 0;
  double a = -kInf, A = 0, c = kInf, B = 0;
};

// One pass at `pivot` over s[0..P) (NaN padded): knots a <= pivot < c, the count at or below, the
// knot-shifted sums, and e[j] = e^-|s_j - knot| for the side of j.
[[gnu::always_inline]] inline Segment knot_pass(const double* s, int32_t P, double pivot,
                                                double* e) {
  const vd vp = vd{} + pivot, ninf = vd{} - kInf, pinf = vd{} + kInf;
  vd amax = ninf, bmin = pinf;
  vl cnt = vl{};
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd x = load<vd>(s + j);
    const vl below = x <= vp;
    const vd xb = below ? x : ninf;     // off the loop-carried chains,
    const vd xa = (x > vp) ? x : pinf;  // which are then one max / min each
    amax = xb > amax ? xb : amax;
    bmin = xa < bmin ? xa : bmin;
    cnt -= below;
  }
  Segment g;
  g.a = all_max(amax)[0];
  g.c = all_min(bmin)[0];
  g.below = static_cast<int32_t>(all_sum(cnt)[0]);
  vd sa = vd{}, sb = vd{};
  const vd va = vd{} + g.a, vc = vd{} + g.c;
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd x = load<vd>(s + j);
    const vl below = x <= vp;
    const vl above = x > vp;
    const vd ex = exp_np<vd, vl>(below ? x - va : vc - x);
    store(e + j, ex);
    sa += below ? ex : vd{};
    sb += above ? ex : vd{};
  }
  g.A = all_sum(sa)[0];
  g.B = all_sum(sb)[0];
  return g;
}

// The walk from pivot +inf (every knot below: the exact answer max s + ln(A / 2k) in the dense
// regime), then p (padding 0). passes = -1 when it does not settle (non-finite scores).
[[gnu::always_inline]] inline Walk walk_knots(const double* s, int32_t E, double k, double* e,
                                              double* p) {
  const int32_t P = padded(E);
  Walk w;
  w.method = Method::knot_shift;
  double pivot = kInf;
  int dir_prev = 0;
  bool settled = false;
  Segment g;
  for (int32_t pass = 1; pass <= E + 2 && !settled; ++pass) {
    g = knot_pass(s, P, pivot, e);
    double beta = solve_segment(g.below, E, k, g.a, g.A, g.c, g.B);
    w.passes = pass;
    if (!std::isfinite(beta) || !std::isfinite(g.A + g.B)) break;
    settled = beta >= g.a && beta <= g.c;
    if (!settled) {
      const int dir = beta > g.c ? 1 : -1;
      if (dir_prev != 0 && dir != dir_prev) {  // rounding at a shared knot: the root is that knot
        beta = dir > 0 ? g.c : g.a;
        settled = true;
      }
      dir_prev = dir;
    }
    w.beta = beta;
    pivot = beta;
  }
  if (!settled) {
    w.passes = -1;
    return w;
  }
  // p_j = e^(s_j - a) e^(a - beta) / 2 at or below a, 1 - e^(c - s_j) e^(beta - c) / 2 above.
  const double fa = std::isfinite(g.a) ? 0.5 * exp_np_scalar(g.a - w.beta) : 0.0;
  const double fc = std::isfinite(g.c) ? 0.5 * exp_np_scalar(w.beta - g.c) : 0.0;
  const vd va = vd{} + g.a;
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd x = load<vd>(s + j);
    const vd ex = load<vd>(e + j);
    store(p + j, x <= va ? ex * fa : 1.0 - ex * fc);
  }
  for (int32_t j = E; j < P; ++j) p[j] = 0.0;
  return w;
}

// ---- Common-shift walk (spread <= kMaxSpread)
// ------------------------------------------------------

// With y_j = e^(s_j - smax) and z_j = 1 / y_j computed once, t = e^(beta - smax) solves
//   L = m - Y / (2t) + Z t / 2 = E - k,  i.e.  Z t^2 + 2 (m - w) t - Y = 0,
// on the segment whose m knots y <= t give Y = sum y and the others Z = sum z: the §6 quadratic in
// e^b with one shift for the row, so each pass of the walk is compares and adds only. Then
// p_j = y_j / (2t) at or below t, 1 - t z_j / 2 above. passes = -1 when the row's spread exceeds
// kMaxSpread (or a scaled logit is not finite): the caller takes the knot-shifted walk.
[[gnu::always_inline]] inline Walk walk_common(const double* s, int32_t E, double k, double* y,
                                               double* z, double* p, bool want_beta) {
  const int32_t P = padded(E);
  Walk w;
  w.method = Method::common_shift;
  w.passes = -1;
  const vd ninf = vd{} - kInf, pinf = vd{} + kInf;
  vd hi = ninf, lo = pinf;
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd x = load<vd>(s + j);
    hi = x > hi ? x : hi;  // NaN padding never wins
    lo = x < lo ? x : lo;
  }
  const double smax = all_max(hi)[0], smin = all_min(lo)[0];
  if (!(smax - smin <= kMaxSpread)) return w;  // also catches inf and NaN
  const vd vmax = vd{} + smax;
  vd yall = vd{};
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd yj = exp_np<vd, vl>(load<vd>(s + j) - vmax);  // NaN on the padding
    store(y + j, yj);
    store(z + j, 1.0 / yj);
    yall += yj == yj ? yj : vd{};
  }
  // The first pivot, +inf, puts every knot below: m = E and t = Y / 2k, known without a pass. That
  // is the answer when t >= 1 (the largest y); otherwise the walk goes down from there.
  const double wk = E - k;
  double t = all_sum(yall)[0] / (2.0 * k);
  bool settled = t >= 1.0;
  int dir_prev = -1;
  w.passes = 1;
  for (int32_t pass = 2; pass <= E + 2 && !settled; ++pass) {
    const vd vt = vd{} + t;
    vd ys = vd{}, zs = vd{}, ya = ninf, yc = pinf;
    vl cnt = vl{};
    for (int32_t j = 0; j < P; j += kLanes) {
      const vd yj = load<vd>(y + j), zj = load<vd>(z + j);
      const vl below = yj <= vt, above = yj > vt;
      ys += below ? yj : vd{};
      zs += above ? zj : vd{};
      const vd yb = below ? yj : ninf, yu = above ? yj : pinf;
      ya = yb > ya ? yb : ya;
      yc = yu < yc ? yu : yc;
      cnt -= below;
    }
    const double Y = all_sum(ys)[0], Z = all_sum(zs)[0];
    const double a = all_max(ya)[0], c = all_min(yc)[0];
    const double cc = static_cast<double>(all_sum(cnt)[0]) - wk;
    // m = E: Z = 0 and t = Y / 2k; m = 0: Y = 0 and t = 2w / Z.
    const double sq = std::sqrt(cc * cc + Z * Y);
    double t1 = cc >= 0 ? Y / (cc + sq) : (sq - cc) / Z;
    if (!(t1 > 0 && t1 < kInf)) return w;
    settled = t1 >= a && t1 <= c;
    if (!settled) {
      const int dir = t1 > c ? 1 : -1;
      if (dir_prev != 0 && dir != dir_prev) {  // rounding at a shared knot: the root is that knot
        t1 = dir > 0 ? c : a;
        settled = true;
      }
      dir_prev = dir;
    }
    t = t1;
    w.passes = pass;
  }
  if (!settled) {
    w.passes = -1;
    return w;
  }
  const vd vt = vd{} + t, half_inv_t = vd{} + 0.5 / t, half_t = vd{} + 0.5 * t;
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd yj = load<vd>(y + j);
    store(p + j, yj <= vt ? yj * half_inv_t : 1.0 - half_t * load<vd>(z + j));
  }
  for (int32_t j = E; j < P; ++j) p[j] = 0.0;
  w.beta = want_beta ? smax + std::log(t) : kNaN;
  return w;
}

void check_args(int32_t E, double k, double alpha) {
  if (E < 1 || !(k > 0 && k < E) || !(alpha > 0) || !std::isfinite(alpha))
    fail("lapsum: needs E >= 1, 0 < k < E and alpha > 0 (E=" + std::to_string(E) +
         ", k=" + std::to_string(k) + ", alpha=" + std::to_string(alpha) + ")");
}

// The §6 closed form as written: sorted knots, P_j / Q_j prefix and suffix sums shifted to each
// knot, binary search for the segment. scratch: 3E doubles. NaN when a scaled logit is not finite.
double sorted_scaled(const double* s_in, int32_t E, double k, double* scratch) {
  double* s = scratch;
  double* P = s + E;
  double* Q = P + E;
  std::copy(s_in, s_in + E, s);
  std::sort(s, s + E);
  for (int32_t j = 0; j < E; ++j)
    if (!std::isfinite(s[j])) return kNaN;
  P[0] = 1.0;
  for (int32_t j = 1; j < E; ++j) P[j] = 1.0 + P[j - 1] * std::exp(s[j - 1] - s[j]);
  Q[E - 1] = 1.0;
  for (int32_t j = E - 2; j >= 0; --j) Q[j] = 1.0 + Q[j + 1] * std::exp(s[j] - s[j + 1]);
  // 2 L(s_j) = 2j + 1 - P_j + Q_j (0-indexed), non-decreasing in j: m = #knots with L <= w.
  const double w2 = 2.0 * (E - k);
  int32_t lo = 0, hi = E;
  while (lo < hi) {
    const int32_t mid = (lo + hi) / 2;
    if (2.0 * mid + 1.0 - P[mid] + Q[mid] <= w2)
      lo = mid + 1;
    else
      hi = mid;
  }
  const int32_t m = lo;
  if (m == 0) return solve_segment(0, E, k, -kInf, 0.0, s[0], Q[0]);
  if (m == E) return solve_segment(E, E, k, s[E - 1], P[E - 1], kInf, 0.0);
  return solve_segment(m, E, k, s[m - 1], P[m - 1], s[m], Q[m]);
}

[[gnu::always_inline]] inline void probs_direct(const double* s, int32_t E, double beta,
                                                double* p) {
  const int32_t P = padded(E);
  const vd vb = vd{} + beta;
  for (int32_t j = 0; j < P; j += kLanes) {
    const vd x = load<vd>(s + j) - vb;
    const vl neg = x <= vd{};
    const vd ex = exp_np<vd, vl>(neg ? x : -x);
    store(p + j, neg ? 0.5 * ex : 1.0 - 0.5 * ex);
  }
  for (int32_t j = E; j < P; ++j) p[j] = 0.0;
}

// Row buffers inside a Workspace: s, e (or y), z, p, each padded(E) doubles, then 3E for the sort.
struct Rows {
  double* s;
  double* e;
  double* z;
  double* p;
  double* sorted;
};
Rows rows_of(Workspace& ws, int32_t E) {  // ws must have been through prepare(ws, E)
  const size_t P = static_cast<size_t>(padded(E));
  double* d = ws.d.data();
  return {d, d + P, d + 2 * P, d + 3 * P, d + 4 * P};
}
Rows prepare(Workspace& ws, int32_t E) {
  const size_t P = static_cast<size_t>(padded(E));
  if (ws.d.size() < 4 * P + 3 * static_cast<size_t>(E))
    ws.d.resize(4 * P + 3 * static_cast<size_t>(E));
  return rows_of(ws, E);
}

// Everything for one row: s, the threshold and p[0..padded(E)) (padding 0), by `method`
// (common_shift falls back to knot_shift out of its range), then the sorted closed form if the walk
// does not settle. Non-finite scores give a NaN beta with passes = -1; nothing here throws or
// allocates (the target_clones callers must not: GCC 12 treats them as nothrow).
[[gnu::always_inline]] inline Walk solve_row(const float* r, int32_t E, double k, double inv_alpha,
                                             const Rows& b, Method method, bool want_beta) {
  scale_row(r, E, inv_alpha, b.s);
  Walk w;
  w.passes = -1;
  if (method == Method::common_shift) w = walk_common(b.s, E, k, b.e, b.z, b.p, want_beta);
  if (w.passes < 0) w = walk_knots(b.s, E, k, b.e, b.p);
  if (w.passes < 0) {
    w.beta = sorted_scaled(b.s, E, k, b.sorted);
    w.fallback = true;
    if (std::isfinite(w.beta)) probs_direct(b.s, E, w.beta, b.p);
  }
  return w;
}

__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) Walk solve_row_clone(
    const float* r, int32_t E, double k, double inv_alpha, const Rows& b, Method method) {
  return solve_row(r, E, k, inv_alpha, b, method, true);
}

}  // namespace

double laplace_cdf(double x) {
  return x <= 0 ? 0.5 * std::exp(x) : 1.0 - 0.5 * std::exp(-x);
}

double exp_nonpositive_d(double x) {
  return exp_np_scalar(x);
}

double threshold_sorted(const float* r, int32_t E, double k, double alpha, Workspace& ws) {
  check_args(E, k, alpha);
  const Rows b = prepare(ws, E);
  scale_row(r, E, 1.0 / alpha, b.s);
  return sorted_scaled(b.s, E, k, b.sorted);
}

Walk soft_topk(const float* r, int32_t E, double k, double alpha, Workspace& ws, double* p,
               Method method) {
  check_args(E, k, alpha);
  const Rows b = prepare(ws, E);
  const Walk w = solve_row_clone(r, E, k, 1.0 / alpha, b, method);
  if (!std::isfinite(w.beta)) fail("lapsum: non-finite scores (logits / alpha)");
  std::copy(b.p, b.p + E, p);
  return w;
}

void probabilities(const float* r, int32_t E, double alpha, double beta, double* p) {
  Workspace ws;
  const Rows b = prepare(ws, E);
  scale_row(r, E, 1.0 / alpha, b.s);
  probs_direct(b.s, E, beta, b.p);
  std::copy(b.p, b.p + E, p);
}

}  // namespace lapsum

namespace {

using lapsum::Walk;

constexpr int64_t kBlock = 64;  // tokens per call of route_block

// kCompress[bits] lists the set bits of a 4-bit mask, lowest first.
using vi4 = int32_t __attribute__((vector_size(16)));
constexpr vi4 kCompress[16] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0},
                               {2, 0, 0, 0}, {0, 2, 0, 0}, {1, 2, 0, 0}, {0, 1, 2, 0},
                               {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
                               {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};

// Buffers of route_block, sized by the caller (route_block allocates nothing).
struct RowBuffers {
  lapsum::Workspace ws;
  std::vector<int32_t> ki;  // kept expert ids of one token, ascending
  std::vector<float> kv;    // their logits
  std::vector<int32_t> rank;
  std::vector<int32_t> order;
  std::vector<int32_t> out_e;  // [kBlock * E] the block's plan entries
  std::vector<float> out_w;
  std::vector<int32_t> count;  // [kBlock] experts per token
  std::vector<double> mass;    // [kBlock] truncated mass per token
  void size(int32_t E) {
    lapsum::prepare(ws, E);
    ki.resize(static_cast<size_t>(lapsum::padded(E)) + 4);
    kv.resize(static_cast<size_t>(E) + 16);
    rank.resize(static_cast<size_t>(E) + 16);
    order.resize(static_cast<size_t>(E));
    out_e.resize(static_cast<size_t>(kBlock * E));
    out_w.resize(static_cast<size_t>(kBlock * E));
    count.resize(kBlock);
    mass.resize(kBlock);
  }
};

struct BlockResult {
  int64_t bad_token = -1;  // first token with non-finite logits
};

// Routes tokens [t0, t1) (at most kBlock) into rb.out_e/out_w (packed), rb.count and rb.mass. Must
// not throw or allocate: GCC 12 treats target_clones functions as nothrow.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) BlockResult route_block(
    const float* logits, int64_t t0, int64_t t1, int32_t E, double k, double alpha, double tau,
    RowBuffers& rb) {
  BlockResult res;
  const int32_t P = lapsum::padded(E);
  const double inv_alpha = 1.0 / alpha;
  const lapsum::Rows b = lapsum::rows_of(rb.ws, E);
  const double* p = b.p;
  int32_t* out_e = rb.out_e.data();
  float* out_w = rb.out_w.data();
  for (int64_t t = t0; t < t1; ++t) {
    const float* row = logits + t * E;
    const Walk w = lapsum::solve_row(row, E, k, inv_alpha, b, lapsum::Method::common_shift, false);
    if (w.fallback && !std::isfinite(w.beta)) {
      res.bad_token = t;
      return res;
    }
    // Kept: p >= tau (and p > 0), compacted four at a time through a table of index patterns (the
    // padding has p = 0); the rest is the truncated mass.
    int32_t n = 0;
    lapsum::vd dropped_v = lapsum::vd{};
    const lapsum::vd vtau = lapsum::vd{} + tau;
    for (int32_t j = 0; j < P; j += lapsum::kLanes) {
      const lapsum::vd pj = lapsum::load<lapsum::vd>(p + j);
      const lapsum::vl keep = (pj >= vtau) & (pj > lapsum::vd{});
      dropped_v += keep ? lapsum::vd{} : pj;
      const int32_t bits =
          static_cast<int32_t>((keep[0] & 1) | (keep[1] & 2) | (keep[2] & 4) | (keep[3] & 8));
      const vi4 at = kCompress[bits] + j;
      std::memcpy(rb.ki.data() + n, &at, sizeof at);
      n += std::popcount(static_cast<uint32_t>(bits));
    }
    const double dropped = lapsum::all_sum(dropped_v)[0];
    for (int32_t q = 0; q < n; ++q) rb.kv[q] = row[rb.ki[q]];
    // Best first: by logit (the order of p), equal logits by lower expert index.
    if (rank_desc(rb.kv.data(), n, rb.rank.data())) {
      for (int32_t q = 0; q < n; ++q) {
        out_e[rb.rank[q]] = rb.ki[q];
        out_w[rb.rank[q]] = static_cast<float>(p[rb.ki[q]]);
      }
    } else {
      int32_t* order = rb.order.data();
      std::iota(order, order + n, 0);
      std::stable_sort(order, order + n, [&](int32_t x, int32_t y) { return rb.kv[x] > rb.kv[y]; });
      for (int32_t q = 0; q < n; ++q) {
        out_e[q] = rb.ki[order[q]];
        out_w[q] = static_cast<float>(p[rb.ki[order[q]]]);
      }
    }
    out_e += n;
    out_w += n;
    rb.count[t - t0] = n;
    rb.mass[t - t0] = dropped;
  }
  return res;
}

std::vector<double> parse_profile(const std::string& profile, int32_t L, int32_t E, int32_t k) {
  const std::string where = "router-arg lapsum.k_profile: ";
  std::vector<double> kl(static_cast<size_t>(std::max(L, 1)), static_cast<double>(k));
  if (profile == "uniform") {
  } else if (profile == "rising") {
    const double Ld = static_cast<double>(kl.size());
    for (size_t l = 0; l < kl.size(); ++l)
      kl[l] = std::clamp(2.0 * k * static_cast<double>(l + 1) / (Ld + 1.0), 1e-3, E - 1e-3);
  } else {
    std::vector<double> v;
    std::stringstream ss(profile);
    std::string item;
    while (std::getline(ss, item, ',')) {
      size_t used = 0;
      double x = 0;
      try {
        x = std::stod(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      while (used < item.size() && item[used] == ' ') ++used;
      if (item.empty() || used != item.size() || !std::isfinite(x))
        throw InputError(where + "'" + item + "' is not a number (uniform | rising | a list of " +
                         std::to_string(L) + " reals)");
      v.push_back(x);
    }
    if (static_cast<int32_t>(v.size()) != L)
      throw InputError(where + "has " + std::to_string(v.size()) + " values for " +
                       std::to_string(L) + " layers");
    double sum = 0;
    for (double x : v) sum += x;
    if (std::abs(sum - static_cast<double>(L) * k) > 1e-6)
      throw InputError(where + "the values sum to " + std::to_string(sum) +
                       ", not layers x top_k = " + std::to_string(static_cast<double>(L) * k));
    kl = v;
  }
  for (size_t l = 0; l < kl.size(); ++l)
    if (!(kl[l] > 0 && kl[l] < E))
      throw InputError(where + "k for layer " + std::to_string(l) + " is " + std::to_string(kl[l]) +
                       "; LapSum needs 0 < k_l < E = " + std::to_string(E));
  return kl;
}

class LapSum final : public Router {
 public:
  LapSum(const RouterSetup& setup, ComponentArgs& args)
      : alpha_(args.get_double("alpha", 0.05)),
        tau_(args.get_double("tau", 0.01)),
        k_layer_(parse_profile(args.get_string("k_profile", "uniform"), setup.num_layers,
                               setup.num_experts, setup.top_k)) {
    if (!(alpha_ > 0))
      throw InputError("router-arg lapsum.alpha: must be > 0 (got " + std::to_string(alpha_) + ")");
    if (!(tau_ >= 0 && tau_ < 1))
      throw InputError("router-arg lapsum.tau: must be in [0, 1) (got " + std::to_string(tau_) +
                       ")");
  }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    const int64_t T = batch.num_tokens;
    const int32_t E = batch.num_experts;
    if (batch.layer < 0 || batch.layer >= static_cast<int32_t>(k_layer_.size()))
      fail("lapsum: layer " + std::to_string(batch.layer) + " outside the k profile");
    const double k = k_layer_[batch.layer];
    plan.reset(T, E,
               static_cast<int64_t>(static_cast<double>(T) * std::min<double>(E, 4.0 * k + 4.0)));
    rb_.size(E);
    const int32_t ranks_here = batch.ranks_here();
    RankCursor rank_of(batch);
    std::vector<double> rank_mass(static_cast<size_t>(ranks_here), 0.0);
    int64_t kept = 0;
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t t1 = std::min(T, t0 + kBlock);
      const BlockResult res = route_block(batch.logits.data(), t0, t1, E, k, alpha_, tau_, rb_);
      if (res.bad_token >= 0)
        fail("lapsum: non-finite logit in token " +
             std::to_string(batch.first_token + res.bad_token) + " (step " +
             std::to_string(batch.step) + ", layer " + std::to_string(batch.layer) + ")");
      int64_t n = 0;
      for (int64_t t = t0; t < t1; ++t) {
        n += rb_.count[t - t0];
        plan.offsets[t + 1] = plan.offsets[t] + rb_.count[t - t0];
        rank_mass[static_cast<size_t>(rank_of(t))] +=
            rb_.mass[t - t0];  // token order within a rank
      }
      plan.expert.insert(plan.expert.end(), rb_.out_e.begin(), rb_.out_e.begin() + n);
      plan.weight.insert(plan.weight.end(), rb_.out_w.begin(), rb_.out_w.begin() + n);
      kept += n;
    }
    // Figures: integer counts summed, the truncated mass summed per EP rank then over ranks in
    // order.
    int64_t counts[2] = {kept, T};
    group.sum(std::span<int64_t>(counts, 2));
    const double mass_total = ordered_rank_sum(group, rank_mass, 1, ranks_here)[0];
    figures_ = {k,
                counts[1] ? static_cast<double>(counts[0]) / static_cast<double>(counts[1]) : 0.0,
                counts[1] ? mass_total / static_cast<double>(counts[1]) : 0.0};
  }

  std::vector<std::string> figure_names() const override {
    return {"k_layer", "mean_active_experts", "mass_truncated"};
  }
  std::vector<double> figures() const override { return figures_; }
  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

 private:
  double alpha_;
  double tau_;
  std::vector<double> k_layer_;
  RowBuffers rb_;
  std::vector<double> figures_ = {0, 0, 0};
};

const RouterRegistry::Registrar reg(
    "lapsum",
    "LapSum soft top-k per token, p_i = F((z_i - b)/alpha) summing to k_l, experts with p >= tau, "
    "weights p "
    "(alpha=0.05, tau=0.01, k_profile=uniform|rising|k_0,...,k_{L-1})",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> {
      return std::make_unique<LapSum>(s, a);
    });

}  // namespace
}  // namespace moe
