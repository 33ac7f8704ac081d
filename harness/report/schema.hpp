#pragma once
#include "harness/metrics/metrics.hpp"

// The results file layout, shared by the writer and every reader. Documented in SCHEMA.md.
namespace moe::schema {

inline constexpr const char* kFormatName = "moebench-results";
inline constexpr int64_t kFormatVersion = 1;

// What differs between two runs of one configuration (the root attribute `varying`): timings,
// hosts and how the run was started. A resumed run equals an uninterrupted one everywhere else.
inline constexpr const char* kVaryingFields =
    "attributes: command_line hosts resumed git_sha moebench_version; datasets: router_s "
    "dispatch_s combine_s "
    "measured_algbw_GBps measured_busbw_GBps measured_nonself_algbw_GBps rank_dispatch_s "
    "rank_combine_s";

// `optional`: added after format version 1 first shipped; readers take a file without it (ints 0,
// reals NaN).
struct IntField {
  const char* name;
  int64_t StepLayerMetrics::*member;
  bool optional = false;
};
struct RealField {
  const char* name;
  double StepLayerMetrics::*member;
  bool optional = false;
};

// Per router: /runs/<router>/<name>, shape [steps, layers].
inline constexpr IntField kIntFields[] = {
    {"tokens", &StepLayerMetrics::tokens},
    {"capacity", &StepLayerMetrics::capacity},
    {"demand_assignments", &StepLayerMetrics::demand_assignments},
    {"kept_assignments", &StepLayerMetrics::kept_assignments},
    {"dropped", &StepLayerMetrics::dropped_assignments},
    {"dropped_tokens", &StepLayerMetrics::dropped_tokens},
    {"max_demand", &StepLayerMetrics::max_demand},
    {"max_tokens_per_expert", &StepLayerMetrics::max_tokens_per_expert},
    {"dispatch_copies", &StepLayerMetrics::dispatch_copies},
    {"bytes_local", &StepLayerMetrics::dispatch_bytes_local},
    {"bytes_intra", &StepLayerMetrics::dispatch_bytes_intra},
    {"bytes_inter", &StepLayerMetrics::dispatch_bytes_inter},
    {"combine_bytes_local", &StepLayerMetrics::combine_bytes_local},
    {"combine_bytes_intra", &StepLayerMetrics::combine_bytes_intra},
    {"combine_bytes_inter", &StepLayerMetrics::combine_bytes_inter},
    {"bottleneck_rank", &StepLayerMetrics::bottleneck_rank},
    {"bottleneck_link", &StepLayerMetrics::bottleneck_link},
    {"bytes_moved", &StepLayerMetrics::measured_bytes_moved},
    {"replaced_copies", &StepLayerMetrics::replaced_copies, true},
    {"replacement_bytes", &StepLayerMetrics::replacement_bytes, true},
    {"padding_bytes", &StepLayerMetrics::padding_bytes, true},
};
inline constexpr RealField kRealFields[] = {
    {"mean_active_experts", &StepLayerMetrics::mean_active_experts},
    {"drop_rate", &StepLayerMetrics::drop_rate},
    {"expert_imbalance", &StepLayerMetrics::expert_imbalance},
    {"expert_cv", &StepLayerMetrics::expert_cv},
    {"rank_imbalance", &StepLayerMetrics::rank_imbalance},
    {"rank_cv", &StepLayerMetrics::rank_cv},
    {"capacity_factor_required", &StepLayerMetrics::capacity_factor_required},
    {"model_dispatch_s", &StepLayerMetrics::model_dispatch_s},
    {"model_combine_s", &StepLayerMetrics::model_combine_s},
    {"model_lower_bound_dispatch_s", &StepLayerMetrics::model_lower_bound_dispatch_s, true},
    {"model_lower_bound_combine_s", &StepLayerMetrics::model_lower_bound_combine_s, true},
    {"algbw_GBps", &StepLayerMetrics::algbw_GBps},
    {"busbw_GBps", &StepLayerMetrics::busbw_GBps},
    {"dispatch_s", &StepLayerMetrics::measured_dispatch_s},
    {"combine_s", &StepLayerMetrics::measured_combine_s},
    {"measured_algbw_GBps", &StepLayerMetrics::measured_algbw_GBps},
    {"measured_busbw_GBps", &StepLayerMetrics::measured_busbw_GBps},
    {"router_s", &StepLayerMetrics::router_s},
    {"a2a_saved_s", &StepLayerMetrics::a2a_saved_s, true},
    {"replication_factor", &StepLayerMetrics::replication_factor, true},
    {"expert_balancedness", &StepLayerMetrics::expert_balancedness, true},
    {"gpu_balancedness", &StepLayerMetrics::gpu_balancedness, true},
    {"balancedness_gain", &StepLayerMetrics::balancedness_gain, true},
    {"placement_balancedness", &StepLayerMetrics::placement_balancedness, true},
    {"mean_ranks_per_token", &StepLayerMetrics::mean_ranks_per_token, true},
    {"mean_nodes_per_token", &StepLayerMetrics::mean_nodes_per_token, true},
    {"nonself_algbw_GBps", &StepLayerMetrics::nonself_algbw_GBps, true},
    {"measured_nonself_algbw_GBps", &StepLayerMetrics::measured_nonself_algbw_GBps, true},
};

}  // namespace moe::schema
