#include "harness/config/run_config.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "harness/config/known_names.hpp"
#include "harness/core/error.hpp"
#include "harness/core/registry.hpp"

namespace po = boost::program_options;

namespace moe {

int64_t RunConfig::dtype_bytes() const {
  if (dtype == "fp32") return 4;
  if (dtype == "bf16" || dtype == "fp16") return 2;
  if (dtype == "fp8") return 1;
  return 0;
}

bool RunConfig::save_dispatch_matrix() const {
  if (dispatch_matrix == "on") return true;
  if (dispatch_matrix == "off") return false;
  return ep_size <= 256;
}

Topology RunConfig::topology() const {
  Topology t;
  t.name = topology_file.empty() ? "flags" : std::filesystem::path(topology_file).stem().string();
  t.nodes = nodes;
  t.ranks_per_node = ranks_per_node;
  t.intra = Link{intra_bw_GBps * 1e9, intra_lat_us * 1e-6};
  t.inter = Link{inter_bw_Gbps * 1e9 / 8.0, inter_lat_us * 1e-6};
  t.shared_links = shared_links;
  t.nics_per_node = nics_per_node;
  t.intra_node_bandwidth_Bps = intra_node_bw_GBps * 1e9;
  return t;
}

namespace {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}
std::string q(const std::string& s) {
  return "\"" + json_escape(s) + "\"";
}
std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}
std::string named_args_json(const NamedArgs& args) {
  std::string out = "{";
  bool first = true;
  for (const auto& [name, kv] : args) {
    out += (first ? "" : ",") + q(name) + ":{";
    first = false;
    bool f2 = true;
    for (const auto& [k, v] : kv) {
      out += (f2 ? "" : ",") + q(k) + ":" + q(v);
      f2 = false;
    }
    out += "}";
  }
  return out + "}";
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream is(s);
  while (std::getline(is, item, ',')) {
    auto b = item.find_first_not_of(" \t");
    auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// "NAME.key=value" -> args[NAME][key] = value
void add_named_arg(NamedArgs& args, const std::string& option, const std::string& spec) {
  const auto dot = spec.find('.');
  const auto eq = spec.find('=');
  if (dot == std::string::npos || eq == std::string::npos || dot > eq || dot == 0 || eq == dot + 1)
    throw InputError("--" + option + " '" + spec + "': expected NAME.key=value");
  args[spec.substr(0, dot)][spec.substr(dot + 1, eq - dot - 1)] = spec.substr(eq + 1);
}

}  // namespace

std::string RunConfig::to_json() const {
  std::ostringstream os;
  os << "{" << q("workload") << ":" << q(workload) << "," << q("trace") << ":" << q(trace_file)
     << "," << q("count_sources") << ":" << q(count_sources) << "," << q("workload_args") << ":"
     << named_args_json(workload_args) << "," << q("experts") << ":" << experts << "," << q("top_k")
     << ":" << top_k << "," << q("layers") << ":" << layers << "," << q("steps") << ":" << steps
     << "," << q("tokens_per_rank") << ":" << tokens_per_rank << "," << q("seq_len") << ":"
     << seq_len << "," << q("seed") << ":" << seed << "," << q("hidden") << ":" << hidden << ","
     << q("dtype") << ":" << q(dtype) << "," << q("nodes") << ":" << nodes << ","
     << q("ranks_per_node") << ":" << ranks_per_node << "," << q("ep_size") << ":" << ep_size << ","
     << q("topology") << ":" << q(topology_file) << "," << q("intra_bw_GBps") << ":"
     << num(intra_bw_GBps) << "," << q("inter_bw_Gbps") << ":" << num(inter_bw_Gbps) << ","
     << q("intra_lat_us") << ":" << num(intra_lat_us) << "," << q("inter_lat_us") << ":"
     << num(inter_lat_us) << "," << q("routers") << ":[";
  for (size_t i = 0; i < routers.size(); ++i) os << (i ? "," : "") << q(routers[i]);
  os << "]," << q("router_args") << ":" << named_args_json(router_args) << ","
     << q("capacity_factor") << ":" << num(capacity_factor) << "," << q("drop_policy") << ":"
     << q(drop_policy) << "," << q("capacity_scope") << ":" << q(capacity_scope) << ","
     << q("capacity_rounding") << ":" << q(capacity_rounding) << "," << q("placement") << ":"
     << q(placement) << "," << q("redundant_experts") << ":" << redundant_experts << ","
     << q("expert_groups") << ":" << expert_groups << "," << q("replica_select") << ":"
     << q(replica_select) << "," << q("placement_loads") << ":" << q(placement_loads) << ","
     << q("placement_warmup") << ":" << placement_warmup << "," << q("replace_every") << ":"
     << replace_every << "," << q("placement_ema") << ":" << num(placement_ema) << ","
     << q("replace_max_moves") << ":" << replace_max_moves << "," << q("ffn_hidden") << ":"
     << ffn_hidden << "," << q("dedup") << ":" << q(dedup) << "," << q("backend") << ":"
     << q(backend) << "," << q("a2a_algo") << ":" << q(a2a_algo) << "," << q("warmup") << ":"
     << warmup << "," << q("iters") << ":" << iters << "," << q("route_on") << ":" << q(route_on)
     << "," << q("trace_tail") << ":" << q(trace_tail) << "," << q("tail_prior") << ":"
     << q(tail_prior) << "," << q("tail_noise") << ":" << num(tail_noise) << "}";
  return os.str();
}

RunConfig parse_run_config(int argc, const char* const* argv, std::string* help_text) {
  RunConfig c;
  std::string routers;
  std::vector<std::string> router_args;
  std::vector<std::string> workload_args;
  po::options_description opts(
      "moebench run options (also valid as key = value lines of an INI file given by --config)");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("config", po::value(&c.config_file), "INI file with any of these options; command-line values win")
    ("workload", po::value(&c.workload)->default_value(c.workload), "synthetic workload (see `moebench list workloads`)")
    ("workload-arg", po::value(&workload_args)->composing(), "workload knob NAME.key=value (repeatable)")
    ("trace", po::value(&c.trace_file), "--workload trace: the trace file to replay (workloads/TRACE_FORMAT.md); E, layers, steps and k default to the trace's")
    ("trace-tail", po::value(&c.trace_tail)->default_value(c.trace_tail), "assignment traces: model the unrecorded logits so every router runs: none | mass (weights are probabilities: the residual mass spread below the smallest recorded) | profile (the fitted log-weight decay continued); results say so")
    ("tail-prior", po::value(&c.tail_prior)->default_value(c.tail_prior), "--trace-tail: which unrecorded experts sit higher: popularity (the layer's demand in the trace) | uniform")
    ("tail-noise", po::value(&c.tail_noise)->default_value(c.tail_noise), "--trace-tail mass: log-normal spread of the tail experts' shares (0: in prior order)")
    ("count-sources", po::value(&c.count_sources)->default_value(c.count_sources), "count-only traces: which rank sends each assignment: uniform (each rank sends demand/R to each expert)")
    ("experts", po::value(&c.experts)->default_value(c.experts), "routed experts per MoE layer (E)")
    ("top-k", po::value(&c.top_k)->default_value(c.top_k), "experts per token (k)")
    ("layers", po::value(&c.layers)->default_value(c.layers), "MoE layers")
    ("steps", po::value(&c.steps)->default_value(c.steps), "steps (routing groups) to replay")
    ("tokens-per-rank", po::value(&c.tokens_per_rank)->default_value(c.tokens_per_rank), "tokens each EP rank routes per step and layer")
    ("seq-len", po::value(&c.seq_len)->default_value(c.seq_len), "tokens per sequence in synthetic workloads")
    ("seed", po::value(&c.seed)->default_value(c.seed), "seed of the counter-based RNG")
    ("hidden", po::value(&c.hidden)->default_value(c.hidden), "hidden size: elements per token payload")
    ("dtype", po::value(&c.dtype)->default_value(c.dtype), "payload element type: fp32, bf16, fp16, fp8")
    ("nodes", po::value(&c.nodes)->default_value(c.nodes), "nodes of the modelled cluster (0: derive)")
    ("ranks-per-node", po::value(&c.ranks_per_node)->default_value(c.ranks_per_node), "EP ranks (GPUs) per node (0: derive)")
    ("ep-size", po::value(&c.ep_size)->default_value(c.ep_size), "expert-parallel ranks (0: MPI world size); > world size models virtual ranks (sim backend)")
    ("topology", po::value(&c.topology_file), "INI file with [intra]/[inter] link bandwidth and latency (replaces the link flags)")
    ("intra-bw-GBps", po::value(&c.intra_bw_GBps)->default_value(c.intra_bw_GBps), "intra-node bandwidth per rank per direction, GB/s")
    ("inter-bw-Gbps", po::value(&c.inter_bw_Gbps)->default_value(c.inter_bw_Gbps), "inter-node (NIC) bandwidth per rank per direction, Gb/s")
    ("intra-lat-us", po::value(&c.intra_lat_us)->default_value(c.intra_lat_us), "intra-node latency, microseconds")
    ("inter-lat-us", po::value(&c.inter_lat_us)->default_value(c.inter_lat_us), "inter-node latency, microseconds")
    ("routers", po::value(&routers)->default_value("softmax_topk,sigmoid_topk"), "comma-separated routers to compare")
    ("router-arg", po::value(&router_args)->composing(), "router knob NAME.key=value (repeatable)")
    ("capacity-factor", po::value(&c.capacity_factor)->default_value(c.capacity_factor), "C = ceil(CF*k*T/E); 0 = unlimited")
    ("drop-policy", po::value(&c.drop_policy)->default_value(c.drop_policy), "which assignments an expert over capacity keeps: choice_first (first choices before second choices, GShard) | token_order (token order whatever the choice rank: Megatron-Core's \"position\") | probability (highest weight: Megatron-Core's \"probs\"); position = choice_first (older name)")
    ("capacity-scope", po::value(&c.capacity_scope)->default_value(c.capacity_scope), "global (C over the EP group's tokens) | local (C per EP rank over its own tokens, as Megatron-Core drops)")
    ("capacity-rounding", po::value(&c.capacity_rounding)->default_value(c.capacity_rounding), "exact (C = ceil of the exact CF*k*T/E) | framework (Megatron-Core's ceil((T*k/E)*CF) in double: one more when CF is not representable and the product is whole)")
    ("placement", po::value(&c.placement)->default_value(c.placement), "expert placement (see `moebench list placements`), or file:PATH: a fixed physical-to-logical map per layer (SGLang --init-expert-location JSON or `moebench export placement`)")
    ("redundant-experts", po::value(&c.redundant_experts)->default_value(c.redundant_experts), "extra expert copies for load_balanced/eplb (raised so every rank holds the same number of slots)")
    ("expert-groups", po::value(&c.expert_groups)->default_value(c.expert_groups), "eplb: expert groups (0: one per node, as group-limited routing uses)")
    ("replica-select", po::value(&c.replica_select)->default_value(c.replica_select), "copy of a replicated expert a token goes to: locality | round_robin | random | token_hash")
    ("placement-loads", po::value(&c.placement_loads)->default_value(c.placement_loads), "loads a load-aware placement balances: none | oracle (the step's own) | warmup | ema | file:LOADS.h5[#router] (offline EPLB: expert loads of a results file's router, summed over its steps, or of a trace; placed once); auto = ema for load_balanced/eplb, none otherwise")
    ("placement-warmup", po::value(&c.placement_warmup)->default_value(c.placement_warmup), "warmup: place once from the mean load of the first N steps")
    ("replace-every", po::value(&c.replace_every)->default_value(c.replace_every), "ema: re-place after every N steps")
    ("placement-ema", po::value(&c.placement_ema)->default_value(c.placement_ema), "ema: decay d of load <- d*load + (1-d)*step load")
    ("replace-max-moves", po::value(&c.replace_max_moves)->default_value(c.replace_max_moves), "per layer per re-placement, move at most N expert copies: the N that most even out the GPU loads (0: all the new placement needs)")
    ("ffn-hidden", po::value(&c.ffn_hidden)->default_value(c.ffn_hidden), "expert FFN width for the re-placement cost, 3 x hidden x ffn-hidden x dtype bytes per moved copy (0: = hidden)")
    ("dedup", po::value(&c.dedup)->default_value(c.dedup), "token_expert | token_rank | token_node")
    ("backend", po::value(&c.backend)->default_value(c.backend), "exchange backend (see `moebench list backends`)")
    ("route-on", po::value(&c.route_on)->default_value(c.route_on), "cpu | gpu (CUDA routing kernels, builds with CUDA only)")
    ("a2a-algo", po::value(&c.a2a_algo)->default_value(c.a2a_algo), "all-to-all algorithm, run by real backends and modelled by every backend: alltoallv | pairwise | hierarchical")
    ("warmup", po::value(&c.warmup)->default_value(c.warmup), "untimed exchanges before the timed ones (mpi backend)")
    ("iters", po::value(&c.iters)->default_value(c.iters), "timed exchanges per step and layer, averaged (mpi backend)")
    ("out", po::value(&c.out), "HDF5 results file (none if not given)")
    ("force", po::bool_switch(&c.force), "overwrite an existing results file")
    ("max-memory", po::value(&c.max_memory)->default_value(c.max_memory), "preflight: refuse a run whose estimated peak memory per process exceeds this (e.g. 64G; auto: the node's available memory over its processes; 0: no check)")
    ("resume", po::bool_switch(&c.resume), "continue the results file --out from its last complete step (same options; --steps may be raised); a missing file starts a new run")
    ("dispatch-matrix", po::value(&c.dispatch_matrix)->default_value(c.dispatch_matrix), "save [steps,layers,R,R] dispatch_tokens: auto | on | off")
    ("progress", po::value(&c.progress)->default_value(c.progress), "auto | bar | lines | off");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    if (vm.count("help")) {
      if (help_text) {
        std::ostringstream os;
        os << opts;
        *help_text = os.str();
      }
      return c;
    }
    if (vm.count("config")) {
      const auto path = vm["config"].as<std::string>();
      std::ifstream in(path);
      if (!in) throw InputError("--config " + path + ": cannot open file");
      try {
        po::store(po::parse_config_file(in, opts), vm);
      } catch (const po::error& e) {
        throw InputError("--config " + path + ": " + e.what());
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string("command line: ") + e.what());
  }
  for (const auto& [name, value] : vm)
    if (!value.defaulted()) c.explicit_options.insert(name);
  c.routers = split_list(routers);
  for (const auto& spec : router_args) add_named_arg(c.router_args, "router-arg", spec);
  for (const auto& spec : workload_args) add_named_arg(c.workload_args, "workload-arg", spec);
  std::ostringstream cmd;
  for (int i = 0; i < argc; ++i) cmd << (i ? " " : "") << argv[i];
  c.command_line = cmd.str();
  return c;
}

namespace {

void load_topology_file(RunConfig& c, std::vector<std::string>& problems) {
  std::ifstream in(c.topology_file);
  if (!in) {
    problems.push_back("--topology " + c.topology_file + ": cannot open file");
    return;
  }
  po::options_description o;
  double intra_bw = c.intra_bw_GBps, inter_bw = c.inter_bw_Gbps, intra_lat = c.intra_lat_us,
         inter_lat = c.inter_lat_us, node_bw = 0;
  int32_t rpn = 0, nics = 0;
  std::string name, links = "independent";
  o.add_options()("name", po::value(&name))("ranks_per_node", po::value(&rpn))(
      "links", po::value(&links))("intra.bandwidth_GBps", po::value(&intra_bw))(
      "intra.latency_us", po::value(&intra_lat))("intra.node_bandwidth_GBps", po::value(&node_bw))(
      "inter.bandwidth_Gbps", po::value(&inter_bw))("inter.latency_us", po::value(&inter_lat))(
      "inter.nics_per_node", po::value(&nics));
  po::variables_map vm;
  try {
    po::store(po::parse_config_file(in, o), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    problems.push_back("--topology " + c.topology_file + ": " + e.what());
    return;
  }
  const std::string where = "--topology " + c.topology_file + ": ";
  const size_t before = problems.size();
  auto bad = [&](const char* key, const std::string& value, const char* rule) {
    if (vm.count(key)) problems.push_back(where + key + " = " + value + ": " + rule);
  };
  if (links != "independent" && links != "shared")
    problems.push_back(where + "links = '" + links + "' (known: independent, shared)");
  if (!(intra_bw > 0) || !std::isfinite(intra_bw))
    bad("intra.bandwidth_GBps", num(intra_bw), "must be > 0");
  if (!(inter_bw > 0) || !std::isfinite(inter_bw))
    bad("inter.bandwidth_Gbps", num(inter_bw), "must be > 0");
  if (!(intra_lat >= 0) || !std::isfinite(intra_lat))
    bad("intra.latency_us", num(intra_lat), "must be >= 0");
  if (!(inter_lat >= 0) || !std::isfinite(inter_lat))
    bad("inter.latency_us", num(inter_lat), "must be >= 0");
  if (!(node_bw >= 0) || !std::isfinite(node_bw))
    bad("intra.node_bandwidth_GBps", num(node_bw), "must be >= 0 (0: no shared intra-node fabric)");
  if (rpn < 1) bad("ranks_per_node", std::to_string(rpn), "must be >= 1");
  if (nics < 0)
    bad("inter.nics_per_node", std::to_string(nics), "must be >= 0 (0: one NIC per rank)");
  if (problems.size() != before) return;
  c.shared_links = links == "shared";
  c.intra_bw_GBps = intra_bw;
  c.inter_bw_Gbps = inter_bw;
  c.intra_lat_us = intra_lat;
  c.inter_lat_us = inter_lat;
  c.intra_node_bw_GBps = node_bw;
  c.nics_per_node = nics;
  if (rpn > 0 && c.ranks_per_node == 0) c.ranks_per_node = rpn;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

void check_name(std::vector<std::string>& problems, const std::string& field,
                const std::string& value, const std::vector<std::string>& known) {
  for (const auto& k : known)
    if (k == value) return;
  problems.push_back(field + ": unknown value '" + value + "' (known: " + join(known) + ")");
}

}  // namespace

std::vector<std::string> resolve_and_validate(
    RunConfig& c, int world_size, const std::function<std::string(const RunConfig&)>& preflight) {
  std::vector<std::string> p;
  if (!c.topology_file.empty()) load_topology_file(c, p);
  if (c.workload == "trace") {
    if (c.trace_file.empty())
      p.push_back("--workload trace: needs --trace FILE");
    else
      apply_trace_defaults(c, p);
  } else if (!c.trace_file.empty()) {
    p.push_back("--trace " + c.trace_file + ": only used with --workload trace (got --workload " +
                c.workload + ")");
  }
  check_name(p, "--trace-tail", c.trace_tail, {"none", "mass", "profile"});
  check_name(p, "--tail-prior", c.tail_prior, {"popularity", "uniform"});
  if (!(c.tail_noise >= 0) || !std::isfinite(c.tail_noise))
    p.push_back("--tail-noise: must be finite and >= 0 (got " + num(c.tail_noise) + ")");
  if ((c.trace_tail == "mass" || c.trace_tail == "profile") && c.workload != "trace")
    p.push_back(
        "--trace-tail " + c.trace_tail +
        ": completes an assignment trace, only used with --workload trace (got --workload " +
        c.workload + ")");
  if (c.workload != "trace" && c.explicit_options.count("count-sources"))
    p.push_back("--count-sources: only for a count-only trace (--workload trace)");
  if (c.experts < 1) p.push_back("--experts: must be >= 1 (got " + std::to_string(c.experts) + ")");
  if (c.top_k < 1 || c.top_k > c.experts)
    p.push_back("--top-k: must be in [1, experts=" + std::to_string(c.experts) + "] (got " +
                std::to_string(c.top_k) + ")");
  if (c.layers < 1) p.push_back("--layers: must be >= 1 (got " + std::to_string(c.layers) + ")");
  if (c.steps < 1) p.push_back("--steps: must be >= 1 (got " + std::to_string(c.steps) + ")");
  if (c.tokens_per_rank < 1)
    p.push_back("--tokens-per-rank: must be >= 1 (got " + std::to_string(c.tokens_per_rank) + ")");
  if (c.seq_len < 1) p.push_back("--seq-len: must be >= 1 (got " + std::to_string(c.seq_len) + ")");
  if (c.hidden < 1) p.push_back("--hidden: must be >= 1 (got " + std::to_string(c.hidden) + ")");
  if (c.dtype_bytes() == 0)
    p.push_back("--dtype: unknown value '" + c.dtype + "' (known: fp32, bf16, fp16, fp8)");
  if (!(c.capacity_factor >= 0) || !std::isfinite(c.capacity_factor))
    p.push_back("--capacity-factor: must be >= 0, 0 meaning unlimited (got " +
                num(c.capacity_factor) + ")");
  if (c.drop_policy == "position") c.drop_policy = "choice_first";  // the older name
  check_name(p, "--count-sources", c.count_sources, {"uniform"});
  check_name(p, "--drop-policy", c.drop_policy, {"choice_first", "token_order", "probability"});
  check_name(p, "--capacity-scope", c.capacity_scope, {"global", "local"});
  check_name(p, "--capacity-rounding", c.capacity_rounding, {"exact", "framework"});
  check_name(p, "--dedup", c.dedup, {"token_expert", "token_rank", "token_node"});
  check_name(p, "--replica-select", c.replica_select,
             {"locality", "round_robin", "random", "token_hash"});
  if (c.placement_loads.rfind("file:", 0) == 0) {
    if (c.placement_loads.size() == 5 || c.placement_loads[5] == '#')
      p.push_back("--placement-loads file:: expected file:PATH[#router]");
  } else {
    check_name(p, "--placement-loads", c.placement_loads,
               {"auto", "none", "oracle", "warmup", "ema", "file:PATH[#router]"});
  }
  if (c.replace_max_moves < 0)
    p.push_back("--replace-max-moves: must be >= 0 (got " + std::to_string(c.replace_max_moves) +
                ")");
  if (c.redundant_experts < 0)
    p.push_back("--redundant-experts: must be >= 0 (got " + std::to_string(c.redundant_experts) +
                ")");
  if (c.expert_groups < 0)
    p.push_back("--expert-groups: must be >= 0 (got " + std::to_string(c.expert_groups) + ")");
  if (c.placement_warmup < 1)
    p.push_back("--placement-warmup: must be >= 1 (got " + std::to_string(c.placement_warmup) +
                ")");
  if (c.replace_every < 1)
    p.push_back("--replace-every: must be >= 1 (got " + std::to_string(c.replace_every) + ")");
  if (!(c.placement_ema >= 0 && c.placement_ema < 1))
    p.push_back("--placement-ema: must be in [0, 1) (got " + num(c.placement_ema) + ")");
  if (c.ffn_hidden < 0)
    p.push_back("--ffn-hidden: must be >= 0 (got " + std::to_string(c.ffn_hidden) + ")");
  if (c.resume && c.out.empty())
    p.push_back("--resume: needs --out FILE (the results file to continue)");
  if (c.resume && c.force)
    p.push_back(
        "--resume and --force: pick one (--force starts the file again, --resume continues it)");
  check_name(p, "--dispatch-matrix", c.dispatch_matrix, {"auto", "on", "off"});
  check_name(p, "--a2a-algo", c.a2a_algo, {"alltoallv", "pairwise", "hierarchical"});
  check_name(p, "--route-on", c.route_on, {"cpu", "gpu"});
  if (c.route_on == "gpu") {
    const auto gpu = known_gpu_routers();
    if (gpu.empty())
      p.push_back(
          "--route-on gpu: this build has no GPU routing (CUDA and NCCL were not found when it was "
          "configured)");
    else
      for (const auto& r : c.routers)
        if (std::find(gpu.begin(), gpu.end(), r.substr(0, r.find('@'))) == gpu.end())
          p.push_back("--route-on gpu: router " + r +
                      " has no GPU implementation (GPU routers: " + join(gpu) + ")");
  }
  if (c.warmup < 0) p.push_back("--warmup: must be >= 0 (got " + std::to_string(c.warmup) + ")");
  if (c.iters < 1) p.push_back("--iters: must be >= 1 (got " + std::to_string(c.iters) + ")");
  check_name(p, "--progress", c.progress, {"auto", "bar", "lines", "off"});
  check_name(p, "--workload", c.workload, known_workloads());
  if (c.placement.rfind("file:", 0) == 0) {
    if (c.placement.size() == 5) p.push_back("--placement file:: expected file:PATH");
  } else {
    auto known = known_placements();
    known.push_back("file:PATH");
    check_name(p, "--placement", c.placement, known);
  }
  if (c.backend == "nccl" && !contains(known_backends(), "nccl"))
    p.push_back(
        "--backend nccl: this build has no NCCL backend (CUDA and NCCL were not found when it was "
        "configured)");
  else
    check_name(p, "--backend", c.backend, known_backends());
  if (!(c.intra_bw_GBps > 0) || !std::isfinite(c.intra_bw_GBps))
    p.push_back("--intra-bw-GBps: must be finite and > 0 (got " + num(c.intra_bw_GBps) + ")");
  if (!(c.inter_bw_Gbps > 0) || !std::isfinite(c.inter_bw_Gbps))
    p.push_back("--inter-bw-Gbps: must be finite and > 0 (got " + num(c.inter_bw_Gbps) + ")");
  if (!(c.intra_lat_us >= 0) || !std::isfinite(c.intra_lat_us))
    p.push_back("--intra-lat-us: must be finite and >= 0 (got " + num(c.intra_lat_us) + ")");
  if (!(c.inter_lat_us >= 0) || !std::isfinite(c.inter_lat_us))
    p.push_back("--inter-lat-us: must be finite and >= 0 (got " + num(c.inter_lat_us) + ")");

  // EP group shape: ep_size = nodes * ranks_per_node, every process hosts the same number of ranks.
  if (c.ep_size < 0 || c.nodes < 0 || c.ranks_per_node < 0) {
    p.push_back("--ep-size/--nodes/--ranks-per-node: must be >= 0");
  } else {
    const bool ep_from_shape = c.ep_size == 0 && c.nodes > 0 && c.ranks_per_node > 0;
    if (c.ep_size == 0) c.ep_size = ep_from_shape ? c.nodes * c.ranks_per_node : world_size;
    if (c.nodes == 0 && c.ranks_per_node == 0) {
      c.nodes = 1;
      c.ranks_per_node = c.ep_size;
    } else if (c.nodes == 0) {
      if (c.ep_size % c.ranks_per_node == 0)
        c.nodes = c.ep_size / c.ranks_per_node;
      else
        p.push_back("--ranks-per-node " + std::to_string(c.ranks_per_node) +
                    " does not divide the EP size " + std::to_string(c.ep_size));
    } else if (c.ranks_per_node == 0) {
      if (c.ep_size % c.nodes == 0)
        c.ranks_per_node = c.ep_size / c.nodes;
      else
        p.push_back("--nodes " + std::to_string(c.nodes) + " does not divide the EP size " +
                    std::to_string(c.ep_size));
    }
    if (c.nodes > 0 && c.ranks_per_node > 0 &&
        static_cast<int64_t>(c.nodes) * c.ranks_per_node != c.ep_size)
      p.push_back("--nodes x --ranks-per-node = " + std::to_string(c.nodes) + " x " +
                  std::to_string(c.ranks_per_node) + " = " +
                  std::to_string(static_cast<int64_t>(c.nodes) * c.ranks_per_node) +
                  " != EP size " + std::to_string(c.ep_size) +
                  (c.ep_size == world_size ? " (the MPI world size)" : ""));
    if (ep_from_shape && c.ep_size % world_size != 0)
      p.push_back("--nodes x --ranks-per-node = " + std::to_string(c.nodes) + " x " +
                  std::to_string(c.ranks_per_node) + " = " + std::to_string(c.ep_size) +
                  " EP ranks, not a multiple of the MPI world size " + std::to_string(world_size) +
                  " (each process hosts EP/world ranks)");
    else if (c.ep_size > 0 && c.ep_size % world_size != 0)
      p.push_back("--ep-size " + std::to_string(c.ep_size) +
                  " is not a multiple of the MPI world size " + std::to_string(world_size));
    if (c.backend != "sim" && c.ep_size != world_size)
      p.push_back("--backend " + c.backend +
                  " moves real bytes and needs --ep-size == MPI world size (" +
                  std::to_string(world_size) + "), got " + std::to_string(c.ep_size));
  }

  // NICs shared by consecutive ranks, or several per rank: one must divide the other.
  if (c.nics_per_node > 0 && c.ranks_per_node > 0 && c.ranks_per_node % c.nics_per_node != 0 &&
      c.nics_per_node % c.ranks_per_node != 0)
    p.push_back("--topology " + c.topology_file + ": inter.nics_per_node = " +
                std::to_string(c.nics_per_node) + ": must divide ranks_per_node (" +
                std::to_string(c.ranks_per_node) + ") or be a multiple of it");

  if (p.empty() && preflight) {  // before anything sized by E, L, R or T is built below
    const std::string problem = preflight(c);
    if (!problem.empty()) return {problem};
  }

  // Routers and their args: every name known, every knob understood.
  if (c.routers.empty())
    p.push_back("--routers: empty list (known: " + join(known_routers()) + ")");
  std::set<std::string> seen;
  for (const auto& r : c.routers) {
    if (!seen.insert(r).second) p.push_back("--routers: '" + r + "' is listed twice");
  }
  for (const auto& r : seen) {
    const auto at = r.find('@');
    if (at != std::string::npos &&
        (at + 1 == r.size() || r.find_first_of("@/, ", at + 1) != std::string::npos))
      p.push_back("--routers: '" + r +
                  "': a label after '@' must be non-empty without '@', '/', ',' or spaces");
    check_name(p, "--routers", r.substr(0, at), known_routers());
  }
  for (const auto& [name, kv] : c.router_args) {
    if (!seen.count(name))
      p.push_back("--router-arg " + name + ".*: router '" + name + "' is not in --routers");
  }
  if (p.empty()) {
    for (const auto& r : c.routers) {
      const std::string problem = check_router_args(c, r);
      if (!problem.empty()) p.push_back(problem);
    }
  }
  for (const auto& [name, kv] : c.workload_args)
    if (name != c.workload)
      p.push_back("--workload-arg " + name + ".*: workload '" + name +
                  "' is not the selected --workload " + c.workload);
  if (p.empty()) {
    const std::string problem = check_placement(c);
    if (!problem.empty()) p.push_back(problem);
  }
  if (p.empty()) {
    const std::string problem = check_workload_args(c);
    if (!problem.empty()) p.push_back(problem);
  }
  return p;
}

}  // namespace moe
