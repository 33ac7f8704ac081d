#pragma once
#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "harness/core/comm.hpp"

namespace moe {

// `moebench bench-a2a`: an nccl-tests-style sweep of the all-to-all. Collective over `world`.
// Returns the exit code.
int bench_a2a_command(int argc, const char* const* argv, const Comm& world);

// `moebench calibrate`: measures latency and bandwidth per link class and writes a topology file
// the sim model reads. Collective over `world`. Returns the exit code.
int calibrate_command(int argc, const char* const* argv, const Comm& world);

// Parses a subcommand's options (argv[0] is the subcommand). Returns false when --help was asked
// (rank 0 printed the usage and the options). Throws InputError for bad syntax.
bool parse_command_options(const char* command, const char* usage,
                           const boost::program_options::options_description& opts, int argc,
                           const char* const* argv, const Comm& world,
                           boost::program_options::variables_map& vm);

// A transfer matrix as `moebench export matrix` writes it and alltoallv tools read it: one line
// per sender, byte counts per receiver separated by spaces, tabs or commas; blank and '#' lines
// skipped. Throws InputError naming the file, line and column for anything else or a non-square
// matrix.
std::vector<std::vector<int64_t>> read_transfer_matrix(const std::string& path);

// "1K" -> 1024, "64M", "1G", "4096". Throws InputError naming the option.
int64_t parse_size(const std::string& option, const std::string& text);

// Least-squares fit of t = alpha + bytes / bandwidth over (bytes, seconds) points.
struct LinkFit {
  double latency_s = 0;
  double bandwidth_Bps = 0;
};
LinkFit fit_link(const std::vector<double>& bytes, const std::vector<double>& seconds);

}  // namespace moe
