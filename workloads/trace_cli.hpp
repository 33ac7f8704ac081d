#pragma once
#include "harness/core/comm.hpp"

namespace moe {

// `moebench trace convert|gen|info ...` (argv[0] == "trace"). Runs on rank 0 only. Returns the exit code.
int trace_command(int argc, char** argv, const Comm& world);

}  // namespace moe
