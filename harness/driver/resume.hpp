#pragma once
// `moebench run --resume`: continue a partial results file from its last complete step, and stop
// cleanly on SIGTERM/SIGINT (finish the step, flush, status = interrupted). README.md, "When a run
// is interrupted".
#include <memory>
#include <string>
#include <vector>

#include "harness/config/run_config.hpp"
#include "harness/core/comm.hpp"
#include "harness/placement/planner.hpp"
#include "harness/report/results_writer.hpp"
#include "harness/routing/router.hpp"

namespace moe {

struct ResumePoint {
  bool resume = false;  // false: start a new file (none there, or one that holds no step)
  int32_t steps_done = 0;
  std::string status;       // of the file before this run (partial | interrupted | complete)
  std::vector<char> state;  // this process's checkpoint blob
  std::string note;         // what the run says and writes into the file's `resumed` attribute
};

// Checks cfg.out for --resume (collective; the same InputError on every rank): a moebench results
// file of this format, written with the same configuration apart from a raised --steps, by as many
// processes, with a checkpoint of its last complete step.
ResumePoint prepare_resume(const RunConfig& cfg, const Comm& world);

// The options whose values differ between two configuration JSON objects (RunConfig::to_json),
// each as "--name (file X, now Y)"; `steps` is left out. Empty: the same run.
std::vector<std::string> config_differences(const std::string& file_json,
                                            const std::string& run_json);

// Rank 0 only: rewrites the partial file `info.path` as a fresh file holding its first `steps_done`
// rows, its checkpoint and its attributes, then renames it over the old one. A process killed in a
// flush may leave metadata beyond steps_done that points past the end of the file (writes there
// fail); the rewrite keeps only what steps_done vouches for. Throws InputError when those rows
// cannot be read.
void rebuild_for_resume(const ResultsFileInfo& info, int32_t steps_done);

// One process's checkpoint: every router's state, then every planner's.
std::vector<char> pack_state(const std::vector<std::unique_ptr<Router>>& routers,
                             const std::vector<std::string>& names,
                             const std::vector<PlacementPlanner>& planners);
void unpack_state(const std::vector<char>& blob, const std::string& path,
                  const std::vector<std::unique_ptr<Router>>& routers,
                  const std::vector<std::string>& names, std::vector<PlacementPlanner>& planners);

// A results-file write that failed (disk full, file or folder removed): one clean line naming the
// file, the step and the likely cause; the file keeps `steps_done` complete steps for --resume.
[[noreturn]] void throw_write_failure(const std::string& path, int32_t steps_done,
                                      const std::exception& e);
// The file --out was removed while the run wrote it (the writes would go on into a deleted file).
void check_out_exists(const std::string& path, int32_t steps_done);

// SIGTERM and SIGINT set a flag instead of killing the process; the driver checks it (all ranks
// agree, collectively) after every step. Installed by `moebench run`.
void install_stop_handlers();
int stop_signal();  // the first signal received (0: none); local to this process

}  // namespace moe
