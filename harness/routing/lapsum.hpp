#pragma once
// LapSum soft top-k of one row of scores (ROUTERS.md §6), exposed for the lapsum router and its
// tests.
//
// For scores r[0..E), a real k in (0, E) and a scale alpha > 0: p_i = F(s_i - beta) with s_i = r_i
// / alpha (computed as double(r_i) * (1 / alpha)), F the unit Laplace CDF (F(x) = e^x / 2 for x <=
// 0, 1 - e^-x / 2 above) and beta the unique scaled threshold with sum_i p_i = k. The threshold in
// score units is b = alpha * beta. All arithmetic is double precision.
#include <cstdint>
#include <vector>

namespace moe::lapsum {

// The unit Laplace CDF (double, std::exp).
double laplace_cdf(double x);

// Buffers reused across rows (no allocation once sized).
struct Workspace {
  std::vector<double> d;
};

// Reference closed form, as ROUTERS.md §6 writes it: sort the knots s ascending, prefix and suffix
// sums of exponentials shifted to each knot (P_j = sum_{i<=j} e^(s_i - s_j),
// Q_j = sum_{i>=j} e^(s_j - s_i)), binary search for the segment [s_m, s_m+1] holding the root of
// L(beta) = sum_j F(beta - s_j) = E - k (2 L(s_j) = 2j - 1 - P_j + Q_j, 1-indexed), then the
// quadratic in e^beta solved in a form shifted to a knot. O(E log E). Returns beta. Requires 0 < k
// < E; NaN when a score is not finite.
double threshold_sorted(const float* r, int32_t E, double k, double alpha, Workspace& ws);

// The router's solver: the same closed form without sorting. On the segment between two adjacent
// knots, L is m - A e^-beta / 2 + B e^beta / 2 (m knots below, A = sum_{below} e^s_j,
// B = sum_{above} e^-s_j), so the root of L = E - k solves B y^2 + 2(m - w) y - A = 0 in y =
// e^beta. A walk over segments finds the right one: from a pivot, one vectorised O(E) pass gives m,
// A, B and the two knots around the pivot, and the segment's root; if the root lies outside the
// segment it becomes the next pivot. Outside its segment the segment's formula bounds L from the
// side of the true root, so the walk moves monotonically toward it and settles in at most E+1
// passes (typically 2-4 from the first pivot, +inf, where every knot is below and the root is max s
// + ln(A / 2k) in the dense regime). The result depends only on the final segment, not on the path.
//   common_shift: A, B shifted by the row's max once (y_j = e^(s_j - max s), z_j = 1 / y_j computed
//     once, so each pass is compares and adds only); used while max s - min s <= 690, where no
//     exponential or sum can under- or overflow; otherwise the row falls back to
//   knot_shift: A, B shifted to the segment's own knots (A, B >= 1), with fresh exponentials each
//     pass, valid for any range.
// If a walk does not settle (it always does on finite scores), threshold_sorted answers.
enum class Method { common_shift, knot_shift };
struct Walk {
  double beta = 0;     // scaled threshold (NaN inside the router, which does not need it)
  int32_t passes = 0;  // passes of the walk that answered; -1: none did
  Method method = Method::common_shift;  // the walk that answered
  bool fallback = false;                 // threshold_sorted answered
};

// p_i = F(s_i - beta) for every i, straight from the definition (double, vectorised exponentials).
void probabilities(const float* r, int32_t E, double alpha, double beta, double* p);

// What the router computes per token: beta and p[0..E) by `method` (with the fallbacks above).
// Throws on non-finite scores.
Walk soft_topk(const float* r, int32_t E, double k, double alpha, Workspace& ws, double* p,
               Method method = Method::common_shift);

// exp(x) for x <= 0 in double precision (relative error < 1e-14 for x >= -708; e^-708 below): the
// scalar form of the vectorised kernel.
double exp_nonpositive_d(double x);

}  // namespace moe::lapsum
