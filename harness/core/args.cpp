#include "harness/core/args.hpp"

#include <charconv>
#include <cmath>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/registry.hpp"

namespace moe {

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

ComponentArgs::ComponentArgs(std::string kind, std::string owner, std::map<std::string, std::string> values)
    : kind_(std::move(kind)), owner_(std::move(owner)), values_(std::move(values)) {}

std::string ComponentArgs::label(const std::string& key) const { return kind_ + " " + owner_ + "." + key; }

double ComponentArgs::get_double(const std::string& key, double fallback) {
  known_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  double v = 0;
  const auto& s = it->second;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v))
    throw InputError(label(key) + ": '" + s + "' is not a finite number");
  return v;
}

int64_t ComponentArgs::get_int(const std::string& key, int64_t fallback) {
  known_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  int64_t v = 0;
  const auto& s = it->second;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) throw InputError(label(key) + ": '" + s + "' is not an integer");
  return v;
}

bool ComponentArgs::get_bool(const std::string& key, bool fallback) {
  known_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  const auto& s = it->second;
  if (s == "true" || s == "1" || s == "on" || s == "yes") return true;
  if (s == "false" || s == "0" || s == "off" || s == "no") return false;
  throw InputError(label(key) + ": '" + s + "' is not a boolean (true/false)");
}

std::string ComponentArgs::get_string(const std::string& key, const std::string& fallback) {
  known_.insert(key);
  auto it = values_.find(key);
  return it == values_.end() ? fallback : it->second;
}

void ComponentArgs::reject_unknown() const {
  for (const auto& [key, value] : values_) {
    if (known_.count(key)) continue;
    std::vector<std::string> known(known_.begin(), known_.end());
    throw InputError("unknown " + label(key) + "=" + value +
                     (known.empty() ? std::string(" (it takes no args)") : " (known: " + join(known) + ")"));
  }
}

}  // namespace moe
