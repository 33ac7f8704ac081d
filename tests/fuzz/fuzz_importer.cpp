// libFuzzer target for one importer of `moebench trace convert`, chosen at compile time:
// MOEBENCH_FUZZ_FORMAT = 0 csv, 1 jsonl, 2 megatron, 3 npy. The input is the capture file.
#include <filesystem>

#include "tests/fuzz/fuzz_common.hpp"
#include "workloads/import/importers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* const kSuffix[] = {".csv", ".jsonl", ".jsonl", ".npy"};
  const std::string in = fuzz::write_input(data, size, kSuffix[MOEBENCH_FUZZ_FORMAT]);
  moe::ImportOptions o;
  o.inputs = {in};
  o.out = fuzz::temp_path(".trace.h5");
  o.force = true;
  o.created_by = "fuzz";
  fuzz::expect_clean([&] {
#if MOEBENCH_FUZZ_FORMAT == 0
    o.fields["sequence"] = "seq";
    moe::import_csv(o);
#elif MOEBENCH_FUZZ_FORMAT == 1
    o.experts = 8;
    o.fields = {{"experts", "ids"},
                {"weights", "w"},
                {"layer", "layer"},
                {"step", "step"},
                {"sequence", "seq"}};
    moe::import_jsonl(o);
#elif MOEBENCH_FUZZ_FORMAT == 2
    o.experts = 8;
    moe::import_megatron(o);
#else
    moe::import_npy(o);
#endif
  });
  std::error_code ec;
  std::filesystem::remove(o.out, ec);
  std::filesystem::remove(o.out + ".tmp", ec);
  std::filesystem::remove(in, ec);
  return 0;
}
