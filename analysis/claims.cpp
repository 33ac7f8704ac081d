#include "analysis/claims.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>

#include "analysis/convergence.hpp"
#include "analysis/report_cli.hpp"
#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"

namespace moe {

namespace {

std::string registry_name(const std::string& instance) {
  return instance.substr(0, instance.find('@'));
}

std::string json_string(const std::string& json, const std::string& key) {
  std::smatch m;
  if (std::regex_search(json, m, std::regex("\"" + key + "\":\"([^\"]*)\""))) return m[1];
  return "?";
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

struct Ctx {
  const ResultsFile& f;
  std::string workload;
  std::string baseline;  // first softmax_topk instance, or ""
  std::ostringstream out;
  std::vector<std::string> unsettled;  // stateful routers that had not converged

  std::vector<std::string> instances(const std::string& name) const {
    std::vector<std::string> v;
    for (const auto& r : f.routers)
      if (registry_name(r) == name) v.push_back(r);
    return v;
  }
  template <class F>
  double mean(const std::string& r, F get) const {
    const auto& recs = f.records.at(r);
    if (recs.empty()) return NAN;
    double s = 0;
    for (const auto& m : recs) s += get(m);
    return s / static_cast<double>(recs.size());
  }
  template <class F>
  double max(const std::string& r, F get) const {
    double v = -INFINITY;
    for (const auto& m : f.records.at(r)) v = std::max(v, static_cast<double>(get(m)));
    return v;
  }
  bool has_fig(const std::string& r, const std::string& name) const {
    auto it = f.figures.find(r);
    return it != f.figures.end() && it->second.count(name);
  }
  // Mean of a figure over records [first, last) (NaNs skipped); whole run by default.
  double fig(const std::string& r, const std::string& name, int64_t first = 0,
             int64_t last = -1) const {
    if (!has_fig(r, name)) return NAN;
    const auto& v = f.figures.at(r).at(name);
    if (last < 0) last = static_cast<int64_t>(v.size());
    double s = 0;
    int64_t n = 0;
    for (int64_t i = first; i < last && i < static_cast<int64_t>(v.size()); ++i)
      if (!std::isnan(v[i])) {
        s += v[i];
        ++n;
      }
    return n ? s / static_cast<double>(n) : NAN;
  }
  double bytes(const std::string& r) const {
    return mean(r, [](const StepLayerMetrics& m) {
      return static_cast<double>(m.dispatch_bytes_local + m.dispatch_bytes_intra +
                                 m.dispatch_bytes_inter);
    });
  }
  double inter_bytes(const std::string& r) const {
    return mean(
        r, [](const StepLayerMetrics& m) { return static_cast<double>(m.dispatch_bytes_inter); });
  }
  std::string vs_baseline(double mine, double base, const char* what) const {
    if (baseline.empty() || std::isnan(base) || base == 0) return "";
    return ", " + fmt("%+.1f%%", 100.0 * (mine / base - 1.0)) + " " + what + " vs " + baseline;
  }
  void claim(const std::string& who, const std::string& text) {
    out << "\n* " << who << ": " << text << "\n";
  }
  void measured(const std::string& text) {
    std::string mark;
    for (const auto& r : unsettled)
      if (text.rfind(r + ":", 0) == 0)
        mark = " [NOT CONVERGED: a cold-start figure, see the convergence notes]";
    for (const auto& r : f.tail_routers)
      if (text.rfind(r + ":", 0) == 0) mark += " [" + f.tail_mark(r) + "]";
    out << "    measured: " << text << mark << "\n";
  }
  void note(const std::string& text) { out << "    note: " << text << "\n"; }
  void absent(const std::string& router) {
    measured("not in this file (add `" + router + "` to --routers" +
             (baseline.empty() ? ", with softmax_topk as the baseline" : "") + ")");
  }
};

// The file, its workload and its baseline (the first softmax_topk instance).
Ctx context_of(const ResultsFile& f) {
  Ctx c{f, json_string(f.config_json, "workload"), "", {}, {}};
  for (const auto& r : f.routers)
    if (registry_name(r) == "softmax_topk") {
      c.baseline = r;
      break;
    }
  return c;
}

}  // namespace

std::string format_claims(const ResultsFile& f) {
  Ctx c = context_of(f);
  const int64_t L = f.layers;
  c.out << "Claims a replay can test, measured in " << f.path << " (workload " << c.workload << ", "
        << f.steps_done << " steps x " << L << " layers"
        << (c.baseline.empty() ? ", no softmax_topk baseline" : ", baseline " + c.baseline)
        << ")\n";
  if (f.status != "complete") c.out << "WARNING: partial file, completed steps only\n";
  for (const auto& rc : router_convergence(f))
    if (rc.settled_step < 0) c.unsettled.push_back(rc.router);
  for (const auto& n : router_notes(f)) c.out << n << "\n";

  c.claim("ETR (Li et al., arXiv 2406.00023)",
          "the capacity lower bound cuts tokens per expert by up to 40% against the baseline");
  for (const auto& r : c.instances("etr")) {
    const double mt = c.max(r, [](const StepLayerMetrics& m) { return m.max_tokens_per_expert; });
    std::string s = r + ": max tokens per expert " + fmt("%.0f", mt);
    if (!c.baseline.empty()) {
      const double bt =
          c.max(c.baseline, [](const StepLayerMetrics& m) { return m.max_tokens_per_expert; });
      s += " vs " + fmt("%.0f", bt) + " for " + c.baseline + " (" +
           fmt("%.1f%%", 100.0 * (1.0 - mt / bt)) + " fewer)";
    }
    s += "; C_ETR/C_base " + fmt("%.3f", c.fig(r, "c_ratio")) + ", ECR drop rate " +
         fmt("%.2f%%", 100.0 * c.fig(r, "ecr_drop_rate")) +
         ", mean affinity rank of dropped assignments " +
         fmt("%.2f", c.fig(r, "dropped_affinity_rank_mean"));
    c.measured(s);
  }
  if (c.instances("etr").empty()) c.absent("etr");
  c.note(
      "fewer tokens per expert come with dropped assignments; whether quality holds (the paper's "
      "+9.7-14.5% downstream) is not testable by replay");

  c.claim("LapSum soft top-k (Zasada et al., PMLR v306)",
          "comparable quality while activating significantly fewer experts");
  for (const auto& r : c.instances("lapsum")) {
    const double act = c.mean(r, [](const StepLayerMetrics& m) { return m.mean_active_experts; });
    std::string s = r + ": " + fmt("%.3f", act) + " experts per token";
    if (!c.baseline.empty())
      s += " vs " +
           fmt("%.3f", c.mean(c.baseline,
                              [](const StepLayerMetrics& m) { return m.mean_active_experts; })) +
           " (" + c.baseline + ")";
    s += c.vs_baseline(c.bytes(r), c.bytes(c.baseline), "dispatch bytes");
    s += "; truncated mass per token " + fmt("%.4f", c.fig(r, "mass_truncated"));
    c.measured(s);
  }
  if (c.instances("lapsum").empty()) c.absent("lapsum");
  c.note(
      "matched budget = the same k (the per-layer k_l profile sums to L*k); quality is not "
      "testable by replay");

  c.claim("KERN (Zheng et al., arXiv 2509.25913)",
          "zero additional cost; the selection equals softmax top-k, only the weights change");
  for (const auto& r : c.instances("kern")) {
    std::string s = r + ": free sparsity (tokens with < k positive logits) " +
                    fmt("%.2f%%", 100.0 * c.fig(r, "free_sparsity")) +
                    ", zero-weight picks per token " +
                    fmt("%.3f", c.fig(r, "zero_weight_assignments"));
    s += c.vs_baseline(c.bytes(r), c.bytes(c.baseline), "dispatch bytes");
    c.measured(s);
  }
  if (c.instances("kern").empty()) c.absent("kern");
  c.note(
      "traffic changes only with --router-arg kern.skip_zero=true (fewer sends) or KERN-trained "
      "logits; the loss gains are not testable by replay");

  c.claim("ReMoE (Wang et al., arXiv 2412.14711)",
          "ReLU routing gives 0..E experts per token with mean ~k at the target sparsity 1-k/E");
  for (const auto& r : c.instances("remoe")) {
    std::string s = r + ": sparsity last step " +
                    fmt("%.4f", c.fig(r, "sparsity", (f.steps_done - 1) * L, f.steps_done * L)) +
                    ", experts per token " + fmt("%.3f", c.fig(r, "mean_active_experts")) +
                    ", tokens with no expert " +
                    fmt("%.2f%%", 100.0 * c.fig(r, "zero_expert_tokens"));
    // The experts-per-token histogram, summed over the run.
    h5::Handle file(H5Fopen(f.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (file.get() >= 0 && h5::has_link(file, "/runs/" + r + "/active_experts_hist")) {
      std::vector<hsize_t> dims;
      const auto h =
          h5::read_int64(file, "/runs/" + r + "/active_experts_hist", &dims, f.steps_done);
      const size_t bins = dims.back();
      std::vector<double> sum(bins, 0.0);
      const size_t rows = std::min<size_t>(h.size() / bins, static_cast<size_t>(f.steps_done * L));
      for (size_t i = 0; i < rows * bins; ++i) sum[i % bins] += static_cast<double>(h[i]);
      const double total = std::accumulate(sum.begin(), sum.end(), 0.0);
      s += "; histogram (experts: share)";
      for (size_t n = 0; n < bins; ++n)
        if (total > 0 && sum[n] / total >= 0.01)
          s += " " + std::to_string(n) + ":" + fmt("%.1f%%", 100.0 * sum[n] / total);
    }
    c.measured(s);
  }
  if (c.instances("remoe").empty()) c.absent("remoe");
  c.note(
      "sparsity and experts per token are the router's own (before capacity), the histogram is "
      "after the run's capacity "
      "(use --capacity-factor 0 for the router alone); the replay emulates the count behaviour "
      "with ReLU(z - theta), not "
      "ReMoE training; accuracy claims are not testable by replay");

  c.claim("beta / anticipation (Wong, arXiv 2605.00604)",
          "beta+Ant raises accuracy at the domain transition from 0.006 to 0.748; ROUTERS.md §5: "
          "0.006 is argmax accuracy, the probability mass is ~0.125");
  bool any_transitions = false;
  for (const auto& r : f.routers) {
    if (!c.has_fig(r, "acc_at_transition")) continue;
    any_transitions = true;
    // Routers without a full distribution over all experts (or on reconstructed logits) have
    // among-chosen figures only: p_correct and coverage@K then cannot see unchosen experts.
    const bool full = c.has_fig(r, "p_correct_at_transition");
    const std::string p = full ? "p_correct_at_transition" : "p_correct_among_chosen_at_transition";
    const std::string cov = full ? "coverage_at_" : "coverage_among_chosen_at_";
    c.measured(r + ": transitions " +
               fmt("%.0f", c.fig(r, "transitions") * static_cast<double>(f.steps_done * L)) +
               ", acc@transition " + fmt("%.3f", c.fig(r, "acc_at_transition")) +
               (full ? ", p_correct " : ", p_correct among-chosen ") + fmt("%.3f", c.fig(r, p)) +
               (full ? ", coverage@1..4 " : ", coverage@1..4 among-chosen ") +
               fmt("%.3f", c.fig(r, cov + "1")) + " / " + fmt("%.3f", c.fig(r, cov + "2")) + " / " +
               fmt("%.3f", c.fig(r, cov + "3")) + " / " + fmt("%.3f", c.fig(r, cov + "4")));
  }
  if (!any_transitions)
    c.measured(
        "needs a labelled source (--workload domain_shift, or a trace with domain labels and a "
        "domain -> experts map) with softmax_topk, beta and beta@ahead (lookahead=true)");
  c.note(
      "acc is argmax accuracy, p_correct the softmax mass on the next domain's experts under the "
      "router's full distribution over all E experts, coverage@K a correct expert among its K "
      "highest scores: compare acc and p_correct, as §5 does; figures marked among-chosen come "
      "from routers without a full distribution (the combine-weight share among the chosen k, "
      "coverage among the first K choices); beta here is the scalar logit recurrence (no learned "
      "predictor), lookahead the oracle upper bound");

  c.claim("DeepSeek-V3 loss-free balancing",
          "the bias drives MaxVio toward 0 (0.04 vs 0.72 with an aux loss [mem]); each token "
          "reaches at most M nodes");
  for (const auto& r : c.instances("deepseek_v3")) {
    c.measured(r + ": MaxVio first step " + fmt("%.3f", c.fig(r, "max_vio", 0, L)) +
               " -> last step " +
               fmt("%.3f", c.fig(r, "max_vio", (f.steps_done - 1) * L, f.steps_done * L)) +
               ", groups (nodes) per token " + fmt("%.3f", c.fig(r, "groups_per_token_mean")) +
               c.vs_baseline(c.inter_bytes(r), c.inter_bytes(c.baseline), "inter-node bytes"));
  }
  if (c.instances("deepseek_v3").empty()) c.absent("deepseek_v3");
  c.note(
      "MaxVio falls at the speed gamma allows (V3: 0.001 per step); perplexity is not testable by "
      "replay");

  c.claim("Expert choice (Zhou et al. 2022) / BASE / Sinkhorn",
          "balanced expert loads (exactly for EC and BASE, approximately for Sinkhorn)");
  bool any_balanced = false;
  for (const char* name : {"expert_choice", "base", "sinkhorn"})
    for (const auto& r : c.instances(name)) {
      any_balanced = true;
      std::string s =
          r + ": expert max/mean load " +
          fmt("%.4f", c.mean(r, [](const StepLayerMetrics& m) { return m.expert_imbalance; }));
      if (!c.baseline.empty())
        s += " vs " +
             fmt("%.4f",
                 c.mean(c.baseline, [](const StepLayerMetrics& m) { return m.expert_imbalance; })) +
             " (" + c.baseline + ")";
      if (c.has_fig(r, "zero_expert_tokens"))
        s += ", tokens with no expert " + fmt("%.2f%%", 100.0 * c.fig(r, "zero_expert_tokens"));
      c.measured(s);
    }
  if (!any_balanced) c.absent("expert_choice,base,sinkhorn");
  c.note(
      "loads are after the run's capacity stage (use --capacity-factor 0 to see the routers "
      "alone); convergence-speed claims are not testable by replay");

  c.out << "\nNot testable by replay: perplexity, downstream accuracy, training speed and memory "
           "(the ETR, KERN, ReMoE, LapSum and EC "
           "quality claims); a replay measures routing counts, traffic and balance only.\n";
  return c.out.str();
}

std::vector<ClaimVerdict> claim_verdicts(const ResultsFile& f) {
  const Ctx c = context_of(f);
  std::vector<ClaimVerdict> v;
  const std::string& b = c.baseline;
  const int64_t L = f.layers;
  auto imbalance = [](const StepLayerMetrics& m) { return m.expert_imbalance; };
  auto active = [](const StepLayerMetrics& m) { return m.mean_active_experts; };
  auto max_tok = [](const StepLayerMetrics& m) { return m.max_tokens_per_expert; };
  for (const auto& r : c.instances("etr"))
    if (!b.empty()) {
      const double cut = 1.0 - c.max(r, max_tok) / c.max(b, max_tok);
      v.push_back({"ETR", r, "cut in max tokens per expert vs " + b, cut, cut > 0});
    }
  for (const auto& r : c.instances("lapsum"))
    if (!b.empty()) {
      const double ratio = c.mean(r, active) / c.mean(b, active);
      v.push_back({"LapSum", r, "experts per token / " + b + "'s", ratio, ratio < 1});
    }
  for (const auto& r : c.instances("kern"))
    if (!b.empty()) {
      const double extra = c.bytes(r) / c.bytes(b) - 1.0;
      v.push_back({"KERN", r, "extra dispatch bytes vs " + b + " (zero cost)", extra,
                   std::fabs(extra) < 1e-9});
    }
  double k = NAN;
  try {
    const auto cfg = flatten_json(f.config_json, f.path + ": root attribute 'config'");
    if (cfg.count("top_k")) k = std::atof(cfg.at("top_k").c_str());
  } catch (const InputError&) {  // no readable config: the ReMoE verdict cannot hold
  }
  for (const auto& r : c.instances("remoe")) {
    const double act = c.fig(r, "mean_active_experts");
    v.push_back({"ReMoE", r, "experts per token (mean ~k within 5%)", act,
                 k > 0 && std::fabs(act - k) <= 0.05 * k});
  }
  for (const auto& r : f.routers)
    if (!b.empty() && r != b && c.has_fig(r, "acc_at_transition") &&
        c.has_fig(b, "acc_at_transition")) {
      const double acc = c.fig(r, "acc_at_transition");
      v.push_back({"beta / anticipation", r, "acc@transition (above " + b + "'s)", acc,
                   acc > c.fig(b, "acc_at_transition")});
    }
  for (const auto& r : c.instances("deepseek_v3")) {
    const double change =
        c.fig(r, "max_vio", (f.steps_done - 1) * L, f.steps_done * L) - c.fig(r, "max_vio", 0, L);
    v.push_back({"DeepSeek-V3", r, "MaxVio change first -> last step (falls)", change, change < 0});
  }
  for (const char* name : {"expert_choice", "base", "sinkhorn"})
    for (const auto& r : c.instances(name))
      if (!b.empty()) {
        const double imb = c.mean(r, imbalance);
        v.push_back({"EC/BASE/Sinkhorn", r, "expert max/mean load (below " + b + "'s)", imb,
                     imb < c.mean(b, imbalance)});
      }
  return v;
}

std::string format_tail_sensitivity(const std::vector<ResultsFile>& files) {
  std::vector<const ResultsFile*> completed;
  std::set<std::string> models;
  for (const auto& f : files)
    if (f.trace_tail != "none") {
      completed.push_back(&f);
      models.insert(f.trace_tail);
    }
  if (models.size() < 2) return "";
  std::ostringstream out;
  out << "\nTail sensitivity: each claim's conclusion under every tail model (";
  for (size_t i = 0; i < completed.size(); ++i)
    out << (i ? ", " : "") << completed[i]->trace_tail << " = " << completed[i]->path;
  out << "); robust = the same conclusion under all, tail-sensitive = it depends on the model of "
         "the unrecorded logits\n";
  std::vector<std::vector<ClaimVerdict>> per_file;
  for (const auto* f : completed) per_file.push_back(claim_verdicts(*f));
  for (const auto& first : per_file.front()) {
    std::string line = "* " + first.claim + " / " + first.router + ", " + first.figure + ":";
    bool all_same = true, everywhere = true;
    for (size_t i = 0; i < per_file.size(); ++i) {
      const ClaimVerdict* match = nullptr;
      for (const auto& x : per_file[i])
        if (x.claim == first.claim && x.router == first.router) match = &x;
      if (!match) {
        everywhere = false;
        line += " " + completed[i]->trace_tail + " (absent)";
        continue;
      }
      all_same = all_same && match->holds == first.holds;
      line += " " + completed[i]->trace_tail + " " + fmt("%.4g", match->value) +
              (match->holds ? " (holds)" : " (does not hold)") + ";";
    }
    const bool tail_read = completed.front()->tail_routers.count(first.router) > 0;
    line += !everywhere  ? " not in every file"
            : !tail_read ? " robust (the router reads only the recorded top-k)"
            : all_same   ? " robust"
                         : " TAIL-SENSITIVE";
    out << line << "\n";
  }
  return out.str();
}

}  // namespace moe
