// moebench: run | list | report. Errors print one line and exit non-zero on every rank.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "analysis/export_cli.hpp"
#include "analysis/report_cli.hpp"
#include "backends/backend.hpp"
#include "backends/mpi/bench_a2a.hpp"
#include "harness/config/preflight.hpp"
#include "harness/config/run_config.hpp"
#include "harness/core/build_info.hpp"
#include "harness/core/error.hpp"
#include "harness/driver/driver.hpp"
#include "harness/driver/resume.hpp"
#include "harness/placement/placement.hpp"
#include "harness/routing/router.hpp"
#include "workloads/trace_cli.hpp"
#include "workloads/workload.hpp"

namespace {

constexpr const char* kUsage =
    "usage: moebench <command> [options]\n"
    "  run [options]           route a workload under each router, account traffic, model the "
    "all-to-all\n"
    "                          (mpirun -np N moebench run --help for the options)\n"
    "  list [KIND]             routers, workloads, placements, backends with one-line "
    "descriptions\n"
    "  report FILE [options]   per-router summary of a results file, from the file alone (--format "
    "md|csv|json,\n"
    "                          --baseline R, --per-layer, --per-step, --claims; A.h5 B.h5 "
    "--compare; --help)\n"
    "  export matrix|placement RESULTS.h5   the dispatch matrix of a step and layer (txt|csv, for "
    "bench-a2a --matrix\n"
    "                          and alltoallv tools), or the placement (sglang|json, for SGLang and "
    "--placement file:)\n"
    "  trace convert|gen|info   import captures (csv, jsonl, megatron, npy) into a trace, make "
    "synthetic ones, summarise\n"
    "  bench-a2a [options]     nccl-tests-style all-to-all sweep (mpi backend) beside a bare MPI "
    "loop;\n"
    "                          --matrix FILE replays an exported rank x rank byte matrix instead\n"
    "  calibrate --out FILE    measure latency/bandwidth per link class, write a topology file for "
    "the model\n"
    "  --version               version, git sha and what the build found\n";

template <class Reg>
void print_registry(const char* title, const Reg& reg) {
  std::printf("%s:\n", title);
  for (const auto& [name, entry] : reg.entries())
    std::printf("  %-16s %s\n", name.c_str(), entry.description.c_str());
}

int cmd_list(int argc, char** argv, const moe::Comm& world) {
  if (!world.root()) return 0;
  const std::string kind = argc > 2 ? argv[2] : "all";
  bool any = false;
  if (kind == "all" || kind == "routers")
    any = true, print_registry("routers", moe::RouterRegistry::instance());
  if (kind == "all" || kind == "workloads")
    any = true, print_registry("workloads", moe::WorkloadRegistry::instance());
  if (kind == "all" || kind == "placements")
    any = true, print_registry("placements", moe::PlacementRegistry::instance());
  if (kind == "all" || kind == "backends")
    any = true, print_registry("backends", moe::BackendRegistry::instance());
  if (!any)
    throw moe::InputError("list: unknown kind '" + kind +
                          "' (known: routers, workloads, placements, backends)");
  return 0;
}

int cmd_run(int argc, char** argv, const moe::Comm& world, bool& setup_phase) {
  std::string help;
  moe::RunConfig cfg = moe::parse_run_config(argc - 1, argv + 1, &help);
  if (!help.empty()) {
    if (world.root()) std::printf("usage: mpirun -np N moebench run [options]\n%s", help.c_str());
    return 0;
  }
  const moe::PreflightLimits limits = moe::preflight_limits(cfg, world);  // collective
  const auto problems = moe::resolve_and_validate(cfg, world.size(), [&](const moe::RunConfig& c) {
    return moe::preflight_check(c, world.size(), limits);
  });
  if (problems.size() == 1) {  // one line
    if (world.root())
      std::fprintf(stderr, "moebench: error: invalid configuration: %s\n", problems[0].c_str());
    return 2;
  }
  if (!problems.empty()) {
    if (world.root()) {
      std::fprintf(stderr, "moebench: error: invalid configuration (%zu problem%s):\n",
                   problems.size(), problems.size() > 1 ? "s" : "");
      for (const auto& p : problems) std::fprintf(stderr, "  - %s\n", p.c_str());
    }
    return 2;
  }
  moe::RunOptions options;
  options.on_start = [&] {
    setup_phase = false;
  };                             // before: config, component and file errors hit every rank alike
  moe::install_stop_handlers();  // SIGTERM/SIGINT: finish the step, mark the file interrupted, exit
                                 // 128 + signal
  const moe::RunOutput out = moe::run_pipeline(cfg, world, options);
  return out.stop_signal ? 128 + out.stop_signal : 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rc = 0;
  bool setup_phase = true;  // errors before the pipeline starts are deterministic on every rank
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  try {
    const moe::Comm world = moe::Comm::world();
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "run") {
      rc = cmd_run(argc, argv, world, setup_phase);
    } else if (cmd == "list") {
      rc = cmd_list(argc, argv, world);
    } else if (cmd == "bench-a2a") {
      rc = moe::bench_a2a_command(argc - 1, argv + 1, world);
    } else if (cmd == "calibrate") {
      rc = moe::calibrate_command(argc - 1, argv + 1, world);
    } else if (cmd == "trace") {
      rc = moe::trace_command(argc - 1, argv + 1, world);
    } else if (cmd == "export") {
      rc = moe::export_command(argc - 1, argv + 1, world);
    } else if (cmd == "report") {
      rc = moe::report_command(argc - 1, argv + 1, world);
    } else if (cmd == "--version" || cmd == "version") {
      if (world.root())
        std::printf("moebench %s (git %s), CUDA %s, NCCL %s\n", MOEBENCH_VERSION, MOEBENCH_GIT_SHA,
                    MOEBENCH_HAVE_CUDA ? "found" : "not found",
                    MOEBENCH_HAVE_NCCL ? "found" : "not found");
    } else if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      if (world.root()) std::printf("%s", kUsage);
    } else {
      if (world.root())
        std::fprintf(stderr, "moebench: error: unknown command '%s'\n%s", cmd.c_str(), kUsage);
      rc = 2;
    }
  } catch (const moe::InputError& e) {
    // Input errors in the setup phase happen on every rank alike: rank 0 reports, all exit cleanly.
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0 || !setup_phase) std::fprintf(stderr, "moebench: error: %s\n", e.what());
    rc = 2;
    if (!setup_phase && world_size > 1) MPI_Abort(MPI_COMM_WORLD, rc);
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "moebench: error: %s (%s)\n", e.what(), e.where().c_str());
    if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    rc = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moebench: error: %s\n", e.what());
    if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
