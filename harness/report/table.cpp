#include "harness/report/table.hpp"

#include <cstdio>

namespace moe {

std::string format_summary_table(const std::vector<RouterSummary>& rows) {
  bool measured = false;
  for (const auto& r : rows) measured = measured || r.measured;
  std::string out;
  char line[640];
  std::snprintf(line, sizeof line,
                "%-20s %8s %9s %7s %7s %7s %8s %8s %8s %10s %7s %10s %10s %10s %10s %7s %9s %9s",
                "router", "act/tok", "imbal", "cv", "bal_e", "bal_gpu", "ranks/t", "nodes/t",
                "cf_req", "max_tok/e", "drop%", "local_MB", "intra_MB", "inter_MB", "a2a_ms",
                "a2a/lb", "bw", "busbw");
  out += line;
  if (measured) {
    std::snprintf(line, sizeof line, " %10s %9s", "meas_ms", "model_err");
    out += line;
  }
  out += "\n";
  for (const auto& r : rows) {
    std::snprintf(
        line, sizeof line,
        "%-20s %8.3f %9.3f %7.3f %7.3f %7.3f %8.3f %8.3f %8.3f %10lld %7.2f %10.2f %10.2f %10.2f "
        "%10.4f %7.2f %9.1f %9.1f",
        r.router.c_str(), r.mean_active_experts, r.mean_expert_imbalance, r.mean_expert_cv,
        r.mean_expert_balancedness, r.mean_gpu_balancedness, r.mean_ranks_per_token,
        r.mean_nodes_per_token, r.max_capacity_factor_required,
        static_cast<long long>(r.max_tokens_per_expert), 100.0 * r.drop_rate,
        r.mean_dispatch_bytes_local / 1e6, r.mean_dispatch_bytes_intra / 1e6,
        r.mean_dispatch_bytes_inter / 1e6, r.mean_model_a2a_s * 1e3,
        r.mean_model_lower_bound_s > 0 ? r.mean_model_a2a_s / r.mean_model_lower_bound_s : 1.0,
        r.mean_nonself_algbw_GBps, r.mean_busbw_GBps);
    out += line;
    if (measured) {
      std::snprintf(line, sizeof line, " %10.4f %8.1f%%", r.mean_measured_a2a_s * 1e3,
                    100.0 * r.median_model_error);
      out += line;
    }
    out += "\n";
  }
  out +=
      "act/tok: experts per token after capacity; imbal: max/mean expert load; bal_e, bal_gpu: "
      "balancedness (mean/max, 1 = "
      "even) of the expert loads and of the GPUs' served loads after placement "
      "(SGLang/vLLM);\nranks/t, nodes/t: distinct "
      "destination ranks and nodes per token; cf_req: capacity factor needed for no drop (max over "
      "steps/layers);\nmax_tok/e: most tokens any expert processed; *_MB: dispatch bytes per layer "
      "by "
      "link class; a2a_ms: modelled dispatch+combine per layer; a2a/lb: a2a_ms over its balanced "
      "lower bound (the same "
      "bytes spread evenly: the cost of imbalance);\nbw: GB/s of the modelled dispatch counting "
      "only bytes that leave their rank "
      "(self-traffic excluded); busbw: GB/s as nccl-tests defines it (all bytes incl. self / R / "
      "time x (R-1)/R).\n";
  if (measured)
    out +=
        "meas_ms: measured dispatch+combine per layer (slowest rank); model_err: median |model - "
        "measured| / measured.\n";
  for (const auto& r : rows) {
    if (r.replication_factor > 1.0) {
      std::snprintf(line, sizeof line, "placement (%s): %.3f copies per expert\n", r.router.c_str(),
                    r.replication_factor);
      out += line;
    }
    if (r.replacements > 0) {
      std::snprintf(line, sizeof line,
                    "re-placement (%s): %lld layer re-placements moved %.3f GB of expert weights "
                    "and saved %.4f ms of "
                    "modelled all-to-all at the steps they took effect; GPU balancedness gained "
                    "%+.4f in total, %+.4f per GB moved\n",
                    r.router.c_str(), static_cast<long long>(r.replacements),
                    static_cast<double>(r.replacement_bytes) / 1e9, r.a2a_saved_s * 1e3,
                    r.balancedness_gain, r.balancedness_gain_per_GB());
      out += line;
    }
    if (r.mean_padding_bytes > 0) {
      std::snprintf(line, sizeof line,
                    "padding (%s): capacity buffers padded to C (Megatron pad_to_capacity) would "
                    "add %.3f MB of empty slots per layer\n",
                    r.router.c_str(), r.mean_padding_bytes / 1e6);
      out += line;
    }
  }
  return out;
}

}  // namespace moe
