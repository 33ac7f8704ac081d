#include "analysis/convergence.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "analysis/report_cli.hpp"
#include "harness/core/error.hpp"

namespace moe {

namespace {

std::string registry_name(const std::string& instance) {
  return instance.substr(0, instance.find('@'));
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Mean over layers of a figure, per completed step.
std::vector<double> per_step(const ResultsFile& f, const std::vector<double>& v) {
  std::vector<double> out;
  for (int64_t s = 0; s < f.steps_done; ++s) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t l = 0; l < f.layers; ++l) {
      const size_t i = static_cast<size_t>(s * f.layers + l);
      if (i < v.size() && !std::isnan(v[i])) {
        sum += v[i];
        ++n;
      }
    }
    out.push_back(n ? sum / static_cast<double>(n) : NAN);
  }
  return out;
}

// First step from which every later step satisfies ok(step); -1 when the last one does not.
template <class F>
int64_t settled_from(int64_t steps, F ok) {
  int64_t first = -1;
  for (int64_t s = steps - 1; s >= 0 && ok(s); --s) first = s;
  return first;
}

std::map<std::string, std::string> config_of(const ResultsFile& f) {
  try {
    return flatten_json(f.config_json, f.path + ": root attribute 'config'");
  } catch (const InputError&) {
    return {};
  }
}

}  // namespace

std::vector<RouterConvergence> router_convergence(const ResultsFile& f) {
  std::vector<RouterConvergence> out;
  const auto cfg = config_of(f);
  const double k = cfg.count("top_k") ? std::atof(cfg.at("top_k").c_str()) : NAN;
  for (const auto& r : f.routers) {
    const std::string name = registry_name(r);
    const auto figs = f.figures.find(r);
    if (figs == f.figures.end()) continue;
    const std::string first =
        f.warmup_steps_excluded
            ? " (after the " + std::to_string(f.warmup_steps_excluded) + " excluded steps)"
            : "";
    const int64_t base = f.warmup_steps_excluded;
    if (name == "remoe" && figs->second.count("mean_active_experts") && !std::isnan(k) && k > 0) {
      const auto mode = cfg.find("router_args." + r + ".mode");
      if (mode != cfg.end() && mode->second == "quantile")
        continue;  // exact k*T every step: no state
      RouterConvergence c{
          r, "mean_active_experts", k, per_step(f, figs->second.at("mean_active_experts")), -1, ""};
      const int64_t S = static_cast<int64_t>(c.per_step.size());
      if (S == 0) continue;
      // The sign controller reaches the target and then oscillates around it by about one eta
      // step: it has settled at the first step within 5% of k or on the other side of k than the
      // step before (it crossed).
      for (int64_t s = 0; s < S && c.settled_step < 0; ++s) {
        const double d = c.per_step[s] - k;
        if (std::fabs(d) <= 0.05 * k || (s > 0 && d * (c.per_step[s - 1] - k) < 0))
          c.settled_step = s;
      }
      double after = 0, spread = 0;
      if (c.settled_step >= 0) {
        for (int64_t s = c.settled_step; s < S; ++s) after += c.per_step[s];
        after /= static_cast<double>(S - c.settled_step);
        for (int64_t s = c.settled_step; s < S; ++s)
          spread = std::max(spread, std::fabs(c.per_step[s] - k));
      }
      c.text = r + ": experts per token " + fmt("%.2f", c.per_step.front()) + " (step " +
               std::to_string(base) + ") -> " + fmt("%.2f", c.per_step.back()) +
               " (last step), target " + fmt("%g", k) + first + "; ";
      const std::string steady =
          "; after it, mean " + fmt("%.2f", after) + ", largest deviation " + fmt("%.2f", spread);
      if (c.settled_step < 0)
        c.text +=
            "NOT converged: it never came within 5% of the target nor crossed it, so its figures "
            "are of the controller's approach, "
            "not its steady state";
      else if (c.settled_step == 0)
        c.text += "converged from the first step" + steady;
      else
        c.text += "converged at step " + std::to_string(base + c.settled_step) +
                  " (within 5% of the target or across it)" + steady +
                  " (leave out the steps before with --warmup-steps " +
                  std::to_string(base + c.settled_step) + ")";
      out.push_back(std::move(c));
    } else if (name == "deepseek_v3" && figs->second.count("max_vio")) {
      RouterConvergence c{r, "max_vio", NAN, per_step(f, figs->second.at("max_vio")), -1, ""};
      const int64_t S = static_cast<int64_t>(c.per_step.size());
      if (S == 0) continue;
      const double last = c.per_step.back();
      c.settled_step = settled_from(S, [&](int64_t s) {
        return std::fabs(c.per_step[s] - last) <= std::max(0.05 * last, 0.005);
      });
      const int64_t q = S / 4;
      bool falling = false;
      if (q >= 1) {
        double late = 0, before = 0;
        for (int64_t s = S - q; s < S; ++s) late += c.per_step[s];
        for (int64_t s = S - 2 * q; s < S - q; ++s) before += c.per_step[s];
        falling = late < 0.95 * before;
      }
      c.text = r + ": MaxVio " + fmt("%.3f", c.per_step.front()) + " (step " +
               std::to_string(base) + ") -> " + fmt("%.3f", last) + " (last step)" + first + "; ";
      if (falling) {
        c.settled_step = -1;
        c.text +=
            "still falling over the last quarter of the steps: the bias had not settled (gamma "
            "sets its speed)";
      } else if (c.settled_step == 0) {
        c.text += "flat from the first step";
      } else {
        c.text += "within 5% of its last value from step " + std::to_string(base + c.settled_step) +
                  " (exclude the steps before with --warmup-steps " +
                  std::to_string(base + c.settled_step) + ")";
      }
      out.push_back(std::move(c));
    }
  }
  return out;
}

void drop_warmup_steps(ResultsFile& f, int64_t n) {
  if (n <= 0) return;
  if (n >= f.steps_done)
    throw InputError("report: --warmup-steps " + std::to_string(n) + " leaves no step of " +
                     f.path + " (" + std::to_string(f.steps_done) + " completed steps)");
  const size_t cut = static_cast<size_t>(n * f.layers);
  for (auto& [router, recs] : f.records)
    recs.erase(recs.begin(),
               recs.begin() + static_cast<std::ptrdiff_t>(std::min(cut, recs.size())));
  for (auto& [router, figs] : f.figures)
    for (auto& [name, v] : figs)
      v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(std::min(cut, v.size())));
  f.steps_done -= n;
  f.warmup_steps_excluded += n;
}

std::string compute_mismatch_warning(const ResultsFile& f) {
  if (f.routers.size() < 2) return "";
  const auto cfg = config_of(f);
  std::vector<std::pair<std::string, double>> mean;
  for (const auto& r : f.routers) {
    double a = 0, t = 0;
    for (const auto& m : f.records.at(r)) {
      a += static_cast<double>(m.demand_assignments);
      t += static_cast<double>(m.tokens);
    }
    if (t > 0) mean.emplace_back(r, a / t);
  }
  if (mean.size() < 2) return "";
  auto [lo, hi] = std::minmax_element(
      mean.begin(), mean.end(), [](const auto& x, const auto& y) { return x.second < y.second; });
  if (hi->second <= 1.10 * lo->second) return "";
  // The reference is the run's --top-k (the token-choice routers' compute); a router more than 10%
  // away from it that took its defaults was not asked to differ.
  const double k = cfg.count("top_k") ? std::atof(cfg.at("top_k").c_str()) : lo->second;
  auto explicit_args = [&](const std::string& r) {
    const std::string prefix = "router_args." + r + ".";
    for (const auto& [key, v] : cfg)
      if (key.rfind(prefix, 0) == 0) return true;
    return false;
  };
  std::string list;
  bool unasked = false;
  for (const auto& [r, v] : mean) {
    list += (list.empty() ? "" : ", ") + r + " " + fmt("%.2f", v);
    if (std::fabs(v - k) > 0.10 * k && !explicit_args(r)) unasked = true;
  }
  if (!unasked) return "";
  return "WARNING: the routers differ in mean experts per token by more than 10% (" + list +
         "): their bytes, loads and drops compare different amounts of expert compute (set the "
         "routers' knobs to match, e.g. "
         "expert_choice.c, or give them explicitly with --router-arg to silence this)";
}

std::vector<std::string> router_notes(const ResultsFile& f) {
  std::vector<std::string> notes;
  if (f.warmup_steps_excluded > 0)
    notes.push_back("steps 0-" + std::to_string(f.warmup_steps_excluded - 1) +
                    " excluded as warm-up (--warmup-steps " +
                    std::to_string(f.warmup_steps_excluded) + "): figures cover the " +
                    std::to_string(f.steps_done) + " steps after");
  const std::string w = compute_mismatch_warning(f);
  if (!w.empty()) notes.push_back(w);
  if (!f.tail_routers.empty()) {
    std::string list;
    for (const auto& r : f.routers)
      if (f.tail_routers.count(r)) list += (list.empty() ? "" : ", ") + r;
    notes.push_back("tail completed (" + f.trace_tail + "): " + list +
                    " routed on logits the trace did not record, modelled by --trace-tail " +
                    f.trace_tail + " " + f.trace_tail_params +
                    "; their figures carry the model's error (measure it: analysis/tail_error.py)");
  }
  for (const auto& c : router_convergence(f)) notes.push_back("convergence: " + c.text);
  return notes;
}

}  // namespace moe
