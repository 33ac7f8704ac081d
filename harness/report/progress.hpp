#pragma once
#include <chrono>
#include <string>

namespace moe {

// Rank 0's progress display: a redrawn bar on a terminal, a line every ~10% (at most one per
// second) otherwise. Construct with enabled=false on other ranks.
class Progress {
 public:
  Progress(std::string mode, int64_t total, bool enabled);
  void update(int64_t done, const std::string& label);
  void done();

 private:
  bool bar_ = false;
  bool enabled_ = false;
  int64_t total_ = 1;
  int64_t last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_line_;
};

}  // namespace moe
