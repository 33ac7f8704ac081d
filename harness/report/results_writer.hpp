#pragma once
#include <string>
#include <vector>

#include "harness/core/comm.hpp"
#include "harness/core/types.hpp"
#include "harness/metrics/metrics.hpp"
#include "harness/report/h5.hpp"

namespace moe {

struct ResultsFileInfo {
  std::string path;
  bool force = false;
  std::string config_json;
  std::string command_line;
  std::string topology_json;
  std::string workload_source;  // what the tokens came from (synthetic workload or trace, and how)
  std::string count_sources;    // count-only traces: the source-rank attribution ("" otherwise)
  std::vector<std::string> routers;
  // --trace-tail: the model ("none" when no tail was completed), its parameters and seed (JSON),
  // and per router whether its routing read the completed logits (/runs/<router> tail_completed).
  std::string trace_tail = "none", trace_tail_params;
  std::vector<int> tail_used;
  std::vector<std::vector<std::string>> figure_names;  // [router]: /runs/<router>/figures/<name>
  std::vector<std::string> hosts;                      // one per process
  int32_t steps = 0, layers = 0, experts = 0;
  Topology topology;
  Placement placement;
  bool save_dispatch_matrix = true;
  bool measured = false;  // a real backend: per-rank times and integrity counts
  // Per router (empty: none): [L] balancedness of the placement on the loads it was made from
  // (--placement-loads file:), written as /runs/<router>/train_gpu_balancedness.
  std::vector<std::vector<double>> train_balancedness;
  int32_t first_rank = 0;  // EP ranks [first_rank, first_rank + num_ranks) are this process's rows
  int32_t num_ranks = 0;
  // --resume: the steps already in the file at `path` (which then is opened, not created; its
  // datasets must be those this info would create). -1: a new file.
  int32_t resume_steps_done = -1;
  std::string resume_note;  // appended to the `resumed` attribute
};

// The HDF5 results file, written with parallel HDF5 by every process of `world`. All members are
// collective. The file says status=partial until finish(); every write_step() extends the datasets
// by one step, writes, flushes and bumps steps_done, so a run that dies leaves a readable file.
class ResultsWriter {
 public:
  ResultsWriter(const ResultsFileInfo& info,
                const Comm& world);  // refuses to overwrite without force
  ~ResultsWriter();
  // records[router][layer] (identical on every process); matrices[router][layer] the group's
  // dispatch matrices, of which each process writes its own rows (ignored when not saved).
  // `state`: this process's checkpoint blob after the step (harness/report/checkpoint.hpp).
  void write_step(int32_t step, const std::vector<std::vector<StepLayerMetrics>>& records,
                  const std::vector<std::vector<TrafficMatrix>>& matrices,
                  const std::vector<char>* state = nullptr);
  // status: complete when every planned step is in, else partial; "interrupted" (a signal) wins.
  void finish(const std::string& status = "");
  hid_t file() const {
    return file_;
  }  // --resume: harness/driver/resume.cpp copies a partial file into a new one
  void close() { file_.reset(); }

 private:
  void create_datasets();
  void open_for_resume();
  ResultsFileInfo info_;
  Comm world_;  // by value: a Comm is a handle, and callers pass temporaries
  h5::Handle file_;
  h5::Handle dxpl_;
  int32_t steps_done_ = 0;
};

}  // namespace moe
