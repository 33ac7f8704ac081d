#include "workloads/import/token_table.hpp"

#include <fstream>
#include <limits>
#include <unordered_set>

#include "harness/core/error.hpp"
#include "workloads/trace_file.hpp"

namespace moe {

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    std::string f =
        line.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!f.empty() && (f.front() == ' ' || f.front() == '"')) f.erase(f.begin());
    while (!f.empty() && (f.back() == ' ' || f.back() == '"' || f.back() == '\r')) f.pop_back();
    out.push_back(f);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

TokenTable read_token_table(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open file (--token-table)");

  std::string line;
  if (!std::getline(in, line))
    throw InputError(path + ": empty file (--token-table expects a header row)");
  const std::vector<std::string> names = split_csv_line(line);
  enum Col { kSeq, kPos, kDom, kTok, kRank };
  static const char* const kNames[] = {"sequence", "position", "domain", "token", "rank"};
  std::vector<int> col_of(names.size(), -1);
  TokenTable t;
  bool* has[] = {&t.has_seq, &t.has_pos, &t.has_dom, &t.has_tok, &t.has_rank};
  for (size_t c = 0; c < names.size(); ++c) {
    for (int k = 0; k < 5; ++k)
      if (names[c] == kNames[k]) {
        if (*has[k]) throw InputError(path + ": line 1: column '" + names[c] + "' twice");
        *has[k] = true;
        col_of[c] = k;
      }
    if (col_of[c] < 0)
      throw InputError(path + ": line 1: column '" + names[c] +
                       "' is not one of sequence, position, domain, token, rank");
  }
  int64_t n = 1;
  int64_t prev_seq = std::numeric_limits<int64_t>::min(), in_seq = 0;
  std::unordered_set<int64_t> ended;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \r") == std::string::npos) continue;
    const std::vector<std::string> f = split_csv_line(line);
    if (f.size() != names.size())
      throw InputError(path + ": line " + std::to_string(n) + ": " + std::to_string(f.size()) +
                       " fields, the header has " + std::to_string(names.size()));
    int64_t v[5] = {-1, -1, -1, -1, -1};
    for (size_t c = 0; c < f.size(); ++c) {
      size_t used = 0;
      long long x = 0;
      try {
        x = std::stoll(f[c], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (f[c].empty() || used != f[c].size())
        throw InputError(path + ": line " + std::to_string(n) + ": field " + names[c] + ": '" +
                         f[c] + "' is not an integer");
      const int k = col_of[c];
      if ((k == kPos || k == kDom || k == kRank) &&
          (x < 0 || x > std::numeric_limits<int32_t>::max()))
        throw InputError(path + ": line " + std::to_string(n) + ": field " + names[c] + ": " +
                         f[c] + " is not in [0, 2^31)");
      v[k] = x;
    }
    if (t.has_seq && v[kSeq] != prev_seq) {
      if (ended.count(v[kSeq]))
        throw InputError(path + ": line " + std::to_string(n) + ": field sequence: sequence " +
                         std::to_string(v[kSeq]) +
                         " appears again after other sequences (rows must be grouped by sequence)");
      if (prev_seq != std::numeric_limits<int64_t>::min()) ended.insert(prev_seq);
      prev_seq = v[kSeq];
      in_seq = 0;
    }
    t.sequence.push_back(v[kSeq]);
    t.position.push_back(static_cast<int32_t>(t.has_pos ? v[kPos] : in_seq));
    t.domain.push_back(static_cast<int32_t>(v[kDom]));
    t.token.push_back(v[kTok]);
    t.rank.push_back(static_cast<int32_t>(v[kRank]));
    ++in_seq;
    ++t.rows;
  }
  return t;
}

int64_t TokenTable::append(TraceWriter& writer, int32_t step, int64_t first, int64_t n) const {
  const size_t at = static_cast<size_t>(first), len = static_cast<size_t>(n);
  auto part64 = [&](const std::vector<int64_t>& x, bool has) {
    return has ? std::span<const int64_t>(x).subspan(at, len) : std::span<const int64_t>{};
  };
  auto part32 = [&](const std::vector<int32_t>& x, bool has) {
    return has ? std::span<const int32_t>(x).subspan(at, len) : std::span<const int32_t>{};
  };
  return writer.append_tokens(step, n, part64(sequence, has_seq), part32(position, true),
                              part64(token, has_tok), part32(domain, has_dom),
                              part32(rank, has_rank));
}

}  // namespace moe
