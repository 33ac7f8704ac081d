// moebench trace convert | gen | info: importers, synthetic traces, and a summary of a trace file.
#include "workloads/trace_cli.hpp"

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <set>
#include <sstream>

#include "harness/core/build_info.hpp"
#include "harness/core/error.hpp"
#include "harness/routing/topk_rows.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/trace_file.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: moebench trace <convert|gen|info|truncate> ...\n"
    "  convert --from csv|jsonl|megatron|npy|vllm-routed|counts-csv|counts-npy|sglang-stat --in "
    "FILE [FILE...] "
    "--out TRACE.h5   import "
    "a capture\n"
    "  gen --workload NAME --experts E --top-k K --layers L --steps S --tokens N --out TRACE.h5   "
    "synthetic logit trace\n"
    "  info TRACE.h5                      kind, experts, layers, tokens, sequences, top-k, size, "
    "per-layer load\n"
    "  truncate TRACE.h5 --top-k K --weights-are probabilities|renormalized --out OUT.h5   the "
    "top-k trace a logger would have written\n"
    "  (moebench trace <command> --help for the options; the format: workloads/TRACE_FORMAT.md)\n";

std::string joined(int argc, char** argv) {
  std::string s = "moebench trace";
  for (int i = 0; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

po::variables_map parse(int argc, char** argv, const po::options_description& opts,
                        const po::positional_options_description* pos = nullptr) {
  po::variables_map vm;
  try {
    auto parser = po::command_line_parser(argc, argv).options(opts);
    if (pos) parser.positional(*pos);
    po::store(parser.run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string("trace ") + argv[0] + ": " + e.what());
  }
  return vm;
}

void add_kv(std::map<std::string, std::string>& m, const std::string& spec, const char* option) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0)
    throw InputError(std::string("--") + option + " '" + spec + "': expected NAME=VALUE");
  m[spec.substr(0, eq)] = spec.substr(eq + 1);
}

int convert(int argc, char** argv) {
  ImportOptions o;
  std::string from, layers, dtype = "fp16";
  std::vector<std::string> fields, skip_if;
  po::options_description opts("moebench trace convert options");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("from", po::value(&from)->required(), "input format: csv | jsonl | megatron | npy | vllm-routed | counts-csv | counts-npy | sglang-stat")
    ("in", po::value(&o.inputs)->multitoken()->required(), "input file(s): csv and npy one per layer (or one [L,T,E] npy); jsonl any number; megatron the trace folder or its router_trace_rank*.jsonl")
    ("out", po::value(&o.out)->required(), "trace file to write")
    ("force", po::bool_switch(&o.force), "replace an existing output file")
    ("layers", po::value(&layers), "the model's layer numbers of the inputs, e.g. 2-9 or 0,3,5 (csv, npy)")
    ("field", po::value(&fields)->composing(), "jsonl: NAME=KEY, NAME one of experts weights layer step sequence position token rank domain; csv: position|sequence|token|domain=COLUMN")
    ("token-table", po::value(&o.token_table), "npy, csv: FILE.csv with any of the columns sequence, position, domain, token, rank, one row per token in token order")
    ("domain-experts", po::value(&o.domain_experts), "the domain -> experts map stored in the trace, e.g. 0=0;1=2+3 (needs domain labels)")
    ("skip-if", po::value(&skip_if)->composing(), "jsonl: drop records whose KEY equals VALUE (KEY=VALUE, repeatable)")
    ("skip-incomplete", po::bool_switch(&o.skip_incomplete), "jsonl: drop records lacking a mapped key (default: an error)")
    ("top-k", po::value(&o.top_k)->default_value(0), "counts-*: the model's k, recorded for information (replay uses k = 1 per assignment)")
    ("experts", po::value(&o.experts)->default_value(0), "routed experts E (required for jsonl/megatron; checked for csv/npy)")
    ("tokens-per-step", po::value(&o.tokens_per_step)->default_value(0), "csv/npy: split the token stream into steps of N tokens; vllm-routed: whole requests up to N tokens a step (0: one step)")
    ("kind", po::value(&o.kind)->default_value("auto"), "csv: auto | logits | assignments")
    ("values", po::value(&o.values)->default_value("logits"), "csv dense rows / npy: logits | probabilities (stored as log)")
    ("weights-are", po::value(&o.weights_are)->default_value("unknown"), "recorded weights are: probabilities | renormalized | gates | unknown")
    ("expert-prefix", po::value(&o.expert_prefix)->default_value("expert_"), "csv: expert column name prefix")
    ("dtype", po::value(&dtype)->default_value("fp16"), "logit storage: fp16 | fp32")
    ("model", po::value(&o.model)->default_value(""), "model name for the trace's attributes")
    ("layer-mismatch", po::value(&o.layer_mismatch)->default_value("error"), "a step whose layers hold different tokens: error | intersect (keep the tokens every layer of the step has); per-layer is not implemented yet")
    ("mtp-layers", po::value(&o.mtp_layers)->default_value("skip"), "megatron: MTP records: skip | import (as layers 1000*(mtp_idx+1)+layer)")
    ("ignore-logits", po::bool_switch(&o.ignore_logits), "megatron: import top_indices even when the logits sidecar exists");
  // clang-format on
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h")
      return std::printf("%s", (std::ostringstream() << opts).str().c_str()), 0;
  parse(argc, argv, opts);
  for (const auto& f : fields) add_kv(o.fields, f, "field");
  for (const auto& s : skip_if) {
    std::map<std::string, std::string> one;
    add_kv(one, s, "skip-if");
    o.skip_if.emplace_back(*one.begin());
  }
  if (!layers.empty()) o.layer_ids = parse_layer_list(layers);
  if (dtype != "fp16" && dtype != "fp32")
    throw InputError("--dtype " + dtype + ": unknown (known: fp16, fp32)");
  static const std::set<std::string> weights{"probabilities", "renormalized", "gates", "unknown"};
  if (!weights.count(o.weights_are))
    throw InputError("--weights-are " + o.weights_are +
                     ": unknown (known: probabilities, renormalized, gates, unknown)");
  o.fp16 = dtype == "fp16";
  o.created_by = joined(argc, argv);
  if (!o.token_table.empty() && from != "npy" && from != "csv")
    throw InputError("--token-table " + o.token_table +
                     ": only for --from npy and csv (jsonl takes --field NAME=KEY)");
  if (from == "csv")
    import_csv(o);
  else if (from == "jsonl")
    import_jsonl(o);
  else if (from == "megatron")
    import_megatron(o);
  else if (from == "npy")
    import_npy(o);
  else if (from == "vllm-routed")
    import_vllm_routed(o);
  else if (from == "counts-csv")
    import_counts_csv(o);
  else if (from == "counts-npy" || from == "sglang-stat")
    import_counts_npy(o, from);
  else
    throw InputError("--from " + from +
                     ": unknown format (known: csv, jsonl, megatron, npy, vllm-routed, counts-csv, "
                     "counts-npy, sglang-stat)");
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

int gen(int argc, char** argv) {
  std::string workload = "zipf", out, dtype = "fp16";
  int32_t E = 64, k = 6, L = 4, S = 2;
  int64_t tokens = 4096, seq_len = 1024;
  uint64_t seed = 1;
  bool force = false;
  std::vector<std::string> wargs;
  po::options_description opts("moebench trace gen options");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("workload", po::value(&workload)->default_value(workload), "synthetic workload (moebench list workloads)")
    ("workload-arg", po::value(&wargs)->composing(), "workload knob NAME.key=value (repeatable)")
    ("experts", po::value(&E)->default_value(E), "experts E")
    ("top-k", po::value(&k)->default_value(k), "the model's k, stored as the trace's top_k")
    ("layers", po::value(&L)->default_value(L), "layers")
    ("steps", po::value(&S)->default_value(S), "steps")
    ("tokens", po::value(&tokens)->default_value(tokens), "tokens per step")
    ("seq-len", po::value(&seq_len)->default_value(seq_len), "tokens per sequence")
    ("seed", po::value(&seed)->default_value(seed), "RNG seed")
    ("dtype", po::value(&dtype)->default_value(dtype), "fp16 | fp32")
    ("out", po::value(&out)->required(), "trace file to write")
    ("force", po::bool_switch(&force), "replace an existing output file");
  // clang-format on
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h")
      return std::printf("%s", (std::ostringstream() << opts).str().c_str()), 0;
  parse(argc, argv, opts);
  if (E < 1 || k < 1 || k > E || L < 1 || S < 1 || tokens < 1 || seq_len < 1)
    throw InputError(
        "trace gen: need experts >= 1, 1 <= top-k <= experts, layers, steps, tokens, seq-len >= 1");
  if (dtype != "fp16" && dtype != "fp32")
    throw InputError("--dtype " + dtype + ": unknown (known: fp16, fp32)");
  if (workload == "trace") throw InputError("trace gen: --workload trace is not synthetic");
  std::map<std::string, std::string> args;
  for (const auto& spec : wargs) {
    const size_t dot = spec.find('.');
    if (dot == std::string::npos || spec.substr(0, dot) != workload)
      throw InputError("--workload-arg " + spec + ": expected " + workload + ".key=value");
    add_kv(args, spec.substr(dot + 1), "workload-arg");
  }
  WorkloadSetup ws{E, L, k, 1, tokens, seq_len, seed};
  auto w = make_workload(workload, ws, args);
  TokenBatch b;
  w->generate(0, 0, 0, tokens, b);
  TraceWriterOptions o;
  o.kind = "logits";
  o.num_experts = E;
  o.num_layers = L;
  o.top_k = k;
  o.fp16 = dtype == "fp16";
  o.has_sequences = true;
  o.has_domain = !b.domain.empty();
  o.force = force;
  o.model = "synthetic " + workload;
  o.source = "moebench workload " + workload + " seed " + std::to_string(seed);
  o.capture_method = "generated";
  o.created_by = joined(argc, argv);
  TraceWriter writer(out, o);
  for (int32_t s = 0; s < S; ++s) {
    w->generate(s, 0, 0, tokens, b);
    const int64_t first = writer.append_tokens(s, tokens, b.sequence, b.position, {}, b.domain);
    for (int32_t l = 0; l < L; ++l) {
      if (l > 0) w->generate(s, l, 0, tokens, b);
      writer.write_logits(l, first, tokens, b.logits.data());
    }
  }
  writer.finish();
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

// A full-logit trace turned into the top-k trace a logger would have written: the K largest
// logits of every token (ties to the lower id, as every top-k router here), with their softmax
// probabilities over all E (probabilities) or over the K (renormalized). Tokens, sequences and the
// optional token fields are copied; the tail-completion error is measured against the original.
int truncate(int argc, char** argv) {
  std::string in, out, weights_are = "probabilities";
  int32_t K = 0;
  bool force = false;
  po::options_description opts("moebench trace truncate options");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("trace", po::value(&in)->required(), "full-logit trace to truncate")
    ("top-k", po::value(&K)->required(), "experts a logger would have recorded per token")
    ("weights-are", po::value(&weights_are)->default_value(weights_are), "probabilities (softmax over all experts) | renormalized (softmax over the top-k)")
    ("out", po::value(&out)->required(), "assignment trace to write")
    ("force", po::bool_switch(&force), "replace an existing output file");
  // clang-format on
  po::positional_options_description pos;
  pos.add("trace", 1);
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h")
      return std::printf("%s", (std::ostringstream() << opts).str().c_str()), 0;
  parse(argc, argv, opts, &pos);
  if (weights_are != "probabilities" && weights_are != "renormalized")
    throw InputError("trace truncate: --weights-are " + weights_are +
                     ": unknown value (known: probabilities, renormalized)");
  TraceReader r(in);
  const TraceHeader& h = r.header();
  const int32_t E = h.num_experts;
  if (!h.logits())
    throw InputError("trace truncate: " + in + " is not a logit trace (kind " + h.kind +
                     "); truncate needs full logits");
  if (K < 1 || K > E)
    throw InputError("trace truncate: --top-k must be in [1, experts=" + std::to_string(E) +
                     "] (got " + std::to_string(K) + ")");
  TraceWriterOptions o;
  o.kind = "assignments";
  o.num_experts = E;
  o.num_layers = h.num_layers;
  o.top_k = K;
  o.has_sequences = h.has_sequences;
  o.has_token_id = h.has_token_id;
  o.has_domain = h.has_domain;
  o.has_rank = h.has_rank;
  o.layer_ids = h.layer_ids;
  o.weights_are = weights_are;
  o.model = h.model;
  o.source = in;
  o.capture_method = "truncated to the top-" + std::to_string(K) + " of a logit trace (" +
                     (h.capture_method.empty() ? "unknown capture" : h.capture_method) + ")";
  o.created_by = joined(argc, argv);
  o.force = force;
  TraceWriter writer(out, o);
  const TopKWeights tw =
      weights_are == "probabilities" ? TopKWeights::softmax_full : TopKWeights::softmax_topk;
  constexpr int64_t kBlock = 1 << 16;
  TraceTokens tok;
  std::vector<float> logits, w;
  std::vector<int32_t> ids;
  for (int32_t s = 0; s < h.num_steps; ++s) {
    const int64_t base = h.step_offsets[static_cast<size_t>(s)];
    const int64_t end = h.step_offsets[static_cast<size_t>(s) + 1];
    for (int64_t first = base; first < end; first += kBlock) {
      const int64_t n = std::min(kBlock, end - first);
      r.read_tokens(first, n, tok, true);
      const int64_t row =
          writer.append_tokens(s, n, h.has_sequences ? tok.sequence : std::vector<int64_t>{},
                               tok.position, tok.token_id, tok.domain, tok.rank);
      logits.resize(static_cast<size_t>(n * E));
      ids.resize(static_cast<size_t>(n * K));
      w.resize(static_cast<size_t>(n * K));
      for (int32_t l = 0; l < h.num_layers; ++l) {
        r.read_logits(l, first, n, logits.data());
        topk_rows(logits.data(), n, E, K, tw, ids.data(), w.data());
        writer.write_assignments(l, row, n, ids.data(), w.data());
      }
    }
  }
  writer.finish();
  std::printf("wrote %s: top-%d of %s (%s)\n", out.c_str(), K, in.c_str(), weights_are.c_str());
  return 0;
}

int info(int argc, char** argv) {
  std::string path;
  int32_t k_opt = 0;
  po::options_description opts("moebench trace info options");
  opts.add_options()("help,h", "show this help")("trace", po::value(&path)->required(),
                                                 "trace file")(
      "top-k", po::value(&k_opt)->default_value(0),
      "logit traces: k for the load summary (default: the trace's top_k, else 1)");
  po::positional_options_description pos;
  pos.add("trace", 1);
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h")
      return std::printf("%s", (std::ostringstream() << opts).str().c_str()), 0;
  parse(argc, argv, opts, &pos);
  TraceReader r(path);
  const TraceHeader& h = r.header();
  const int32_t E = h.num_experts;
  // Distinct sequences, streamed.
  constexpr int64_t kBlock = 1 << 16;
  int64_t sequences = 0, prev = std::numeric_limits<int64_t>::min();
  std::vector<int64_t> seq;
  if (h.has_sequences)
    for (int64_t first = 0; first < h.num_tokens; first += kBlock) {
      const int64_t n = std::min(kBlock, h.num_tokens - first);
      r.read_sequences(first, n, seq);
      for (int64_t x : seq) sequences += x != prev, prev = x;
    }
  std::string layers;
  for (size_t i = 0; i < h.layer_ids.size(); ++i)
    layers += (i ? "," : "") + std::to_string(h.layer_ids[i]);
  std::printf("trace %s\n", path.c_str());
  std::printf("  format      moebench-trace v%lld, kind %s%s\n",
              static_cast<long long>(kTraceFormatVersion), h.kind.c_str(),
              h.counts()
                  ? " (per-step expert counts only: no per-token ids, weights or source ranks)"
              : h.logits() ? (h.logits_fp16 ? " (float16)" : " (float32)")
                           : (" (weights: " + h.weights_are + ")").c_str());
  std::printf(
      "  experts     %d\n  layers      %d (model layers %s)\n  steps       %d\n  %s %lld "
      "(per layer)\n",
      E, h.num_layers, layers.c_str(), h.num_steps, h.counts() ? "assignments" : "tokens     ",
      static_cast<long long>(h.num_tokens));
  if (h.counts())
    std::printf(
        "  sequences   none (replay: each assignment one token, dealt to the EP ranks, "
        "--count-sources uniform)\n");
  else if (h.has_sequences)
    std::printf("  sequences   %lld\n", static_cast<long long>(sequences));
  else
    std::printf("  sequences   unknown (replay splits tokens in contiguous blocks)\n");
  if (h.has_domain) {
    // Distinct labels, streamed.
    std::set<int32_t> labels;
    std::vector<int32_t> dom;
    for (int64_t first = 0; first < h.num_tokens && labels.size() <= 1000; first += kBlock) {
      r.read_domains(first, std::min(kBlock, h.num_tokens - first), dom);
      labels.insert(dom.begin(), dom.end());
    }
    std::string list;
    int shown = 0;
    for (int32_t d : labels) {
      if (++shown > 16) {
        list += ", ...";
        break;
      }
      list += (list.empty() ? "" : ", ") + std::to_string(d);
    }
    std::printf("  domains     %s%zu labels (%s)\n", labels.size() > 1000 ? "more than " : "",
                std::min<size_t>(labels.size(), 1000), list.c_str());
    std::printf("  domain map  %s\n",
                h.domain_experts.empty()
                    ? "none (give one at replay: --workload-arg trace.domain_experts=0=0;1=2+3)"
                    : (h.domain_experts + " (domain=experts)").c_str());
  } else {
    std::printf("  domains     none (no /tokens/domain)\n");
  }
  std::printf("  top-k       %d%s\n", h.top_k,
              h.variable_k ? " (variable: rows padded)" : (h.top_k == 0 ? " (unknown)" : ""));
  std::printf("  size        %.1f MB on disk\n",
              static_cast<double>(std::filesystem::file_size(path)) / 1e6);
  std::printf("  model       %s\n  source      %s\n  captured by %s\n  created by  %s\n",
              h.model.empty() ? "-" : h.model.c_str(), h.source.empty() ? "-" : h.source.c_str(),
              h.capture_method.empty() ? "-" : h.capture_method.c_str(),
              h.created_by.empty() ? "-" : h.created_by.c_str());
  const int32_t k =
      h.logits() ? (k_opt > 0 ? k_opt : (h.top_k > 0 ? h.top_k : 1)) : std::max(h.top_k, 1);
  if (k > E)
    throw InputError("--top-k " + std::to_string(k) + " exceeds the trace's " + std::to_string(E) +
                     " experts");
  std::printf("  per-layer load (assignments per expert over all steps%s):\n",
              h.logits() ? (", top-" + std::to_string(k) + " of the logits").c_str() : "");
  std::printf("    %-6s %12s %10s %10s %8s %8s %8s\n", "layer", "assignments", "mean", "max",
              "max/mean", "cv", "unused");
  const auto loads = trace_expert_loads(r, k);
  for (int32_t l = 0; l < h.num_layers; ++l) {
    const std::vector<int64_t>& load = loads[static_cast<size_t>(l)];
    const int64_t total = std::accumulate(load.begin(), load.end(), int64_t{0});
    const double mean = static_cast<double>(total) / E;
    double var = 0;
    int64_t mx = 0, unused = 0;
    for (int64_t x : load) {
      var += (x - mean) * (x - mean);
      mx = std::max(mx, x);
      unused += x == 0;
    }
    std::printf("    %-6lld %12lld %10.1f %10lld %8.3f %8.3f %8lld\n",
                static_cast<long long>(h.layer_ids[l]), static_cast<long long>(total), mean,
                static_cast<long long>(mx), mean > 0 ? mx / mean : 0.0,
                mean > 0 ? std::sqrt(var / E) / mean : 0.0, static_cast<long long>(unused));
  }
  return 0;
}

}  // namespace

std::vector<std::vector<int64_t>> trace_expert_loads(TraceReader& r, int32_t k) {
  const TraceHeader& h = r.header();
  const int32_t E = h.num_experts;
  constexpr int64_t kBlock = 1 << 16;
  std::vector<std::vector<int64_t>> loads(static_cast<size_t>(h.num_layers),
                                          std::vector<int64_t>(static_cast<size_t>(E), 0));
  std::vector<float> logits, weights, val;
  std::vector<int32_t> ids;
  if (h.counts()) {  // the recorded counts, summed over the steps
    std::vector<int64_t> c;
    for (int32_t s = 0; s < h.num_steps; ++s) {
      r.read_counts(s, 1, c);
      for (int32_t l = 0; l < h.num_layers; ++l)
        for (int32_t e = 0; e < E; ++e)
          loads[static_cast<size_t>(l)][static_cast<size_t>(e)] +=
              c[static_cast<size_t>(l) * E + e];
    }
    return loads;
  }
  for (int32_t l = 0; l < h.num_layers; ++l)
    for (int64_t first = 0; first < h.num_tokens; first += kBlock) {
      const int64_t n = std::min(kBlock, h.num_tokens - first);
      ids.resize(static_cast<size_t>(n * k));
      if (h.logits()) {
        logits.resize(static_cast<size_t>(n * E));
        val.resize(static_cast<size_t>(n * k));
        r.read_logits(l, first, n, logits.data());
        topk_rows(logits.data(), n, E, k, TopKWeights::logits, ids.data(), val.data());
      } else {
        weights.resize(static_cast<size_t>(n * k));
        r.read_assignments(l, first, n, ids.data(), weights.data());
      }
      for (int32_t e : ids)
        if (e >= 0) ++loads[static_cast<size_t>(l)][static_cast<size_t>(e)];
    }
  return loads;
}

int trace_command(int argc, char** argv, const Comm& world) {
  const std::string sub = argc > 1 ? argv[1] : "";
  if (sub.empty() || sub == "--help" || sub == "-h" || sub == "help") {
    if (world.root()) std::printf("%s", kUsage);
    return sub.empty() ? 2 : 0;
  }
  if (world.size() > 1)
    throw InputError("trace " + sub + ": runs as one process (not under mpirun -np " +
                     std::to_string(world.size()) + ")");
  if (sub == "convert") return convert(argc - 1, argv + 1);
  if (sub == "gen") return gen(argc - 1, argv + 1);
  if (sub == "info") return info(argc - 1, argv + 1);
  if (sub == "truncate") return truncate(argc - 1, argv + 1);
  throw InputError("trace: unknown command '" + sub + "' (known: convert, gen, info, truncate)");
}

}  // namespace moe
