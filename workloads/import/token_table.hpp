#pragma once
// --token-table FILE.csv: per-token metadata of an import whose source has none (npy logits, csv
// expert columns): a header row naming any of the columns sequence, position, domain, token, rank,
// then one row per token in token order, rows grouped by sequence.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moe {

class TraceWriter;

struct TokenTable {
  bool has_seq = false, has_pos = false, has_dom = false, has_tok = false, has_rank = false;
  std::vector<int64_t> sequence, token;
  std::vector<int32_t> position, domain, rank;  // position: counted within the sequence if absent
  int64_t rows = 0;
  // Appends the table's rows [first, first + n) as the writer's next n tokens of `step`.
  int64_t append(TraceWriter& writer, int32_t step, int64_t first, int64_t n) const;
};

// The fields of one CSV line, split at commas, spaces and double quotes trimmed.
std::vector<std::string> split_csv_line(const std::string& line);

// Reads the whole table (a few integers per token). Throws InputError naming the file, line and
// column.
TokenTable read_token_table(const std::string& path);

}  // namespace moe
