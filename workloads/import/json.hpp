#pragma once
// A small JSON reader for the JSON-lines importers: one value per line, errors name the column.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::json {

struct Value {
  enum class Type { null, boolean, number, string, array, object };
  Type type = Type::null;
  bool boolean = false;
  double number = 0;
  std::string text;          // string, or a number's spelling
  std::vector<Value> items;  // array
  struct Member;
  std::vector<Member> members;  // object, in order (a vector of an incomplete type: C++17)

  // Member by dotted path ("meta.layer"); nullptr when absent.
  const Value* find(std::string_view path) const;
  bool is_number() const { return type == Type::number; }
  bool is_array() const { return type == Type::array; }
  // The value as text for filters: strings as is, numbers as spelled, true/false/null.
  std::string as_text() const;
};
struct Value::Member {  // not std::pair: a pair of an incomplete Value does not compile with clang
                        // + libstdc++
  std::string first;
  Value second;
  Member(std::string k, Value v) : first(std::move(k)), second(std::move(v)) {}
};

// Parses one JSON document; throws std::runtime_error("column N: ...") on malformed input.
Value parse(std::string_view text);

}  // namespace moe::json
