// libFuzzer target for the INI parsers: the input is read as a `moebench run --config` file and as
// a `--topology` file (resolve_and_validate; the component checks are stubbed in
// stub_known_names.cpp, so only the parsing and validation of this file run).
#include <filesystem>

#include "harness/config/run_config.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in = fuzz::write_input(data, size, ".ini");
  fuzz::expect_clean([&] {
    const char* argv[] = {"run", "--config", in.c_str()};
    moe::RunConfig c = moe::parse_run_config(3, argv);
    c.topology_file = in;
    (void)moe::resolve_and_validate(c, 1);
  });
  fuzz::expect_clean([&] {
    const char* argv[] = {"run", "--topology", in.c_str()};
    moe::RunConfig c = moe::parse_run_config(3, argv);
    (void)moe::resolve_and_validate(c, 2);
  });
  std::error_code ec;
  std::filesystem::remove(in, ec);
  return 0;
}
