#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "harness/core/comm.hpp"
#include "harness/core/types.hpp"
#include "harness/traffic/traffic.hpp"

namespace moe {

// Every metric of one router at one (step, layer), global over the EP group. Definitions in
// harness/report/SCHEMA.md; units are in the names (bytes, _s, _GBps).
struct StepLayerMetrics {
  int64_t tokens = 0;              // T, tokens routed in the group
  int64_t capacity = 0;            // C per expert, 0 = unlimited
  int64_t demand_assignments = 0;  // assignments before capacity
  int64_t kept_assignments = 0;    // |A| after capacity
  int64_t dropped_assignments = 0;
  int64_t dropped_tokens = 0;         // tokens with >= 1 assignment that lost all of them
  int64_t max_demand = 0;             // max over experts of demand
  int64_t max_tokens_per_expert = 0;  // max over experts of load (after capacity)
  int64_t dispatch_copies = 0;        // token copies in the dispatch matrix (after dedup)
  int64_t dispatch_bytes_local = 0, dispatch_bytes_intra = 0, dispatch_bytes_inter = 0;
  int64_t combine_bytes_local = 0, combine_bytes_intra = 0, combine_bytes_inter = 0;
  int64_t bottleneck_rank = 0;     // slowest rank of the modelled dispatch
  int64_t bottleneck_link = 0;     // its link class: 1 intra, 2 inter (0: no traffic)
  double mean_active_experts = 0;  // |A| / T
  double drop_rate = 0;            // dropped / demand assignments
  double expert_imbalance = 0;     // max load / mean load
  double expert_cv = 0;            // std / mean of load
  double rank_imbalance = 0;       // max / mean of tokens received per rank
  double rank_cv = 0;
  double capacity_factor_required = 0;  // max demand / (T k / E)
  double model_dispatch_s = 0, model_combine_s = 0;
  // Balanced lower bounds of the modelled exchanges: the same bytes spread evenly
  // (backends/README.md).
  double model_lower_bound_dispatch_s = 0, model_lower_bound_combine_s = 0;
  double algbw_GBps = 0, busbw_GBps = 0;                        // of the modelled dispatch
  double measured_dispatch_s = NAN, measured_combine_s = NAN;   // NaN: backend measures nothing
  double measured_algbw_GBps = NAN, measured_busbw_GBps = NAN;  // of the measured dispatch
  int64_t measured_bytes_moved = 0;  // dispatch bytes the backend moved (all ranks, one iteration)
  double router_s = 0;               // wall time of route() on the slowest process
  int64_t replaced_copies = 0;    // expert copies moved to adopt this step's placement of the layer
  int64_t replacement_bytes = 0;  // their weights: copies x 3 x hidden x ffn_hidden x dtype bytes
  double a2a_saved_s = 0;  // modelled dispatch+combine under the previous placement minus under
                           // this one (0: unchanged)
  double replication_factor = 1;  // physical expert copies / E
  // Balancedness as SGLang and vLLM log it: mean / max (1 = perfectly balanced; 1 when nothing is
  // routed). Of the experts' loads, and of the GPUs' (EP ranks') served assignments after placement
  // and replica selection.
  double expert_balancedness = 1, gpu_balancedness = 1;
  double placement_balancedness = 1;  // mean/max of rank loads from this step's demand, each expert
                                      // split evenly over its copies (EPLB's estimate)
  double balancedness_gain =
      0;  // gpu_balancedness minus its value under the previous placement (0: unchanged)
  double mean_ranks_per_token = 0,
         mean_nodes_per_token = 0;  // distinct destinations per token, over all T tokens
  // Bandwidth of the modelled / measured dispatch counting only bytes that leave their rank
  // (intra + inter): (those bytes / R) / seconds, 1e9 B/s. Measured: NaN for sim.
  double nonself_algbw_GBps = 0, measured_nonself_algbw_GBps = NAN;
  int64_t padding_bytes =
      0;  // Megatron pad_to_capacity: empty capacity slots x payload (0 when unlimited)
  std::vector<int64_t> expert_of_slot;    // [R x slots per rank]: expert in each slot (-1 empty);
                                          // slot s on rank s / slots
  std::vector<int64_t> node_recv_tokens;  // [nodes]: token copies each node receives
  std::vector<int64_t> expert_demand;     // [E]
  std::vector<int64_t> expert_load;       // [E]
  std::vector<int64_t> active_experts_hist;   // [E+1]: tokens with n kept experts
  std::vector<int64_t> rank_recv_tokens;      // [R]: column sums of the dispatch token matrix
  std::vector<int64_t> rank_load;             // [R]: kept assignments each rank serves
  std::vector<int64_t> ranks_per_token_hist;  // [min(E,R)+1]: tokens by distinct destination ranks
  std::vector<int64_t> nodes_per_token_hist;  // [min(E,N)+1]: tokens by distinct destination nodes
  std::vector<int64_t> rank_send_bytes,
      rank_recv_bytes;  // [R x 3]: dispatch bytes by link class (local, intra, inter)
  std::vector<int64_t>
      expert_recv_bytes;  // [E x 3]: bytes to each expert by link class, one copy per assignment
  std::vector<double> figures;  // router figures, then workload figures (names kept by the run)
  // Real backends only ([R], empty for sim): mean seconds per rank and integrity counts per rank
  // (dispatch and combine together).
  std::vector<double> rank_dispatch_s, rank_combine_s;
  std::vector<int64_t> tokens_sent, tokens_received, tokens_lost, tokens_corrupted;
};

// Load, capacity and drop metrics. Collective over `group` (the active-experts histogram).
void fill_load_metrics(const RoutingPlan& plan, const CapacityResult& cap, int64_t group_tokens,
                       int32_t top_k, const Comm& group, StepLayerMetrics& m);

// Byte, copy and rank-receive metrics from the group's (already summed) matrices; the modelled
// times are the backend's to fill.
void fill_traffic_metrics(const TrafficMatrix& dispatch, const TrafficMatrix& combine,
                          const Topology& topology, StepLayerMetrics& m);

// Balancedness, distinct destinations per token and per-expert bytes from the group's (summed)
// dispatch detail; per-rank bytes and the no-self bandwidth from the matrix (call after
// fill_traffic_metrics and once model_dispatch_s is set).
void fill_detail_metrics(const DispatchDetail& detail, StepLayerMetrics& m);

// Megatron's pad_to_capacity: every expert buffer of every capacity scope padded to C tokens.
// `scopes` capacity scopes (1: global); bytes = (scopes * E * C - kept) * payload, 0 when C = 0.
int64_t padding_bytes(int64_t capacity, int32_t experts, int64_t scopes, int64_t kept_assignments,
                      int64_t payload_bytes);

// Anticipation figures on labelled workloads (batch.domain set; ROUTERS.md §5). A transition is a
// token t whose successor t+1 (same sequence, same EP rank) has another domain; the experts of
// t+1's domain are the "correct" ones. Figures: transitions (count), acc_at_transition (the plan's
// first choice correct), then, against the router's full distribution over all E experts (when
// `full_scores` is given: it writes token t's scores, whose softmax is that distribution):
// p_correct_at_transition (softmax mass on the correct experts) and coverage_at_1..4 (a correct
// expert among the K highest scores, ties to the lower index, whatever k the router chose).
// Without a full distribution the figures are among-chosen and named so:
// p_correct_among_chosen_at_transition (share of the token's combine weight on correct experts)
// and coverage_among_chosen_at_1..4 (a correct expert among the first K choices of the plan; a
// token with fewer than K choices keeps its coverage for the larger K). Computed on the plan before
// capacity. Collective over `group`; bit-identical for any split of the EP ranks over processes.
using FullScoresFn = std::function<void(int64_t token, float* scores)>;
std::vector<std::string> transition_figure_names(bool full_distribution);
std::vector<double> transition_figures(const TokenBatch& batch, const RoutingPlan& plan,
                                       const Comm& group,
                                       const FullScoresFn* full_scores = nullptr);

// max/mean and std/mean of counts (0 when the mean is 0).
double max_over_mean(const std::vector<int64_t>& v);
// mean/max ("balancedness"): 1 when all are equal or all zero.
double mean_over_max(const std::vector<int64_t>& v);
double coefficient_of_variation(const std::vector<int64_t>& v);

// One router over a whole run: what the console table and `moebench report` print.
struct RouterSummary {
  std::string router;
  int64_t records = 0;  // step x layer pairs
  double mean_active_experts = 0;
  double drop_rate = 0;  // over the whole run
  double max_capacity_factor_required = 0;
  int64_t max_tokens_per_expert = 0;
  double mean_expert_imbalance = 0;
  double mean_expert_cv = 0;
  double mean_rank_imbalance = 0;
  double mean_dispatch_bytes_local = 0, mean_dispatch_bytes_intra = 0,
         mean_dispatch_bytes_inter = 0;
  double mean_model_a2a_s = 0;          // dispatch + combine per layer
  double mean_model_lower_bound_s = 0;  // their balanced lower bounds, dispatch + combine per layer
  double mean_busbw_GBps = 0;
  double mean_router_s = 0;
  bool measured = false;           // a real backend timed the exchanges
  double mean_measured_a2a_s = 0;  // measured dispatch + combine per layer
  double median_model_error = 0;   // median over records of |model - measured| / measured
  int64_t replacements = 0;        // step x layer pairs whose placement changed
  int64_t replacement_bytes = 0;   // expert weights moved by them, in total
  double a2a_saved_s =
      0;  // modelled dispatch+combine they saved at the step they took effect, in total
  double replication_factor = 1;  // physical expert copies / E (last record)
  double mean_expert_balancedness = 1, mean_gpu_balancedness = 1;  // mean / max, mean over records
  double min_gpu_balancedness = 1;                                 // the worst record
  double mean_ranks_per_token = 0, mean_nodes_per_token = 0;
  double mean_padding_bytes = 0;           // per layer
  double mean_nonself_algbw_GBps = 0;      // modelled dispatch, bytes leaving their rank
  double mean_placement_balancedness = 0;  // EPLB's estimate on each step's own demand
  double balancedness_gain =
      0;  // gpu_balancedness gained by re-placements at the step they took effect, in total
  // balancedness_gain / (replacement_bytes / 1e9); NaN without re-placement
  double balancedness_gain_per_GB() const {
    return replacement_bytes > 0
               ? balancedness_gain / (static_cast<double>(replacement_bytes) / 1e9)
               : NAN;
  }
};
// Accumulates the summary record by record, so a run keeps O(1) per router, not O(steps x layers).
class SummaryAccumulator {
 public:
  explicit SummaryAccumulator(std::string router) {
    s_.router = std::move(router);
    s_.mean_expert_balancedness = s_.mean_gpu_balancedness = 0;  // sums until result()
  }
  void add(const StepLayerMetrics& m);
  RouterSummary result() const;

 private:
  RouterSummary s_;
  int64_t dropped_ = 0, demand_ = 0;
  std::vector<double> model_errors_;
};
RouterSummary summarize(const std::string& router, const std::vector<StepLayerMetrics>& records);

}  // namespace moe
