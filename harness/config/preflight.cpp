#include "harness/config/preflight.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness/core/error.hpp"

namespace moe {

namespace {

// The node's available memory (MemAvailable), bytes; 0 when unknown.
double available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return 0;
}

constexpr int64_t kChunkTokens = int64_t{1} << 18;  // RunOptions::chunk_tokens

}  // namespace

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (b >= 1024 && u < 6) b /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

double parse_memory_size(const std::string& option, const std::string& value) {
  if (value == "auto") return -1;
  const char* s = value.c_str();
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  double mult = 1;
  const std::string suffix = end ? std::string(end) : "";
  if (suffix == "" || suffix == "B")
    mult = 1;
  else if (suffix == "K" || suffix == "KiB")
    mult = 1024.0;
  else if (suffix == "M" || suffix == "MiB")
    mult = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "GiB")
    mult = 1024.0 * 1024 * 1024;
  else if (suffix == "T" || suffix == "TiB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    end = nullptr;
  if (end == s || end == nullptr || !std::isfinite(v) || v < 0)
    throw InputError(
        option + " '" + value +
        "': expected a size such as 64G, 512M or 1000000 (bytes), auto, or 0 for no check");
  return v * mult;
}

bool router_chunkable_by_name(const std::string& name) {
  return name == "softmax_topk" || name == "sigmoid_topk" || name == "recorded" ||
         name == "deepseek_v3";
}

MemoryEstimate estimate_memory(const RunConfig& c, int world_size) {
  MemoryEstimate m;
  const double E = c.experts, L = c.layers, k = c.top_k, R = std::max(1, c.ep_size);
  const double NR = static_cast<double>(c.routers.size());
  const double ranks_here = R / std::max(1, world_size);
  const double tpr =
      c.workload == "trace" ? 0.0 : static_cast<double>(c.tokens_per_rank);  // a trace sets its own
  const double T = tpr * ranks_here;  // tokens this process routes per step and layer
  bool chunkable =
      c.route_on == "cpu" && c.workload != "domain_shift";  // labelled workloads route whole
  bool logits = false;
  for (const auto& r : c.routers) {
    const std::string name = r.substr(0, r.find('@'));
    chunkable = chunkable && router_chunkable_by_name(name);
    logits = logits || name != "recorded";
  }
  const double chunk_tokens =
      std::max(static_cast<double>(kChunkTokens) / std::max(tpr, 1.0), 1.0) * tpr;
  m.chunked = chunkable && chunk_tokens < T;
  const double Tc = m.chunked ? std::floor(chunk_tokens) : T;  // tokens generated at a time
  // The batch (logits float32 + per-token ids), and each router's scratch of about one score per
  // token and expert (kept between calls).
  m.logits = Tc * ((logits ? E * 4 : k * 8) + 32);
  m.router_scratch =
      NR * Tc * E * 2;  // measured peaks: about half a float per token and expert per router
  // Plans (expert int32 + weight float per assignment, offsets), capacity flags, and the kept plans
  // of every router when chunked.
  const double plan = T * (k * 9 + 8);
  m.plans = (m.chunked ? NR * plan : 2 * plan) + T * k * 2;
  // Per router: state [L][E] (bias, counts, loads), placements (slots ~ E + redundant), records.
  const double slots = E + c.redundant_experts;
  m.state = NR * L * (E * 40 + 2 * (slots * 8 + E * 12) + (3 * E + R + slots) * 8);
  // Dispatch matrices (tokens and bytes, int64 [R][R]): per layer when saved, plus the combine.
  const double mats = c.save_dispatch_matrix() ? L : 1;
  m.matrices = NR * mats * R * R * 16 + 3 * R * R * 16;
  m.total = m.logits + m.router_scratch + m.plans + m.state + m.matrices +
            64.0 * 1024 * 1024;  // + the program
  return m;
}

double estimate_results_bytes(const RunConfig& c) {
  const double E = c.experts, L = c.layers, R = std::max(1, c.ep_size),
               nodes = std::max(1, c.nodes);
  const double slots = E + c.redundant_experts;
  double per_step = 0;
  per_step += 60 * L * 8;  // scalar fields and figures
  per_step += L * (3 * E + 1 + R + nodes + slots) *
              8;  // demand, load, histogram, rank/node receives, slots
  if (c.save_dispatch_matrix()) per_step += L * R * R * 8;
  if (c.backend != "sim") per_step += 6 * L * R * 8;
  return static_cast<double>(c.routers.size()) * per_step * c.steps + 1024.0 * 1024;
}

std::string preflight_check(const RunConfig& c, int world_size, const PreflightLimits& lim) {
  if (lim.memory_bytes > 0) {
    const MemoryEstimate m = estimate_memory(c, world_size);
    if (m.total > lim.memory_bytes) {
      std::ostringstream os;
      os << "preflight: this run needs about " << human_bytes(m.total)
         << " per process (batch/logits " << human_bytes(m.logits) << ", router scratch "
         << human_bytes(m.router_scratch) << ", plans " << human_bytes(m.plans)
         << ", per-router state " << human_bytes(m.state) << ", matrices "
         << human_bytes(m.matrices) << (m.chunked ? "; chunked" : "") << "), more than "
         << human_bytes(lim.memory_bytes) << " (" << lim.memory_source
         << "): use fewer --tokens-per-rank, more processes";
      if (!m.chunked)
        os << ", only chunked routers (softmax_topk, sigmoid_topk, deepseek_v3, recorded)";
      os << ", fewer --experts/--layers/--routers, --dispatch-matrix off, or raise --max-memory";
      return os.str();
    }
  }
  if (lim.disk_free_bytes >= 0 && !c.out.empty()) {
    const double need = estimate_results_bytes(c);
    if (need > lim.disk_free_bytes)
      return "preflight: --out " + c.out + ": the results file needs about " + human_bytes(need) +
             ", and its file system has " + human_bytes(lim.disk_free_bytes) +
             " free: write it elsewhere, or use fewer --steps/--layers, --dispatch-matrix off";
  }
  return "";
}

PreflightLimits preflight_limits(const RunConfig& c, const Comm& world) {
  PreflightLimits lim;
  const double given = parse_memory_size("--max-memory", c.max_memory);  // the same on every rank
  if (given >= 0) {
    lim.memory_bytes = given;
    lim.memory_source = "--max-memory " + c.max_memory;
  } else {
    MPI_Comm node;
    MOE_MPI(
        MPI_Comm_split_type(world.raw(), MPI_COMM_TYPE_SHARED, world.rank(), MPI_INFO_NULL, &node));
    int on_node = 1;
    MPI_Comm_size(node, &on_node);
    MPI_Comm_free(&node);
    const double avail = available_memory();
    const double mine = avail > 0 ? avail / on_node : 0;
    // The smallest share over the nodes (0 on a node that cannot tell: no check there).
    lim.memory_bytes = -world.max(-mine);
    lim.memory_source =
        "the available memory of a node shared by its processes; --max-memory sets it";
  }
  double free_bytes = -1;
  if (world.root() && !c.out.empty()) {
    std::error_code ec;
    std::filesystem::path dir = std::filesystem::path(c.out).parent_path();
    if (dir.empty()) dir = ".";
    const auto sp = std::filesystem::space(dir, ec);
    if (!ec) {
      free_bytes = static_cast<double>(sp.available);
      if (std::filesystem::exists(c.out, ec) && (c.force || c.resume))  // its space comes back
        free_bytes += static_cast<double>(std::filesystem::file_size(c.out, ec));
    }
  }
  lim.disk_free_bytes = world.max(world.root() ? free_bytes : -1e300);
  return lim;
}

}  // namespace moe
