// calibrate: measures each link class of the EP group (ranks are grouped into nodes of
// --ranks-per-node consecutive ranks) and writes a topology file the sim model reads.
//  - intra: ranks paired inside each node; inter: rank r with r + ranks_per_node across node pairs.
//    All pairs of a class exchange at once (bidirectional MPI_Sendrecv), as in an all-to-all where
//    every link is busy; per size the slowest rank's mean time counts.
//  - t(bytes) = latency + bytes / bandwidth: latency = the time at the smallest size, 1/bandwidth
//    the least-squares slope of the rest through it.
//  - links = shared when both classes at once take about the sum of their separate times (one
//    machine's memory system, a PCIe switch), independent when about the max (NVLink + NIC).
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backends/mpi/bench_a2a.hpp"
#include "harness/core/error.hpp"

namespace po = boost::program_options;

namespace moe {

LinkFit fit_link(const std::vector<double>& bytes, const std::vector<double>& seconds) {
  if (bytes.size() != seconds.size() || bytes.size() < 2) throw Error("fit_link: need at least two points");
  size_t smallest = 0;
  for (size_t i = 1; i < bytes.size(); ++i)
    if (bytes[i] < bytes[smallest]) smallest = i;
  LinkFit f;
  f.latency_s = seconds[smallest];
  double num = 0, den = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    num += bytes[i] * (seconds[i] - f.latency_s);
    den += bytes[i] * bytes[i];
  }
  const double inv_bw = den > 0 ? num / den : 0;
  f.bandwidth_Bps = inv_bw > 0 ? 1.0 / inv_bw : INFINITY;
  return f;
}

namespace {

struct ClassResult {
  bool present = false;
  std::vector<double> bytes, seconds;
  LinkFit fit;
};

// Partner of `r` in class c (0 intra, 1 inter), or -1 when r sits this class out.
int partner(int r, int cls, int rpn, int nodes) {
  const int node = r / rpn, local = r % rpn;
  if (cls == 0) {
    if (local / 2 * 2 + 1 >= rpn) return -1;
    return local % 2 == 0 ? r + 1 : r - 1;
  }
  if (node / 2 * 2 + 1 >= nodes) return -1;
  return node % 2 == 0 ? r + rpn : r - rpn;
}

// Mean seconds per bidirectional exchange of `bytes` with the partners of the given classes (both
// at once when two are given); the slowest rank counts.
double measure(const Comm& world, const std::vector<int>& classes, int rpn, int nodes, int64_t bytes, int warmup, int iters,
               std::vector<char>& sbuf, std::vector<char>& rbuf) {
  const int r = world.rank();
  sbuf.resize(static_cast<size_t>(bytes) * 2);
  rbuf.resize(static_cast<size_t>(bytes) * 2);
  auto once = [&] {
    MPI_Request req[4];
    int n = 0;
    for (size_t i = 0; i < classes.size(); ++i) {
      const int p = partner(r, classes[i], rpn, nodes);
      if (p < 0) continue;
      MOE_MPI(MPI_Irecv(rbuf.data() + i * bytes, static_cast<int>(bytes), MPI_BYTE, p, 11 + classes[i], world.raw(), &req[n++]));
      MOE_MPI(MPI_Isend(sbuf.data() + i * bytes, static_cast<int>(bytes), MPI_BYTE, p, 11 + classes[i], world.raw(), &req[n++]));
    }
    MOE_MPI(MPI_Waitall(n, req, MPI_STATUSES_IGNORE));
  };
  for (int i = 0; i < warmup; ++i) once();
  world.barrier();
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) once();
  return world.max((MPI_Wtime() - t0) / iters);
}

}  // namespace

int calibrate_command(int argc, const char* const* argv, const Comm& world) {
  std::string backend = "mpi", out, minb = "8", maxb = "16M";
  int nodes = 0, rpn = 0, warmup = 3, iters = 10;
  bool force = false;
  po::options_description opts("moebench calibrate options");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("backend", po::value(&backend)->default_value(backend), "mpi")
    ("nodes", po::value(&nodes)->default_value(0), "nodes the ranks form (0: 2 when the world size is even and >= 4, else 1)")
    ("ranks-per-node", po::value(&rpn)->default_value(0), "consecutive ranks per node (0: derive)")
    ("minbytes,b", po::value(&minb)->default_value(minb), "smallest message")
    ("maxbytes,e", po::value(&maxb)->default_value(maxb), "largest message (sizes grow by 4x)")
    ("warmup_iters,w", po::value(&warmup)->default_value(warmup), "untimed iterations per size")
    ("iters,n", po::value(&iters)->default_value(iters), "timed iterations per size")
    ("out", po::value(&out), "topology INI file to write (required)")
    ("force", po::bool_switch(&force), "overwrite --out");
  // clang-format on
  po::variables_map vm;
  if (!parse_command_options("calibrate", "mpirun -np N moebench calibrate --out FILE [options]", opts, argc, argv, world, vm)) return 0;
  if (backend != "mpi") throw InputError("calibrate --backend " + backend + ": only the mpi backend is built in this version");
  if (out.empty()) throw InputError("calibrate: --out FILE is required");
  refuse_to_overwrite("--out", out, force, world);
  const int P = world.size();
  if (nodes == 0 && rpn == 0) nodes = (P % 2 == 0 && P >= 4) ? 2 : 1;
  if (nodes == 0) nodes = rpn > 0 && P % rpn == 0 ? P / rpn : 0;
  if (rpn == 0) rpn = nodes > 0 && P % nodes == 0 ? P / nodes : 0;
  if (nodes <= 0 || rpn <= 0 || nodes * rpn != P)
    throw InputError("calibrate: --nodes x --ranks-per-node must equal the world size " + std::to_string(P));
  const int64_t lo = parse_size("-b", minb), hi = parse_size("-e", maxb);
  if (iters < 1 || warmup < 0) throw InputError("calibrate: -n must be >= 1 and -w >= 0");

  std::vector<char> sbuf, rbuf;
  ClassResult res[2];
  for (int cls = 0; cls < 2; ++cls) {
    res[cls].present = cls == 0 ? rpn >= 2 : nodes >= 2;
    if (!res[cls].present) continue;
    for (int64_t b = lo; b <= hi; b *= 4) {
      res[cls].bytes.push_back(static_cast<double>(b));
      res[cls].seconds.push_back(measure(world, {cls}, rpn, nodes, b, warmup, iters, sbuf, rbuf));
    }
    res[cls].fit = fit_link(res[cls].bytes, res[cls].seconds);
  }
  std::string links = "independent";
  double t_intra = 0, t_inter = 0, t_both = 0;
  if (res[0].present && res[1].present) {
    t_intra = measure(world, {0}, rpn, nodes, hi, warmup, iters, sbuf, rbuf);
    t_inter = measure(world, {1}, rpn, nodes, hi, warmup, iters, sbuf, rbuf);
    t_both = measure(world, {0, 1}, rpn, nodes, hi, warmup, iters, sbuf, rbuf);
    if (t_both > 0.75 * (t_intra + t_inter)) links = "shared";
  }
  if (!world.root()) return 0;
  std::ostringstream ini;
  ini.precision(6);
  ini << "# Measured by `moebench calibrate` on " << P << " ranks (" << nodes << " nodes x " << rpn << ")\n";
  ini << "# t(bytes) = latency + bytes / bandwidth per class; points: bytes seconds\n";
  for (int cls = 0; cls < 2; ++cls) {
    if (!res[cls].present) {
      ini << "# " << (cls ? "inter" : "intra") << ": not measured (no such pair of ranks); the values below repeat the other class\n";
      continue;
    }
    for (size_t i = 0; i < res[cls].bytes.size(); ++i)
      ini << "# " << (cls ? "inter " : "intra ") << static_cast<long long>(res[cls].bytes[i]) << " " << res[cls].seconds[i] << "\n";
  }
  if (res[0].present && res[1].present)
    ini << "# largest size alone: intra " << t_intra << " s, inter " << t_inter << " s; both at once " << t_both << " s\n";
  const LinkFit intra = res[0].present ? res[0].fit : res[1].fit;
  const LinkFit inter = res[1].present ? res[1].fit : res[0].fit;
  ini << "name = measured\nranks_per_node = " << rpn << "\nlinks = " << links << "\n";
  ini << "[intra]\nbandwidth_GBps = " << intra.bandwidth_Bps / 1e9 << "\nlatency_us = " << intra.latency_s * 1e6 << "\n";
  ini << "[inter]\nbandwidth_Gbps = " << inter.bandwidth_Bps * 8 / 1e9 << "\nlatency_us = " << inter.latency_s * 1e6 << "\n";
  std::ofstream f(out);
  if (!f) throw InputError("--out " + out + ": cannot write the file");
  f << ini.str();
  f.close();
  std::printf("%scalibration written to %s\n", ini.str().c_str(), out.c_str());
  return 0;
}

}  // namespace moe
