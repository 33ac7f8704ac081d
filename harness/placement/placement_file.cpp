// `--placement file:PATH`: a fixed placement per layer from a JSON physical-to-logical map, the
// format SGLang's --init-expert-location reads and `moebench export placement` writes.
#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "harness/core/error.hpp"
#include "harness/placement/planner.hpp"

namespace moe {

namespace {

// Just enough JSON for the file: objects, arrays, integers (other numbers, strings, literals are
// parsed and kept as text so unknown keys do no harm).
struct Json {
  enum Kind { object, array, number, other } kind = other;
  std::map<std::string, Json> members;
  std::vector<Json> items;
  std::string text;
};

class Parser {
 public:
  Parser(const std::string& s, const std::string& path) : s_(s), path_(path) {}
  Json document() {
    Json v = value(0);
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
  [[noreturn]] void fail(const std::string& why) const {
    throw InputError("--placement file:" + path_ + ": malformed JSON at character " +
                     std::to_string(i_) + " (" + why + ")");
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  std::string string() {
    ++i_;  // opening quote
    std::string v;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return v;
      if (c == '\\') {
        if (i_ >= s_.size()) fail("unterminated escape");
        v += s_[i_++];
      } else {
        v += c;
      }
    }
  }
  Json value(int depth) {
    if (depth > 64) fail("nested too deeply");
    ws();
    if (i_ >= s_.size()) fail("expected a value");
    Json v;
    const char c = s_[i_];
    if (c == '{') {
      v.kind = Json::object;
      ++i_;
      ws();
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
      while (true) {
        ws();
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a key");
        const std::string key = string();
        ws();
        if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
        ++i_;
        v.members[key] = value(depth + 1);
        ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::array;
      ++i_;
      ws();
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
      while (true) {
        v.items.push_back(value(depth + 1));
        ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.text = string();
      return v;
    }
    const size_t start = i_;
    while (i_ < s_.size() && !std::strchr(",]} \t\r\n", s_[i_])) ++i_;
    if (i_ == start) fail("expected a value");
    v.text = s_.substr(start, i_ - start);
    v.kind = std::isdigit(static_cast<unsigned char>(v.text[0])) || v.text[0] == '-' ? Json::number
                                                                                     : Json::other;
    return v;
  }
};

bool as_int(const Json& v, int64_t& out) {
  if (v.kind != Json::number) return false;
  size_t used = 0;
  try {
    out = std::stoll(v.text, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == v.text.size();
}

}  // namespace

std::vector<Placement> read_placement_file(const std::string& path, int32_t E, int32_t R,
                                           int32_t layers) {
  const std::string what = "--placement file:" + path;
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".pt") == 0)
    throw InputError(what +
                     ": .pt (torch.save) files are not read; save the map as JSON, "
                     "{\"physical_to_logical_map\": "
                     "[[...], ...]} (e.g. json.dump({'physical_to_logical_map': m.tolist()}, f))");
  std::ifstream in(path);
  if (!in) throw InputError(what + ": cannot open file");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  const Json doc = Parser(text, path).document();
  if (doc.kind != Json::object)
    throw InputError(what + ": expected a JSON object with the key physical_to_logical_map");
  const auto it = doc.members.find("physical_to_logical_map");
  if (it == doc.members.end()) {
    if (doc.members.count("logical_count"))
      throw InputError(
          what +
          ": holds logical_count (expert loads), not a placement; moebench places from loads with "
          "--placement eplb --placement-loads file:RESULTS_OR_TRACE.h5");
    throw InputError(what + ": no key physical_to_logical_map");
  }
  for (const auto& [key, expected] :
       {std::pair<const char*, int64_t>{"ep_size", R}, {"experts", E}}) {
    const auto k = doc.members.find(key);
    int64_t v = 0;
    if (k != doc.members.end() && (!as_int(k->second, v) || v != expected))
      throw InputError(what + ": " + key + " = " + k->second.text + ", but this run has " +
                       std::to_string(expected));
  }
  const Json& map = it->second;
  if (map.kind != Json::array || map.items.empty())
    throw InputError(
        what + ": physical_to_logical_map must be a non-empty [layers][physical experts] array");
  const int64_t file_layers = static_cast<int64_t>(map.items.size());
  if (file_layers != layers && file_layers != 1)
    throw InputError(what + ": physical_to_logical_map has " + std::to_string(file_layers) +
                     " layers, the run has " + std::to_string(layers) +
                     " (or give one row for every layer)");
  std::vector<Placement> out;
  for (int64_t l = 0; l < file_layers; ++l) {
    const Json& row = map.items[static_cast<size_t>(l)];
    const std::string where = what + ": physical_to_logical_map[" + std::to_string(l) + "]";
    if (row.kind != Json::array) throw InputError(where + ": expected an array of expert ids");
    const int64_t n = static_cast<int64_t>(row.items.size());
    if (n == 0 || n % R != 0)
      throw InputError(where + ": " + std::to_string(n) +
                       " physical slots, not a positive multiple of the " + std::to_string(R) +
                       " EP ranks");
    Placement p;
    p.slots_per_rank = static_cast<int32_t>(n / R);
    std::vector<int32_t> copies(static_cast<size_t>(E), 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t e = 0;
      if (!as_int(row.items[static_cast<size_t>(i)], e) || e < -1 || e >= E)
        throw InputError(where + "[" + std::to_string(i) + "]: '" +
                         row.items[static_cast<size_t>(i)].text + "' is not an expert id in [0, " +
                         std::to_string(E) + ") (or -1 for an empty slot)");
      p.expert_of_slot.push_back(static_cast<int32_t>(e));
      if (e >= 0) ++copies[static_cast<size_t>(e)];
    }
    for (int32_t e = 0; e < E; ++e)
      if (copies[static_cast<size_t>(e)] == 0)
        throw InputError(where + ": expert " + std::to_string(e) + " has no slot");
    p.index(E);
    out.push_back(std::move(p));
  }
  while (static_cast<int32_t>(out.size()) < layers) out.push_back(out.front());
  return out;
}

}  // namespace moe
