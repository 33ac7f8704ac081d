// bench-a2a: an nccl-tests-style all-to-all sweep (-b -e -f -w -n), uniform or Zipf-skewed sizes,
// timing the harness's exchange path (TokenExchanger, the code `run --backend mpi` uses) beside a
// bare MPI_Alltoall(v) loop on the same buffers, interleaved round by round (alternating which goes
// first) so both see the same machine state. size = bytes each rank sends in one all-to-all
// (nccl-tests' convention); algbw = size / time, busbw = algbw * (P-1)/P. Data are checked after
// timing (#wrong).
#include "backends/mpi/bench_a2a.hpp"

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "backends/mpi/alltoall.hpp"
#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"

namespace po = boost::program_options;

namespace moe {

int64_t parse_size(const std::string& option, const std::string& text) {
  if (text.empty()) throw InputError(option + ": empty size");
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw InputError(option + ": '" + text + "' is not a size (e.g. 4096, 1K, 64M, 1G)");
  }
  const std::string unit = text.substr(used);
  double mult = 1;
  if (unit == "K" || unit == "k")
    mult = 1024.0;
  else if (unit == "M")
    mult = 1024.0 * 1024;
  else if (unit == "G")
    mult = 1024.0 * 1024 * 1024;
  else if (!unit.empty())
    throw InputError(option + ": '" + text + "' has an unknown unit (K, M or G)");
  if (!(v > 0)) throw InputError(option + ": '" + text + "' must be > 0");
  return static_cast<int64_t>(v * mult);
}

bool parse_command_options(const char* command, const char* usage,
                           const po::options_description& opts, int argc, const char* const* argv,
                           const Comm& world, po::variables_map& vm) {
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& err) {
    throw InputError(std::string(command) + ": " + err.what());
  }
  if (!vm.count("help")) return true;
  if (world.root()) {
    std::ostringstream os;
    os << opts;
    std::printf("usage: %s\n%s", usage, os.str().c_str());
  }
  return false;
}

namespace {

// `warmup` untimed calls of each, then `rounds` rounds of `iters` timed calls of each (the harness
// exchange and the bare MPI call), alternating which goes first; each loop starts after a barrier.
// Returns this process's mean seconds per call of {harness, bare}.
template <class H, class B>
std::pair<double, double> time_alternating(const Comm& world, int warmup, int rounds, int iters,
                                           H&& harness, B&& bare) {
  for (int i = 0; i < warmup; ++i) {
    harness();
    bare();
  }
  auto time_loop = [&](auto&& once) {
    world.barrier();
    const double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i) once();
    return MPI_Wtime() - t0;
  };
  double t_h = 0, t_b = 0;
  for (int round = 0; round < rounds; ++round) {
    if (round % 2 == 0) {
      t_h += time_loop(harness);
      t_b += time_loop(bare);
    } else {
      t_b += time_loop(bare);
      t_h += time_loop(harness);
    }
  }
  const double calls = static_cast<double>(rounds) * iters;
  return {t_h / calls, t_b / calls};
}

constexpr int64_t kElem = 4;  // bytes per element (float), as nccl-tests counts

uint32_t pattern(int src, int dst, int64_t i) {
  return static_cast<uint32_t>(src * 2654435761u ^ dst * 40503u ^
                               static_cast<uint32_t>(i) * 2246822519u);
}

struct Row {
  int64_t size_bytes, count;
  double time_s, algbw_GBps, busbw_GBps, bare_time_s;
  int64_t wrong;
};

// Replays one rank x rank byte matrix (--matrix): every rank sends matrix[rank][d] bytes to d,
// timed like one size of the sweep (warm-up, alternating harness/bare rounds), then checked byte by
// byte.
int bench_matrix(const std::string& path, const Comm& world, const std::string& algo, int warmup,
                 int iters, int rounds, const std::string& out) {
  const auto m = read_transfer_matrix(path);
  const int P = world.size(), r = world.rank();
  if (static_cast<int>(m.size()) != P)
    throw InputError("bench-a2a --matrix " + path + ": " + std::to_string(m.size()) +
                     " rows (senders) but " + std::to_string(P) +
                     " ranks; run it with mpirun -np " + std::to_string(m.size()));
  constexpr int64_t kIntMax = 2147483647;
  int64_t total = 0, nonself = 0, max_send = 0;
  for (int s = 0; s < P; ++s) {
    int64_t row = 0, col = 0;
    for (int d = 0; d < P; ++d) {
      row += m[s][d];
      col += m[d][s];
      total += m[s][d];
      nonself += s == d ? 0 : m[s][d];
    }
    max_send = std::max(max_send, row);
    if (row > kIntMax || col > kIntMax)
      throw InputError("bench-a2a --matrix " + path + ": rank " + std::to_string(s) +
                       " sends or receives more than 2^31-1 bytes in one exchange");
  }
  Topology topo;
  topo.nodes = (algo == "hierarchical" && P % 2 == 0 && P > 2) ? P / 2 : 1;
  topo.ranks_per_node = P / topo.nodes;
  TokenExchanger ex(world, topo, 1, parse_a2a_algo(algo));
  std::vector<int64_t> sc(m[static_cast<size_t>(r)].begin(), m[static_cast<size_t>(r)].end()),
      rc(static_cast<size_t>(P));
  for (int s = 0; s < P; ++s)
    rc[static_cast<size_t>(s)] = m[static_cast<size_t>(s)][static_cast<size_t>(r)];
  const auto sl = wire::make_layout(sc, 1), rl = wire::make_layout(rc, 1);
  auto byte_of = [](int src, int dst, int64_t i) {
    return static_cast<uint8_t>(pattern(src, dst, i) >> 24);
  };
  std::vector<uint8_t> send(static_cast<size_t>(std::max<int64_t>(1, sl.tokens))),
      recv(static_cast<size_t>(std::max<int64_t>(1, rl.tokens)));
  for (int d = 0; d < P; ++d)
    for (int64_t i = 0; i < sc[static_cast<size_t>(d)]; ++i)
      send[static_cast<size_t>(sl.displs[d] + i)] = byte_of(r, d, i);
  auto* sb = reinterpret_cast<std::byte*>(send.data());
  auto* rb = reinterpret_cast<std::byte*>(recv.data());
  auto harness = [&] { ex.exchange(sb, sl, rb, rl); };
  auto bare = [&] {
    MOE_MPI(MPI_Alltoallv(send.data(), sl.counts.data(), sl.displs.data(), MPI_BYTE, recv.data(),
                          rl.counts.data(), rl.displs.data(), MPI_BYTE, world.raw()));
  };
  const auto [t_h, t_b] = time_alternating(world, warmup, rounds, iters, harness, bare);
  std::fill(recv.begin(), recv.end(), uint8_t{0});
  harness();
  int64_t wrong = 0;
  for (int s = 0; s < P; ++s)
    for (int64_t i = 0; i < rc[static_cast<size_t>(s)]; ++i)
      wrong += recv[static_cast<size_t>(rl.displs[s] + i)] != byte_of(s, r, i);
  const double time_s = world.max(t_h), bare_s = world.max(t_b);
  wrong = world.sum(wrong);
  // nccl-tests' convention for all-to-all: algbw = bytes per rank / time, busbw = algbw (P-1)/P,
  // which assumes the self share is 1/P; routed traffic has its own self share, so the figure
  // that excludes self-traffic (bytes that leave their rank / P / time) comes first.
  const double nonself_GBps = static_cast<double>(nonself) / P / time_s / 1e9;
  const double algbw = static_cast<double>(total) / P / time_s / 1e9, busbw = algbw * (P - 1) / P;
  if (world.root()) {
    std::printf(
        "# moebench bench-a2a --matrix %s: %d ranks, algo %s, %d warm-up + %d x %d timed "
        "exchanges\n",
        path.c_str(), P, algo.c_str(), warmup, rounds, iters);
    std::printf(
        "# bytes: %lld in total, %lld leave their rank (self-traffic %lld), largest sender %lld\n",
        static_cast<long long>(total), static_cast<long long>(nonself),
        static_cast<long long>(total - nonself), static_cast<long long>(max_send));
    std::printf("%14s %12s %12s %10s %10s %12s %10s %8s\n", "bytes", "time(us)", "bw(noself)",
                "algbw", "busbw", "bare(us)", "overhead", "#wrong");
    std::printf("%14lld %12.2f %12.3f %10.3f %10.3f %12.2f %9.1f%% %8lld\n",
                static_cast<long long>(total), time_s * 1e6, nonself_GBps, algbw, busbw,
                bare_s * 1e6, 100.0 * (time_s - bare_s) / bare_s, static_cast<long long>(wrong));
    std::printf(
        "# bw(noself): bytes leaving their rank / P / time; algbw, busbw: nccl-tests (all bytes / "
        "P / time, x (P-1)/P)\n");
    std::fflush(stdout);
  }
  if (!out.empty() && world.root()) {
    h5::silence_error_stack();
    const hid_t f = H5Fcreate(out.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) throw InputError("--out " + out + ": cannot create the file");
    h5::Handle file(f, H5Fclose);
    h5::write_attr(file, "format", "moebench-bench-a2a");
    h5::write_attr(file, "format_version", int64_t{1});
    h5::write_attr(file, "pattern", "matrix");
    h5::write_attr(file, "matrix_file", path);
    h5::write_attr(file, "a2a_algo", algo);
    h5::write_attr(file, "world_size", static_cast<int64_t>(P));
    auto put = [&](const char* name, double v) {
      const hsize_t n = 1;
      h5::Handle sp(h5::check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple"), H5Sclose);
      h5::Handle d(h5::check(H5Dcreate2(file, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                                        H5P_DEFAULT),
                             "H5Dcreate"),
                   H5Dclose);
      h5::check_status(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v),
                       "H5Dwrite");
    };
    put("size_bytes", static_cast<double>(total));
    put("nonself_bytes", static_cast<double>(nonself));
    put("time_s", time_s);
    put("nonself_bw_GBps", nonself_GBps);
    put("algbw_GBps", algbw);
    put("busbw_GBps", busbw);
    put("bare_time_s", bare_s);
    put("wrong", static_cast<double>(wrong));
    std::printf("# figures written to %s\n", out.c_str());
  }
  if (wrong != 0)
    throw Error("bench-a2a --matrix: " + std::to_string(wrong) + " bytes arrived wrong");
  return 0;
}

}  // namespace

std::vector<std::vector<int64_t>> read_transfer_matrix(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError("--matrix " + path + ": cannot open file");
  std::vector<std::vector<int64_t>> rows;
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::vector<int64_t> row;
    size_t i = first;
    while (i < line.size()) {
      while (i < line.size() &&
             (line[i] == ' ' || line[i] == '\t' || line[i] == ',' || line[i] == '\r'))
        ++i;
      if (i >= line.size()) break;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != ',' &&
             line[j] != '\r')
        ++j;
      const std::string cell = line.substr(i, j - i);
      size_t used = 0;
      long long v = -1;
      try {
        v = std::stoll(cell, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != cell.size() || v < 0)
        throw InputError("--matrix " + path + " line " + std::to_string(lineno) + ", column " +
                         std::to_string(row.size() + 1) + ": '" + cell +
                         "' is not a byte count (an integer >= 0)");
      row.push_back(v);
      i = j;
    }
    if (!rows.empty() && row.size() != rows.front().size())
      throw InputError("--matrix " + path + " line " + std::to_string(lineno) + ": " +
                       std::to_string(row.size()) + " values, expected " +
                       std::to_string(rows.front().size()) + " (one per receiver)");
    rows.push_back(std::move(row));
  }
  if (rows.empty())
    throw InputError("--matrix " + path + ": no rows (expected one line per sender)");
  if (rows.size() != rows.front().size())
    throw InputError("--matrix " + path + ": " + std::to_string(rows.size()) + " rows but " +
                     std::to_string(rows.front().size()) +
                     " columns; the matrix must be square (senders x receivers)");
  return rows;
}

int bench_a2a_command(int argc, const char* const* argv, const Comm& world) {
  std::string b = "1K", e = "64M", backend = "mpi", pattern_name = "uniform", algo = "alltoallv",
              out, matrix;
  double factor = 2, zipf_s = 1.0;
  int warmup = 5, iters = 20, rounds = 3;
  bool force = false;
  po::options_description opts("moebench bench-a2a options");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("backend", po::value(&backend)->default_value(backend), "mpi (the nccl backend is not built in this version)")
    ("minbytes,b", po::value(&b)->default_value(b), "smallest size: bytes each rank sends (K, M, G suffixes)")
    ("maxbytes,e", po::value(&e)->default_value(e), "largest size")
    ("stepfactor,f", po::value(&factor)->default_value(factor), "size multiplier between steps")
    ("warmup_iters,w", po::value(&warmup)->default_value(warmup), "untimed iterations per size")
    ("iters,n", po::value(&iters)->default_value(iters), "timed iterations per size and round")
    ("rounds", po::value(&rounds)->default_value(rounds), "alternating harness/bare rounds per size")
    ("pattern", po::value(&pattern_name)->default_value(pattern_name), "uniform | zipf (peer shares ~ (i+1)^-s, hot peer rotating with the source)")
    ("zipf-s", po::value(&zipf_s)->default_value(zipf_s), "Zipf exponent of the skewed pattern")
    ("a2a-algo", po::value(&algo)->default_value(algo), "alltoallv | pairwise | hierarchical (hierarchical: consecutive pairs of ranks form a node)")
    ("matrix", po::value(&matrix), "replay this rank x rank byte matrix (one line per sender, bytes per receiver; `moebench export matrix`) instead of the sweep")
    ("out", po::value(&out), "HDF5 file for the figures")
    ("force", po::bool_switch(&force), "overwrite --out");
  // clang-format on
  po::variables_map vm;
  if (!parse_command_options("bench-a2a", "mpirun -np N moebench bench-a2a [options]", opts, argc,
                             argv, world, vm))
    return 0;
  if (backend != "mpi")
    throw InputError("bench-a2a --backend " + backend +
                     ": only the mpi backend is built in this version");
  if (pattern_name != "uniform" && pattern_name != "zipf")
    throw InputError("bench-a2a --pattern: unknown value '" + pattern_name +
                     "' (known: uniform, zipf)");
  const int64_t lo = parse_size("-b", b), hi = parse_size("-e", e);
  if (hi < lo) throw InputError("bench-a2a: -e " + e + " is smaller than -b " + b);
  if (!(factor > 1)) throw InputError("bench-a2a -f: must be > 1");
  if (warmup < 0 || iters < 1 || rounds < 1)
    throw InputError("bench-a2a: -w must be >= 0, -n and --rounds >= 1");
  refuse_to_overwrite("--out", out, force, world);
  if (!matrix.empty()) {
    parse_a2a_algo(algo);
    if (warmup < 0 || iters < 1 || rounds < 1)
      throw InputError("bench-a2a: -w must be >= 0, -n and --rounds >= 1");
    return bench_matrix(matrix, world, algo, warmup, iters, rounds, out);
  }

  const int P = world.size(), r = world.rank();
  Topology topo;
  topo.nodes = (algo == "hierarchical" && P % 2 == 0 && P > 2) ? P / 2 : 1;
  topo.ranks_per_node = P / topo.nodes;
  TokenExchanger ex(world, topo, kElem, parse_a2a_algo(algo));
  MPI_Datatype elem;
  MOE_MPI(MPI_Type_contiguous(static_cast<int>(kElem), MPI_BYTE, &elem));
  MOE_MPI(MPI_Type_commit(&elem));

  if (world.root()) {
    std::printf(
        "# moebench bench-a2a: %d ranks, pattern %s, algo %s, %d warm-up + %d x %d timed "
        "iterations per size\n",
        P, pattern_name.c_str(), algo.c_str(), warmup, rounds, iters);
    std::printf(
        "# harness = the exchange path of `run --backend mpi`; bare = a plain MPI_Alltoall%s loop "
        "on the same buffers\n",
        pattern_name == "uniform" ? "" : "v");
    std::printf("%12s %12s %12s %10s %10s %12s %10s %8s\n", "size(B)", "count(el)", "time(us)",
                "algbw", "busbw", "bare(us)", "overhead", "#wrong");
  }
  std::vector<Row> rows;
  for (double size_d = static_cast<double>(lo); size_d <= static_cast<double>(hi) * 1.000001;
       size_d *= factor) {
    const int64_t size =
        static_cast<int64_t>(size_d) / (kElem * P) * (kElem * P);  // whole elements per peer
    if (size == 0) continue;
    const int64_t count = size / kElem;
    // Elements to each peer: uniform, or Zipf shares with the hot peer rotating with the source.
    auto counts_for = [&](int src) {
      std::vector<int64_t> c(P, count / P);
      if (pattern_name == "zipf") {
        double h = 0;
        for (int i = 0; i < P; ++i) h += std::pow(i + 1, -zipf_s);
        int64_t given = 0;
        for (int i = 0; i < P; ++i) {
          const int d = (src + i) % P;
          c[d] = static_cast<int64_t>(
              std::floor(static_cast<double>(count) * std::pow(i + 1, -zipf_s) / h));
          given += c[d];
        }
        c[src] += count - given;
      }
      return c;
    };
    std::vector<int64_t> sc = counts_for(r), rc(P);
    for (int s = 0; s < P; ++s) rc[s] = counts_for(s)[r];
    const auto sl = wire::make_layout(sc, kElem), rl = wire::make_layout(rc, kElem);
    std::vector<uint32_t> send(static_cast<size_t>(sl.tokens)),
        recv(static_cast<size_t>(rl.tokens));
    for (int d = 0; d < P; ++d)
      for (int64_t i = 0; i < sc[d]; ++i)
        send[static_cast<size_t>(sl.displs[d] + i)] = pattern(r, d, i);
    auto* sb = reinterpret_cast<std::byte*>(send.data());
    auto* rb = reinterpret_cast<std::byte*>(recv.data());
    auto harness = [&] { ex.exchange(sb, sl, rb, rl); };
    auto bare = [&] {
      if (pattern_name == "uniform")
        MOE_MPI(MPI_Alltoall(send.data(), static_cast<int>(count / P), elem, recv.data(),
                             static_cast<int>(count / P), elem, world.raw()));
      else
        MOE_MPI(MPI_Alltoallv(send.data(), sl.counts.data(), sl.displs.data(), elem, recv.data(),
                              rl.counts.data(), rl.displs.data(), elem, world.raw()));
    };
    const auto [t_h, t_b] = time_alternating(world, warmup, rounds, iters, harness, bare);
    // Check the last harness exchange.
    std::fill(recv.begin(), recv.end(), 0u);
    harness();
    int64_t wrong = 0;
    for (int s = 0; s < P; ++s)
      for (int64_t i = 0; i < rc[s]; ++i)
        wrong += recv[static_cast<size_t>(rl.displs[s] + i)] != pattern(s, r, i);
    Row row;
    row.size_bytes = size;
    row.count = count;
    row.time_s = world.max(t_h);
    row.bare_time_s = world.max(t_b);
    row.wrong = world.sum(wrong);
    row.algbw_GBps = static_cast<double>(size) / row.time_s / 1e9;
    row.busbw_GBps = row.algbw_GBps * (P - 1) / P;
    rows.push_back(row);
    if (world.root()) {
      std::printf("%12lld %12lld %12.2f %10.3f %10.3f %12.2f %9.1f%% %8lld\n",
                  static_cast<long long>(size), static_cast<long long>(count), row.time_s * 1e6,
                  row.algbw_GBps, row.busbw_GBps, row.bare_time_s * 1e6,
                  100.0 * (row.time_s - row.bare_time_s) / row.bare_time_s,
                  static_cast<long long>(row.wrong));
      std::fflush(stdout);
    }
  }
  MPI_Type_free(&elem);
  int64_t wrong_total = 0;
  for (const auto& row : rows) wrong_total += row.wrong;
  if (!out.empty() && world.root()) {
    h5::silence_error_stack();
    const hid_t f = H5Fcreate(out.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) throw InputError("--out " + out + ": cannot create the file");
    h5::Handle file(f, H5Fclose);
    h5::write_attr(file, "format", "moebench-bench-a2a");
    h5::write_attr(file, "format_version", int64_t{1});
    h5::write_attr(file, "pattern", pattern_name);
    h5::write_attr(file, "a2a_algo", algo);
    h5::write_attr(file, "world_size", static_cast<int64_t>(P));
    auto put = [&](const char* name, auto get) {
      std::vector<double> v;
      for (const auto& row : rows) v.push_back(static_cast<double>(get(row)));
      const hsize_t n = v.size();
      h5::Handle s(h5::check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple"), H5Sclose);
      h5::Handle d(h5::check(H5Dcreate2(file, name, H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT,
                                        H5P_DEFAULT),
                             "H5Dcreate"),
                   H5Dclose);
      if (n)
        h5::check_status(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()),
                         "H5Dwrite");
    };
    put("size_bytes", [](const Row& x) { return x.size_bytes; });
    put("count", [](const Row& x) { return x.count; });
    put("time_s", [](const Row& x) { return x.time_s; });
    put("algbw_GBps", [](const Row& x) { return x.algbw_GBps; });
    put("busbw_GBps", [](const Row& x) { return x.busbw_GBps; });
    put("bare_time_s", [](const Row& x) { return x.bare_time_s; });
    put("wrong", [](const Row& x) { return x.wrong; });
    std::printf("# figures written to %s\n", out.c_str());
  }
  if (wrong_total != 0)
    throw Error("bench-a2a: " + std::to_string(wrong_total) + " elements arrived wrong");
  return 0;
}

}  // namespace moe
