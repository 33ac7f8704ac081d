#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness/core/types.hpp"

namespace moe {

using NamedArgs =
    std::map<std::string, std::map<std::string, std::string>>;  // name -> key -> value

// Everything a `moebench run` needs, from the command line and/or an INI file (--config).
struct RunConfig {
  // workload
  std::string workload = "zipf";
  NamedArgs workload_args;
  int32_t experts = 64;
  int32_t top_k = 6;
  int32_t layers = 4;
  int32_t steps = 8;
  int64_t tokens_per_rank = 4096;
  int64_t seq_len = 1024;
  uint64_t seed = 1;
  // model / payload
  int64_t hidden = 2048;
  std::string dtype = "bf16";
  // cluster
  int32_t nodes = 0;           // 0: derive
  int32_t ranks_per_node = 0;  // 0: derive
  int32_t ep_size = 0;         // 0: MPI world size
  std::string topology_file;
  double intra_bw_GBps = 450.0;  // NVLink4 per GPU per direction
  double inter_bw_Gbps = 400.0;  // one 400 Gb/s NIC per GPU
  double intra_lat_us = 3.0;
  double inter_lat_us = 6.0;
  bool shared_links = false;  // from a topology file's `links = shared`
  int32_t nics_per_node = 0;  // from a topology file's [inter] nics_per_node (0: one NIC per rank)
  double intra_node_bw_GBps =
      0;  // from a topology file's [intra] node_bandwidth_GBps (0: no shared fabric)
  // routing and capacity
  std::vector<std::string> routers = {"softmax_topk", "sigmoid_topk"};
  NamedArgs router_args;
  double capacity_factor = 1.25;  // 0 = unlimited
  std::string drop_policy =
      "choice_first";  // choice_first | token_order | probability (position = choice_first)
  std::string capacity_scope = "global";    // global (EP group) | local (each EP rank's own tokens)
  std::string capacity_rounding = "exact";  // exact | framework (Megatron-Core's float ceil)
  // placement, traffic, backend
  std::string placement = "contiguous";
  int32_t redundant_experts = 0;            // extra expert copies (load_balanced, eplb)
  int32_t expert_groups = 0;                // eplb expert groups (0: one per node)
  std::string replica_select = "locality";  // locality | round_robin | random | token_hash
  std::string placement_loads = "auto";  // auto | none | oracle | warmup | ema | file:PATH[#router]
  int32_t placement_warmup = 1;          // warmup: steps averaged before placing once
  int32_t replace_every = 1;             // ema: re-place after every N steps
  double placement_ema = 0.5;            // ema decay
  int64_t replace_max_moves = 0;  // > 0: moves per layer per re-placement, the most valuable kept
  int64_t ffn_hidden = 0;         // expert FFN width for the re-placement cost (0: = hidden)
  std::string dedup = "token_expert";
  std::string backend = "sim";
  std::string route_on = "cpu";        // cpu | gpu (routers with a CUDA implementation)
  std::string a2a_algo = "alltoallv";  // real backends: alltoallv | pairwise | hierarchical
  int32_t warmup = 2;                  // untimed exchanges before the timed ones (real backends)
  int32_t iters = 5;                   // timed exchanges, averaged (real backends)
  // outputs
  std::string out;  // empty: no results file
  bool force = false;
  bool resume = false;
  std::string max_memory =
      "auto";  // --max-memory: preflight limit per process (harness/config/preflight.hpp) //
               // --resume: continue the partial file --out (harness/driver/resume.hpp)
  std::string dispatch_matrix = "auto";  // auto (saved when ep_size <= 256) | on | off
  std::string progress = "auto";         // auto | bar | lines | off
  std::string config_file;
  std::string trace_file;                  // --workload trace: the trace to replay
  std::string trace_tail = "none";         // assignment traces: none | mass | profile
  std::string tail_prior = "popularity";   // popularity | uniform
  double tail_noise = 1.0;                 // mass: log-normal spread of the tail's shares
  std::string count_sources = "uniform";   // count-only traces: attribution of the source ranks
  std::set<std::string> explicit_options;  // options given on the command line or in the INI file
  std::string command_line;

  int64_t dtype_bytes() const;
  // Bytes of one expert's weights (3 matrices hidden x ffn_hidden, SwiGLU), moved per re-placed
  // copy.
  int64_t expert_bytes() const {
    return 3 * hidden * (ffn_hidden > 0 ? ffn_hidden : hidden) * dtype_bytes();
  }
  int64_t payload_bytes() const { return hidden * dtype_bytes(); }
  bool save_dispatch_matrix() const;
  Topology topology() const;  // call after resolve()
  std::string to_json() const;
};

// Parses `moebench run ...` arguments (argv[0] is the subcommand) and the optional --config INI
// file; command-line values win over the file. Throws InputError on syntax errors. `--help`
// sets help_text instead.
RunConfig parse_run_config(int argc, const char* const* argv, std::string* help_text = nullptr);

// Fills derived fields (ep size, nodes, ranks per node, topology file) for a given MPI world
// size, then reports every remaining problem at once. Deterministic: every rank gets the same list.
// `preflight` (optional) runs once the EP shape is resolved and before anything sized by the
// configuration is built (router and placement checks); a non-empty result is the only problem.
std::vector<std::string> resolve_and_validate(
    RunConfig& cfg, int world_size,
    const std::function<std::string(const RunConfig&)>& preflight = nullptr);

}  // namespace moe
