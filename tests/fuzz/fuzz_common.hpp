#pragma once
// Shared by the libFuzzer targets: each input is written to a file (the importers and parsers read
// files), the code under test runs, and moebench's own errors (InputError, Error: a clean one-line
// refusal) count as success. Anything else (a crash, a sanitizer report, a leak, another
// exception escaping) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "harness/core/error.hpp"

namespace fuzz {

inline std::string temp_path(const char* suffix) {
  return (std::filesystem::temp_directory_path() /
          ("moebench-fuzz-" + std::to_string(getpid()) + suffix))
      .string();
}

inline std::string write_input(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = temp_path(suffix);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const moe::Error&) {
    // a clean refusal
  }
}

}  // namespace fuzz
