#include "harness/metrics/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/core/select.hpp"
#include "harness/traffic/traffic.hpp"

namespace moe {

double max_over_mean(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  const double sum = static_cast<double>(std::accumulate(v.begin(), v.end(), int64_t{0}));
  if (sum == 0) return 0;
  return static_cast<double>(*std::max_element(v.begin(), v.end())) /
         (sum / static_cast<double>(v.size()));
}

double mean_over_max(const std::vector<int64_t>& v) {
  if (v.empty()) return 1;
  const int64_t mx = *std::max_element(v.begin(), v.end());
  if (mx == 0) return 1;
  const double sum = static_cast<double>(std::accumulate(v.begin(), v.end(), int64_t{0}));
  return sum / static_cast<double>(v.size()) / static_cast<double>(mx);
}

double coefficient_of_variation(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  const double n = static_cast<double>(v.size());
  double mean = 0;
  for (auto x : v) mean += static_cast<double>(x);
  mean /= n;
  if (mean == 0) return 0;
  double var = 0;
  for (auto x : v) var += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean);
  return std::sqrt(var / n) / mean;
}

void fill_load_metrics(const RoutingPlan& plan, const CapacityResult& cap, int64_t group_tokens,
                       int32_t top_k, const Comm& group, StepLayerMetrics& m) {
  const int32_t E = plan.num_experts;
  m.tokens = group_tokens;
  m.capacity = cap.capacity;
  m.expert_demand = cap.expert_demand;
  m.expert_load = cap.expert_load;
  m.demand_assignments =
      std::accumulate(cap.expert_demand.begin(), cap.expert_demand.end(), int64_t{0});
  m.kept_assignments = std::accumulate(cap.expert_load.begin(), cap.expert_load.end(), int64_t{0});
  m.dropped_assignments = cap.dropped_assignments;
  m.dropped_tokens = cap.dropped_tokens;
  m.max_demand = E ? *std::max_element(cap.expert_demand.begin(), cap.expert_demand.end()) : 0;
  m.max_tokens_per_expert =
      E ? *std::max_element(cap.expert_load.begin(), cap.expert_load.end()) : 0;
  m.mean_active_experts =
      group_tokens ? static_cast<double>(m.kept_assignments) / static_cast<double>(group_tokens)
                   : 0;
  m.drop_rate = m.demand_assignments ? static_cast<double>(m.dropped_assignments) /
                                           static_cast<double>(m.demand_assignments)
                                     : 0;
  m.expert_imbalance = max_over_mean(m.expert_load);
  m.expert_cv = coefficient_of_variation(m.expert_load);
  m.expert_balancedness = mean_over_max(m.expert_load);
  const double balanced = static_cast<double>(group_tokens) * top_k / E;
  m.capacity_factor_required = balanced > 0 ? static_cast<double>(m.max_demand) / balanced : 0;
  m.active_experts_hist.assign(static_cast<size_t>(E) + 1, 0);
  for (int64_t t = 0; t < plan.num_tokens; ++t) {
    int64_t n = 0;
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a)
      n += cap.kept.empty() || cap.kept[a];
    ++m.active_experts_hist[std::min<int64_t>(n, E)];
  }
  group.sum(m.active_experts_hist);
}

std::vector<std::string> transition_figure_names(bool full_distribution) {
  if (full_distribution)
    return {"transitions",   "acc_at_transition", "p_correct_at_transition",
            "coverage_at_1", "coverage_at_2",     "coverage_at_3",
            "coverage_at_4"};
  return {"transitions",
          "acc_at_transition",
          "p_correct_among_chosen_at_transition",
          "coverage_among_chosen_at_1",
          "coverage_among_chosen_at_2",
          "coverage_among_chosen_at_3",
          "coverage_among_chosen_at_4"};
}

std::vector<double> transition_figures(const TokenBatch& b, const RoutingPlan& plan,
                                       const Comm& group, const FullScoresFn* full_scores) {
  const int32_t ranks_here = b.ranks_here();
  const int32_t E = b.num_experts;
  RankCursor rank_of(b);
  // Per EP rank: [transitions, acc hits, p_correct sum, coverage@1..4 hits].
  constexpr int kFields = 7;
  std::vector<double> per_rank(static_cast<size_t>(ranks_here) * kFields, 0.0);
  const int32_t m = b.experts_per_domain;
  std::vector<float> scores(full_scores ? static_cast<size_t>(E) : 0);
  for (int64_t t = 0; t + 1 < b.num_tokens; ++t) {
    const int64_t r = rank_of(t);
    if (t + 1 >= b.rank_end(static_cast<int32_t>(r)) || b.sequence[t + 1] != b.sequence[t] ||
        b.domain[t + 1] == b.domain[t])
      continue;
    const int32_t* correct = b.domain_experts.data() + static_cast<size_t>(b.domain[t + 1]) * m;
    auto is_correct = [&](int32_t e) {  // -1 pads domains with fewer than m experts
      for (int32_t i = 0; i < m; ++i)
        if (correct[i] == e && e >= 0) return true;
      return false;
    };
    double* f = per_rank.data() + r * kFields;
    f[0] += 1;
    if (plan.count(t) > 0 && is_correct(plan.expert[plan.offsets[t]])) f[1] += 1;
    if (full_scores) {
      (*full_scores)(t, scores.data());
      // Softmax mass on the correct experts (in double, max subtracted), and the best rank of a
      // correct expert in the full ranking (higher score first, ties to the lower index).
      float zmax = scores[0];
      for (int32_t e = 1; e < E; ++e) zmax = std::max(zmax, scores[e]);
      double all = 0, ok = 0;
      int64_t best_rank = E;
      for (int32_t e = 0; e < E; ++e) {
        const double x = std::exp(static_cast<double>(scores[e]) - zmax);
        all += x;
        if (!is_correct(e)) continue;
        ok += x;
        int64_t rank = 0;
        for (int32_t q = 0; q < E; ++q)
          rank += scores[q] > scores[e] || (scores[q] == scores[e] && q < e);
        best_rank = std::min(best_rank, rank);
      }
      f[2] += all > 0 ? ok / all : 0.0;
      for (int64_t K = 1; K <= 4; ++K)
        if (best_rank < K) f[2 + K] += 1;
      continue;
    }
    double w_all = 0, w_ok = 0;
    bool covered = false;
    for (int64_t a = plan.offsets[t], j = 0; a < plan.offsets[t + 1]; ++a, ++j) {
      const bool ok = is_correct(plan.expert[a]);
      w_all += plan.weight[a];
      w_ok += ok ? plan.weight[a] : 0.0;
      covered = covered || ok;
      if (j < 4 && covered) f[3 + j] += 1;
    }
    // A token with fewer than 4 choices keeps its coverage for the larger K.
    for (int64_t j = plan.count(t); j < 4; ++j)
      if (covered) f[3 + j] += 1;
    f[2] += w_all > 0 ? w_ok / w_all : 0.0;
  }
  const auto total = ordered_rank_sum(group, per_rank, kFields, ranks_here);
  std::vector<double> out(kFields, 0.0);
  out[0] = total[0];
  for (int i = 1; i < kFields; ++i) out[i] = total[0] > 0 ? total[i] / total[0] : NAN;
  return out;
}

void fill_traffic_metrics(const TrafficMatrix& dispatch, const TrafficMatrix& combine,
                          const Topology& topo, StepLayerMetrics& m) {
  const auto d = bytes_by_class(dispatch, topo);
  const auto c = bytes_by_class(combine, topo);
  m.dispatch_bytes_local = d[0];
  m.dispatch_bytes_intra = d[1];
  m.dispatch_bytes_inter = d[2];
  m.combine_bytes_local = c[0];
  m.combine_bytes_intra = c[1];
  m.combine_bytes_inter = c[2];
  const int32_t R = dispatch.ranks;
  m.rank_recv_tokens.assign(R, 0);
  m.dispatch_copies = 0;
  for (int32_t s = 0; s < R; ++s)
    for (int32_t r = 0; r < R; ++r) {
      m.rank_recv_tokens[r] += dispatch.tok(s, r);
      m.dispatch_copies += dispatch.tok(s, r);
    }
  m.rank_imbalance = max_over_mean(m.rank_recv_tokens);
  m.rank_cv = coefficient_of_variation(m.rank_recv_tokens);
  m.node_recv_tokens.assign(static_cast<size_t>(topo.nodes), 0);
  for (int32_t r = 0; r < R; ++r)
    m.node_recv_tokens[static_cast<size_t>(topo.node_of(r))] += m.rank_recv_tokens[r];
  rank_bytes_by_class(dispatch, topo, m.rank_send_bytes, m.rank_recv_bytes);
}

void fill_detail_metrics(const DispatchDetail& detail, StepLayerMetrics& m) {
  m.rank_load = detail.rank_assignments;
  m.gpu_balancedness = mean_over_max(m.rank_load);
  m.ranks_per_token_hist = detail.ranks_per_token_hist;
  m.nodes_per_token_hist = detail.nodes_per_token_hist;
  m.expert_recv_bytes = detail.expert_bytes;
  auto mean_of = [](const std::vector<int64_t>& hist) {
    int64_t n = 0, sum = 0;
    for (size_t i = 0; i < hist.size(); ++i) {
      n += hist[i];
      sum += static_cast<int64_t>(i) * hist[i];
    }
    return n > 0 ? static_cast<double>(sum) / static_cast<double>(n) : 0.0;
  };
  m.mean_ranks_per_token = mean_of(m.ranks_per_token_hist);
  m.mean_nodes_per_token = mean_of(m.nodes_per_token_hist);
  const double R = static_cast<double>(std::max<size_t>(1, m.rank_recv_tokens.size()));
  const double nonself = static_cast<double>(m.dispatch_bytes_intra + m.dispatch_bytes_inter);
  m.nonself_algbw_GBps = m.model_dispatch_s > 0 ? nonself / R / m.model_dispatch_s / 1e9 : 0;
}

int64_t padding_bytes(int64_t capacity, int32_t experts, int64_t scopes, int64_t kept_assignments,
                      int64_t payload_bytes) {
  if (capacity <= 0) return 0;
  return std::max<int64_t>(0, scopes * experts * capacity - kept_assignments) * payload_bytes;
}

void SummaryAccumulator::add(const StepLayerMetrics& m) {
  ++s_.records;
  s_.mean_active_experts += m.mean_active_experts;
  dropped_ += m.dropped_assignments;
  demand_ += m.demand_assignments;
  s_.max_capacity_factor_required =
      std::max(s_.max_capacity_factor_required, m.capacity_factor_required);
  s_.max_tokens_per_expert = std::max(s_.max_tokens_per_expert, m.max_tokens_per_expert);
  s_.mean_expert_imbalance += m.expert_imbalance;
  s_.mean_expert_cv += m.expert_cv;
  s_.mean_rank_imbalance += m.rank_imbalance;
  s_.mean_dispatch_bytes_local += static_cast<double>(m.dispatch_bytes_local);
  s_.mean_dispatch_bytes_intra += static_cast<double>(m.dispatch_bytes_intra);
  s_.mean_dispatch_bytes_inter += static_cast<double>(m.dispatch_bytes_inter);
  s_.mean_model_a2a_s += m.model_dispatch_s + m.model_combine_s;
  s_.mean_model_lower_bound_s += m.model_lower_bound_dispatch_s + m.model_lower_bound_combine_s;
  s_.mean_busbw_GBps += m.busbw_GBps;
  s_.mean_router_s += m.router_s;
  s_.replacements += m.replaced_copies > 0;
  s_.replacement_bytes += m.replacement_bytes;
  if (m.replaced_copies > 0) s_.a2a_saved_s += m.a2a_saved_s;
  s_.replication_factor = m.replication_factor;
  s_.mean_expert_balancedness += m.expert_balancedness;
  s_.mean_gpu_balancedness += m.gpu_balancedness;
  s_.min_gpu_balancedness =
      s_.records == 1 ? m.gpu_balancedness : std::min(s_.min_gpu_balancedness, m.gpu_balancedness);
  s_.mean_ranks_per_token += m.mean_ranks_per_token;
  s_.mean_nodes_per_token += m.mean_nodes_per_token;
  s_.mean_padding_bytes += static_cast<double>(m.padding_bytes);
  s_.mean_nonself_algbw_GBps += m.nonself_algbw_GBps;
  s_.mean_placement_balancedness += m.placement_balancedness;
  if (m.replaced_copies > 0) s_.balancedness_gain += m.balancedness_gain;
  if (!std::isnan(m.measured_dispatch_s)) {
    const double measured = m.measured_dispatch_s + m.measured_combine_s;
    const double model = m.model_dispatch_s + m.model_combine_s;
    s_.measured = true;
    s_.mean_measured_a2a_s += measured;
    if (measured > 0) model_errors_.push_back(std::abs(model - measured) / measured);
  }
}

RouterSummary SummaryAccumulator::result() const {
  RouterSummary s = s_;
  if (s.records == 0) return s;
  const double n = static_cast<double>(s.records);
  s.drop_rate = demand_ ? static_cast<double>(dropped_) / static_cast<double>(demand_) : 0;
  for (double* v :
       {&s.mean_active_experts, &s.mean_expert_imbalance, &s.mean_expert_cv, &s.mean_rank_imbalance,
        &s.mean_dispatch_bytes_local, &s.mean_dispatch_bytes_intra, &s.mean_dispatch_bytes_inter,
        &s.mean_model_a2a_s, &s.mean_model_lower_bound_s, &s.mean_busbw_GBps, &s.mean_router_s,
        &s.mean_measured_a2a_s, &s.mean_expert_balancedness, &s.mean_gpu_balancedness,
        &s.mean_ranks_per_token, &s.mean_nodes_per_token, &s.mean_padding_bytes,
        &s.mean_nonself_algbw_GBps, &s.mean_placement_balancedness})
    *v /= n;
  if (!model_errors_.empty()) {
    std::vector<double> e = model_errors_;
    std::nth_element(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(e.size() / 2), e.end());
    s.median_model_error = e[e.size() / 2];
    if (e.size() % 2 == 0) {
      const double lower =
          *std::max_element(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(e.size() / 2));
      s.median_model_error = 0.5 * (s.median_model_error + lower);
    }
  }
  return s;
}

RouterSummary summarize(const std::string& router, const std::vector<StepLayerMetrics>& records) {
  SummaryAccumulator acc(router);
  for (const auto& m : records) acc.add(m);
  return acc.result();
}

}  // namespace moe
