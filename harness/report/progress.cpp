#include "harness/report/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace moe {

Progress::Progress(std::string mode, int64_t total, bool enabled)
    : total_(total > 0 ? total : 1), start_(std::chrono::steady_clock::now()), last_line_(start_) {
  enabled_ = enabled && mode != "off";
  bar_ = mode == "bar" || (mode == "auto" && isatty(STDERR_FILENO));
}

void Progress::update(int64_t done, const std::string& label) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double frac = static_cast<double>(done) / static_cast<double>(total_);
  const double eta = done > 0 ? elapsed * (1.0 - frac) / frac : 0.0;
  if (bar_) {
    const int width = 30;
    const int filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r[%.*s%*s] %3.0f%% %s  %.1fs elapsed, ~%.1fs left ", filled,
                 "##############################", width - filled, "", 100.0 * frac, label.c_str(), elapsed, eta);
    std::fflush(stderr);
    return;
  }
  const int64_t decile = static_cast<int64_t>(frac * 10.0);
  if (decile == last_decile_ || (done != total_ && std::chrono::duration<double>(now - last_line_).count() < 1.0 && last_decile_ >= 0)) return;
  last_decile_ = decile;
  last_line_ = now;
  std::fprintf(stderr, "progress: %3.0f%% (%s) %.1fs elapsed, ~%.1fs left\n", 100.0 * frac, label.c_str(), elapsed, eta);
  std::fflush(stderr);
}

void Progress::done() {
  if (enabled_ && bar_) std::fprintf(stderr, "\n");
}

}  // namespace moe
